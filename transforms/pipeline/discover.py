"""Find landing-zone files that still need ingesting (by content hash).

Works on a local landing zone and on ``s3://`` (see :mod:`transforms.storage`).
A file is *new* when no attempt at the current :data:`spec.TRANSFORM_VERSION`
exists for its content hash; a renamed copy is the same recording. Files that
changed during the last ``settle_s`` seconds are left for a later scan.

The landing zone is untrusted (:mod:`transforms.untrusted`): a local listing never
follows a symbolic link and is bounded; each link found is a candidate of its own
(never hashed, never read) that staging refuses and logs once.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from transforms import spec
from transforms.errors import InvalidArgument
from transforms.lake import delta as lakeio
from transforms.lake import storage
from transforms.untrusted import walk


@dataclass(frozen=True)
class Candidate:
    """A file to ingest; small and JSON-serialisable (it travels as an XCom)."""

    path: str
    file_name: str
    file_id: str
    size_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def landing_files(
    *, landing: str | None = None, settle_s: float = 0.0, now: float | None = None
) -> list[storage.ObjectInfo]:
    """Settled recordings under the landing zone (local or S3), oldest first."""
    root = spec.landing_root(landing)
    found = [o for o in storage.list_files(root) if spec.is_recording_name(o.name)]
    found = storage.settled(found, settle_s=settle_s, now=now)
    return sorted(found, key=lambda o: (o.mtime, o.uri))


def landing_links(
    *, landing: str | None = None, settle_s: float = 0.0, now: float | None = None
) -> list[storage.ObjectInfo]:
    """Symbolic links in a local landing zone (an object store has none), not followed."""
    root = spec.landing_root(landing)
    if spec.is_remote(root):
        return []
    links = [storage.ObjectInfo(str(e.path), 0, e.mtime) for e in walk(root).links]
    return storage.settled(links, settle_s=settle_s, now=now)


def _attempts(lake: str | None) -> tuple[set[str], dict[str, float]]:
    """Content hashes attempted at this version, and when each path was last attempted."""
    log = lakeio.read_table(
        spec.INGEST_LOG,
        lake=lake,
        columns=["file_id", "status", "transform_version", "source_path", "started_at"],
    )
    hashes: set[str] = set()
    paths: dict[str, float] = {}
    if log is None:
        return hashes, paths
    for fid, status, version, source, started in zip(
        log["file_id"].to_pylist(),
        log["status"].to_pylist(),
        log["transform_version"].to_pylist(),
        log["source_path"].to_pylist(),
        log["started_at"].to_pylist(),
        strict=True,
    ):
        if version != spec.TRANSFORM_VERSION or status == "duplicate":
            continue
        hashes.add(fid)
        ts = started.timestamp() if isinstance(started, datetime) else 0.0
        paths[source] = max(paths.get(source, 0.0), ts)
    return hashes, paths


def new_files(
    *,
    landing: str | None = None,
    lake: str | None = None,
    settle_s: float = 0.0,
    include_attempted: bool = False,
    now: float | None = None,
) -> list[Candidate]:
    """Settled landing files whose content has no attempt at this transform version.

    A file whose bytes were already attempted (published, quarantined or
    failed) at the current :data:`spec.TRANSFORM_VERSION` is not new, whatever
    its name: a renamed copy is the same recording. ``include_attempted``
    returns those too (for a forced re-ingest). Two identical files in one
    scan are returned once.

    A file whose path was attempted *after* it was last modified is known
    without reading it again; every other file is hashed (streamed).
    """
    now = time.time() if now is None else now
    attempted, by_path = (set(), {}) if include_attempted else _attempts(lake)
    out: list[Candidate] = []
    seen: set[str] = set()
    for link in landing_links(landing=landing, settle_s=settle_s, now=now):
        # refused at staging, logged under the link's own path: listed again only if
        # the link changes
        if not (link.uri in by_path and by_path[link.uri] >= link.mtime):
            out.append(Candidate(link.uri, link.name, spec.UNREADABLE_FILE_ID, 0))
    for obj in landing_files(landing=landing, settle_s=settle_s, now=now):
        if obj.uri in by_path and by_path[obj.uri] >= obj.mtime:
            continue  # this very file, unchanged since its attempt
        file_id = storage.sha256(obj.uri)
        if file_id in attempted or file_id in seen:
            continue
        seen.add(file_id)
        out.append(Candidate(obj.uri, obj.name, file_id, obj.size))
    return out


def batches(items: list[Any], *, size: int) -> list[list[Any]]:
    """Split ``items`` into consecutive batches of at most ``size`` (``size >= 1``)."""
    if size < 1:
        raise InvalidArgument(f"batch size must be >= 1, got {size}")
    return [items[i : i + size] for i in range(0, len(items), size)]
