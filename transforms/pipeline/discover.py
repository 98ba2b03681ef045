"""Find landing-zone files that still need ingesting (by content hash and metadata).

Works on a local landing zone and on ``s3://`` (see :mod:`transforms.storage`).
A file is *new* unless :func:`transforms.pipeline.identity.decide` (the rule the
CLI and the extract task apply too) refuses it: its latest attempt at the current
:data:`spec.TRANSFORM_VERSION` had the same content and metadata digest. A renamed
copy is the same recording. Files that changed during the last ``settle_s`` seconds
are left for a later scan.

The landing zone is untrusted (:mod:`transforms.untrusted`): a local listing never
follows a symbolic link and is bounded; each link found is a candidate of its own
(never hashed, never read) that staging refuses and logs once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from transforms import spec
from transforms.errors import InvalidArgument
from transforms.lake import storage
from transforms.pipeline.identity import AttemptIndex, SmallFiles, metadata_digest
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


def new_files(
    *,
    landing: str | None = None,
    lake: str | None = None,
    settle_s: float = 0.0,
    include_attempted: bool = False,
    params_file: str | None = None,
    now: float | None = None,
    complete: Collection[str] = (),
) -> list[Candidate]:
    """Settled landing files that :func:`~transforms.pipeline.identity.decide` would ingest.

    A file is left out when its latest attempt at the current
    :data:`spec.TRANSFORM_VERSION` had the same content and metadata (sidecar, plate
    map, partition, parameter set: its ``metadata_digest``): ``published`` ones are
    duplicates, ``failed`` and ``quarantined`` ones are not retried until something
    changes. Whatever its name: a renamed copy is the same recording.
    ``include_attempted`` returns those too (for a forced re-ingest). Files of the
    same content are returned once: the one at the path of the content's latest
    attempt, else the oldest (so two copies never take turns at being published).

    A file whose path was attempted *after* it was last modified is known without
    reading it again; every other file is hashed (streamed). Its metadata digest is
    computed every time (small files: a sidecar, a plate map, a parameter set).

    ``complete`` names landing paths relative to the landing root (``lab/condition/
    timepoint/name``) known to be whole, however recent: files an upload renamed into
    place in one step (:mod:`transforms.serve.upload`). They are not held back by
    ``settle_s``; every other file still is.
    """
    now = time.time() if now is None else now
    index = AttemptIndex.load(lake=lake)
    listing = storage.list_files(spec.landing_root(landing))
    files = SmallFiles(o.uri for o in listing)  # sidecars, parameter sets: no request each
    recordings = [o for o in listing if spec.is_recording_name(o.name)]
    root = spec.landing_root(landing)
    whole = {storage.join(root, *rel.split("/")) for rel in complete}
    ready = {o.uri for o in storage.settled(recordings, settle_s=settle_s, now=now)}
    recordings = [o for o in recordings if o.uri in ready or o.uri in whole]
    by_content: dict[str, list[tuple[storage.ObjectInfo, str]]] = {}
    for obj in sorted(recordings, key=lambda o: (o.mtime, o.uri)):
        file_id = index.known_file_id(obj.uri, modified_at=obj.mtime) or storage.sha256(obj.uri)
        by_content.setdefault(file_id, []).append((obj, obj.uri))
    out: list[Candidate] = []
    for link in landing_links(landing=landing, settle_s=settle_s, now=now):
        # refused at staging, logged under the link's own path: listed again only if
        # the link changes
        if include_attempted or not index.refused_since(link.uri, modified_at=link.mtime):
            out.append(Candidate(link.uri, link.name, spec.UNREADABLE_FILE_ID, 0))
    for file_id, copies in by_content.items():
        last = index.latest.get(file_id)
        chosen = next(
            (c for c in copies if last is not None and c[1] == last.source_path), copies[0]
        )[0]
        if not include_attempted:
            digest = metadata_digest(
                chosen.uri, landing=landing, params_file=params_file, files=files
            )
            if index.verdict(file_id, digest) is not None:
                continue
        out.append(Candidate(chosen.uri, chosen.name, file_id, chosen.size))
    return out


def batches(items: list[Any], *, size: int, max_mb: float | None = None) -> list[list[Any]]:
    """Split ``items`` into as few consecutive, even batches as the limits allow.

    Parameters
    ----------
    items
        Candidates (``size_bytes`` is read from each mapping that has it; others
        count as 0 bytes).
    size
        At most this many items per batch (``size >= 1``).
    max_mb
        Also at most about this many MiB of input per batch (an item larger than that
        goes alone); None: no limit by bytes.

    Returns
    -------
    list of list
        ``ceil(len(items) / size)`` batches (or more, where the bytes demand it), of
        nearly equal counts: 30 files in batches of 25 are 15 + 15, not 25 + 5, so the
        mapped tasks of a run finish together.
    """
    if size < 1:
        raise InvalidArgument(f"batch size must be >= 1, got {size}")
    if max_mb is not None and not (math.isfinite(max_mb) and max_mb > 0):
        raise InvalidArgument(f"batch MiB must be > 0, got {max_mb}")
    if not items:
        return []
    weights = [int(it.get("size_bytes") or 0) if isinstance(it, Mapping) else 0 for it in items]
    n = math.ceil(len(items) / size)
    max_bytes = math.inf if max_mb is None else max_mb * 2**20
    if max_mb is not None:
        n = max(n, math.ceil(sum(min(w, max_bytes) for w in weights) / max_bytes))
    base, extra = divmod(len(items), n)  # counts base + 1 (``extra`` times), then base

    def quota(k: int) -> int:
        return base + 1 if k < extra or k >= n else base

    out: list[list[Any]] = [[]]
    used = 0
    for item, weight in zip(items, weights, strict=True):
        full = len(out[-1]) >= quota(len(out) - 1)
        if out[-1] and (full or used + weight > max_bytes):
            out.append([])
            used = 0
        out[-1].append(item)
        used += weight
    return out
