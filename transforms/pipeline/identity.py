"""What identifies an attempt, and the one rule for whether a file is ingested again.

An attempt at a file is identified by its content, ``file_id`` (:func:`storage.sha256
<transforms.lake.storage.sha256>` of its raw bytes, the only way a file is hashed), and by
the metadata that applied to it, ``metadata_digest`` (:func:`metadata_digest`): the SHA-256
of the partition values its landing folders and explicit values give, the bytes of its
sidecar, of the plate map it uses (plate recordings) and of the parameter set that applies
(:mod:`transforms.pipeline.paramset`). Both are logged in ``ingest_log``.

:func:`decide` is the rule, applied the same way by the CLI (:func:`~transforms.pipeline.stage.
stage_file`), the DAGs' extract task (the same function) and their planner
(:func:`~transforms.pipeline.discover.new_files`, which leaves out what it would refuse).
The latest attempt of the file's content (``published``, ``quarantined`` or ``failed``;
by ``log_seq``, from any path: a renamed copy is the same recording) is compared with
this one:

* none, another ``transform_version``, or ``force``: ingest;
* another metadata digest, or an unknown one (NULL: logged before the column existed, or
  a failure whose cause lay outside the file: the lake, the disk, the file changing while
  read): ingest. A corrected sidecar or plate map thus re-publishes the file, and a
  failed or quarantined file is retried once its content or metadata changes;
* the same digest and ``published``: ``duplicate``;
* the same digest and ``failed`` or ``quarantined``: ``not_retried`` (the reason names
  the earlier attempt and how to retry it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

import pyarrow as pa
import pyarrow.compute as pc

from transforms import spec
from transforms.errors import NeurocyteError
from transforms.lake import delta as lakeio
from transforms.lake import storage
from transforms.pipeline.paramset import landing_parts, parameter_file_for

#: Statuses of attempts that processed the file (``duplicate``/``not_retried`` did not).
DECISIVE: Final = ("published", "quarantined", "failed")
#: Kinds (by name) that may be plate recordings, which take a plate map.
_PLATE_KINDS: Final = ("spike_list", "axion_raw", "axion_spk", "nwb")


class SmallFiles:
    """Existence and SHA-256 of the small files metadata lives in, each looked up once.

    A planner scanning a landing zone passes the URIs of its listing (``listed``), so no
    file costs a request of its own on S3 (a sidecar, a lab's parameter set); hashes are
    cached for the scan (a lab's parameter set is read once, not once per recording).
    """

    def __init__(self, listed: Iterable[str] | None = None) -> None:
        self.listed = None if listed is None else set(listed)
        self._sha: dict[str, str | None] = {}

    def exists(self, uri: str) -> bool:
        return uri in self.listed if self.listed is not None else storage.exists(uri)

    def sha256(self, uri: str, *, landed: bool = True) -> str | None:
        """SHA-256 of the file's raw bytes, None if it does not exist.

        ``landed=False``: a file that need not lie in the landing zone (a parameter set
        or plate map named explicitly), looked up in the storage itself.
        """
        if uri not in self._sha:
            there = self.exists(uri) if landed else storage.exists(uri)
            self._sha[uri] = storage.sha256(uri) if there else None
        return self._sha[uri]


def metadata_inputs(
    path: str | Path,
    *,
    landing: str | None = None,
    lab: str | None = None,
    condition: str | None = None,
    timepoint: str | None = None,
    plate_map: str | Path | None = None,
    params_file: str | None = None,
    files: SmallFiles | None = None,
) -> dict[str, Any]:
    """What :func:`metadata_digest` hashes, for a local path or an ``s3://`` landing URI.

    Raw bytes are hashed (a sidecar or parameter set that does not parse has a digest
    too); names and locations are not, so a landing file and a worker's local copy of it
    (same folders below their landing roots) have the same inputs. Never raises for bad
    metadata; I/O errors propagate. ``files`` answers lookups (default: the storage).
    """
    files = files or SmallFiles()
    text = str(path)
    remote = storage.is_s3(text)
    parts = landing_parts(text, landing)
    partition: dict[str, str] = {}
    if parts is not None and len(parts) == 4:
        partition = dict(zip(spec.PARTITION_COLUMNS, parts[:3], strict=True))
    explicit = {"lab": lab, "condition": condition, "timepoint": timepoint}
    partition.update({k: v for k, v in explicit.items() if v is not None})
    name = text.rstrip("/").rsplit("/", 1)[-1]
    inputs: dict[str, Any] = {
        "partition": partition,
        "sidecar": files.sha256(text + spec.SIDECAR_SUFFIX),
    }
    found = parameter_file_for(
        text, landing=landing, lab=lab, params_file=params_file, exists=files.exists
    )
    # a named parameter set that does not exist is not "none": the file fails for it
    inputs["params"] = (
        (files.sha256(found[0], landed=not params_file) or "missing") if found else None
    )
    if spec.recording_kind(name) in _PLATE_KINDS:
        inputs["plate_map"] = _plate_map_input(text, plate_map=plate_map, remote=remote)
    return inputs


def _plate_map_input(
    path: str, *, plate_map: str | Path | None, remote: bool
) -> dict[str, str] | None:
    if plate_map:
        uri = str(plate_map)
        return {
            "name": Path(uri).name,
            "sha256": storage.sha256(uri) if storage.exists(uri) else "",
        }
    if remote:
        return None  # plate maps are found beside local files only
    from transforms.pipeline.decode_mea import find_plate_map

    try:
        found = find_plate_map(Path(path))
    except NeurocyteError as exc:  # several: the file fails with this; a new one changes it
        return {"error": str(exc)}
    return {"name": found.name, "sha256": storage.sha256(found)} if found else None


def metadata_digest(path: str | Path, **kwargs: Any) -> str:
    """SHA-256 of :func:`metadata_inputs` as canonical JSON (its keyword arguments)."""
    doc = json.dumps(metadata_inputs(path, **kwargs), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()


@dataclass(frozen=True)
class Attempt:
    """An ``ingest_log`` row, as much as the rule needs."""

    file_id: str
    ingest_id: str
    status: str
    transform_version: str
    metadata_digest: str | None
    source_path: str
    reason: str | None = None


@dataclass(frozen=True)
class Verdict:
    """A file not to ingest: ``duplicate`` or ``not_retried``, and why."""

    status: Literal["duplicate", "not_retried"]
    reason: str


def decide(last: Attempt | None, digest: str | None, *, force: bool = False) -> Verdict | None:
    """The rule (see the module docstring): None to ingest, else the verdict to log."""
    if force or last is None or last.transform_version != spec.TRANSFORM_VERSION:
        return None
    if not digest or last.metadata_digest is None or last.metadata_digest != digest:
        return None
    if last.status == "published":
        return Verdict(
            "duplicate", f"content and metadata already published (ingest {last.ingest_id})"
        )
    why = (last.reason or "").strip()
    if len(why) > 300:
        why = why[:300] + "..."
    return Verdict(
        "not_retried",
        f"unchanged since attempt {last.ingest_id} was {last.status}"
        + (f" ({why})" if why else "")
        + "; it is retried when the file, its sidecar, plate map or parameter set changes, "
        "or with --force",
    )


def _order_key(row: dict[str, Any]) -> tuple[int, float, str]:
    """:data:`~transforms.lake.delta.ATTEMPT_ORDER` as a sort key (larger: later)."""
    seq = row.get("log_seq")
    finished = row.get("finished_at")
    ts = finished.timestamp() if isinstance(finished, datetime) else 0.0
    return (-1 if seq is None else int(seq), ts, row.get("ingest_id") or "")


class AttemptIndex:
    """The latest decisive attempt of every file, from one read of ``ingest_log``.

    Also, per landing path, the content hash of its latest attempt and when that attempt
    started, so a planner need not re-hash a file unchanged since.
    """

    _COLUMNS: Final[tuple[str, ...]] = (
        "file_id",
        "ingest_id",
        "status",
        "transform_version",
        "source_path",
        "reason",
        "started_at",
        "finished_at",
        "log_seq",
        "metadata_digest",
    )

    def __init__(self, rows: Iterable[dict[str, Any]]) -> None:
        self.latest: dict[str, Attempt] = {}
        self._keys: dict[str, tuple[int, float, str]] = {}
        self.by_path: dict[str, tuple[float, str]] = {}
        #: When a path with no readable content (a refused link) was last attempted.
        self.refused_at: dict[str, float] = {}
        for row in rows:
            fid = row["file_id"]
            started = row.get("started_at")
            ts = started.timestamp() if isinstance(started, datetime) else 0.0
            if fid == spec.UNREADABLE_FILE_ID:
                path = row["source_path"]
                self.refused_at[path] = max(self.refused_at.get(path, -1.0), ts)
            if (
                fid != spec.UNREADABLE_FILE_ID
                and ts >= self.by_path.get(row["source_path"], (-1.0, ""))[0]
            ):
                self.by_path[row["source_path"]] = (ts, fid)
            if row["status"] not in DECISIVE:
                continue
            key = _order_key(row)
            if fid not in self._keys or key > self._keys[fid]:
                self._keys[fid] = key
                self.latest[fid] = Attempt(
                    file_id=fid,
                    ingest_id=row["ingest_id"],
                    status=row["status"],
                    transform_version=row["transform_version"],
                    metadata_digest=row.get("metadata_digest"),
                    source_path=row["source_path"],
                    reason=row.get("reason"),
                )

    @classmethod
    def load(cls, *, lake: str | None = None, file_id: str | None = None) -> AttemptIndex:
        """Index the log (only ``file_id``'s rows when given)."""
        present = set(lakeio.table_columns(spec.INGEST_LOG, lake=lake))
        if not present:
            return cls(())
        wanted = [c for c in cls._COLUMNS if c in present]
        log = lakeio.read_table(spec.INGEST_LOG, lake=lake, columns=wanted)
        if log is None:
            return cls(())
        if file_id is not None:
            log = log.filter(pc.equal(log["file_id"], pa.scalar(file_id, pa.string())))
        return cls(log.to_pylist())

    def verdict(self, file_id: str, digest: str | None, *, force: bool = False) -> Verdict | None:
        """:func:`decide` against the latest decisive attempt of ``file_id``."""
        return decide(self.latest.get(file_id), digest, force=force)

    def refused_since(self, source_path: str, *, modified_at: float) -> bool:
        """True if ``source_path`` (unreadable: a link) was refused after ``modified_at``."""
        return self.refused_at.get(source_path, -1.0) >= modified_at

    def known_file_id(self, source_path: str, *, modified_at: float) -> str | None:
        """The content hash of ``source_path`` if an attempt read it after ``modified_at``."""
        ts, fid = self.by_path.get(source_path, (-1.0, ""))
        return fid if fid and ts >= modified_at else None
