"""Ingest one file: hash, decode, extract features, QC-gate, commit, log.

The two halves are separate functions so the Airflow DAG can run them as two
tasks that pass only paths and ids: :func:`stage_file` (decode + features,
written as Parquet into ``<lake>/_staging/<ingest_id>/``) and
:func:`commit_staged` (GX validation, Delta append, ``ingest_log`` commit
point, pruning of superseded rows). :func:`ingest_paths` runs both for many
files and then publishes, which is what ``neurocyte ingest`` does.

Scale-out within a plate: a continuous plate (``.raw``, NWB) larger than
``split_plate_mb`` is staged as several *parts*, well groups sharing one
``ingest_id`` (:func:`split_candidates`, ``stage_file(part=k, n_parts=n)``),
each in ``<lake>/_staging/<ingest_id>/part-<k>/``, so several workers share the
plate. :func:`commit_batch` merges the parts of a file (all must be staged,
else the file is ``failed`` and nothing of it is published) and commits it as
one file: one ``published`` row, the same rows as an unsplit ingest.
"""

from __future__ import annotations

import json
import logging
import math
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from transforms import spec
from transforms.errors import InvalidArgument, NeurocyteError, SpecError
from transforms.lake import delta as lakeio
from transforms.lake import storage
from transforms.lake.storage import sha256 as sha256_file
from transforms.pipeline import allocator, qc
from transforms.pipeline.landing import Target, resolve_target

log = logging.getLogger(__name__)

Status = Literal["published", "quarantined", "failed", "duplicate", "staged"]


@dataclass
class Outcome:
    """What happened to one file; JSON-serialisable (it travels as an XCom)."""

    source_path: str
    file_name: str
    file_id: str
    ingest_id: str
    status: Status
    reason: str = ""
    started_at: str = ""
    source_format: str = ""
    partition: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    staging: str = ""
    batch_id: str = ""
    qc_pages: dict[str, str] = field(default_factory=dict)
    #: Well group ``part`` of ``n_parts`` of a split plate (None: the whole file).
    part: int | None = None
    n_parts: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> datetime:
    return datetime.now(UTC)


def staging_dir(ingest_id: str, *, lake: str | None = None) -> str:
    """``<lake>/_staging/<ingest_id>``: a local path or an ``s3://`` URI.

    Staging lives with the lake so the extract and commit tasks may run on
    different workers.
    """
    return storage.join(spec.lake_root(lake), "_staging", spec.check_id("ingest_id", ingest_id))


def recording_kind(path: Path) -> str:
    """The decoder key of a file: by name, then (NWB) by content."""
    kind = spec.recording_kind(path.name)
    if kind is None:
        raise SpecError(f"{path.name}: unsupported file type {path.suffix.lower()!r}")
    if kind == "nwb" and _is_ecephys_nwb(path):
        return "nwb_ecephys"
    return kind


def _is_ecephys_nwb(path: Path) -> bool:
    """True if the NWB file's acquisition holds an ElectricalSeries (an MEA recording)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            acq = f.get("acquisition")
            if acq is None:
                return False
            for obj in acq.values():
                kind = obj.attrs.get("neurodata_type", b"")
                kind = kind.decode() if isinstance(kind, bytes) else str(kind)
                if kind == "ElectricalSeries":
                    return True
    except OSError:
        return False  # not HDF5: the icephys reader reports it clearly
    return False


def _decode(
    path: Path,
    kind: str,
    *,
    target: Target,
    file_id: str,
    ingest_id: str,
    plate_map: Path | None,
    part: tuple[int, int] | None = None,
) -> tuple[str, dict[str, pa.Table]]:
    if kind in ("abf", "nwb"):
        from transforms.pipeline.decode_icephys import decode_icephys

        if part is not None and part[0] > 0:  # not split: part 0 carries the whole file
            return "", {}
        return decode_icephys(path, target=target, file_id=file_id, ingest_id=ingest_id)
    from transforms.pipeline.decode_mea import decode_mea

    return decode_mea(
        path,
        target=target,
        file_id=file_id,
        ingest_id=ingest_id,
        kind=kind,
        plate_map_path=plate_map,
        part=part,
    )


def _log_row(outcome: Outcome, *, finished_at: datetime) -> dict[str, Any]:
    part = outcome.partition
    return {
        "file_id": outcome.file_id,
        "ingest_id": outcome.ingest_id,
        "source_path": outcome.source_path,
        "file_name": outcome.file_name,
        "source_format": outcome.source_format or None,
        "status": outcome.status,
        "reason": outcome.reason or None,
        "lab": part.get("lab"),
        "condition": part.get("condition"),
        "timepoint": part.get("timepoint"),
        "transform_version": spec.TRANSFORM_VERSION,
        "rows_json": json.dumps(outcome.rows, sort_keys=True) if outcome.rows else None,
        "batch_id": outcome.batch_id or None,
        "qc_report": json.dumps(outcome.qc_pages, sort_keys=True) if outcome.qc_pages else None,
        "started_at": datetime.fromisoformat(outcome.started_at),
        "finished_at": finished_at,
    }


def record(outcome: Outcome | Sequence[Outcome], *, lake: str | None = None) -> None:
    """Append outcomes to ``ingest_log`` in one commit."""
    outcomes = [outcome] if isinstance(outcome, Outcome) else list(outcome)
    if not outcomes:
        return
    now = _now()
    rows = [_log_row(o, finished_at=now) for o in outcomes]
    lakeio.append_log(pa.Table.from_pylist(rows, schema=lakeio.INGEST_LOG_SCHEMA), lake=lake)


def stage_file(
    path: str | Path,
    *,
    lake: str | None = None,
    landing: str | None = None,
    lab: str | None = None,
    condition: str | None = None,
    timepoint: str | None = None,
    plate_map: str | Path | None = None,
    force: bool = False,
    source_uri: str | None = None,
    part: int | None = None,
    n_parts: int | None = None,
    ingest_id: str | None = None,
) -> Outcome:
    """Decode and extract features; stage the rows as Parquet for the gate.

    Terminal outcomes (``failed``, ``duplicate``) are recorded in
    ``ingest_log`` here; a ``staged`` outcome is recorded by
    :func:`commit_staged`. Never raises for bad input. ``source_uri`` is the
    file's landing-zone address to record when ``path`` is a local copy of it
    (an object fetched from S3).

    ``part=k, n_parts=n`` (with the ``ingest_id`` all parts share) stages only
    well group ``k`` of ``n`` of a plate, in ``<staging>/part-<k>/``; its
    outcome is never recorded here, :func:`commit_batch` records the file once
    its parts are merged.
    """
    path = Path(path)
    started = _now()
    allocator.retain_freed_memory()  # this process is an ingest worker
    if (part is None) != (n_parts is None) or (
        part is not None and n_parts is not None and not 0 <= part < n_parts
    ):
        raise InvalidArgument(f"part {part!r} of {n_parts!r}: give both, 0 <= part < n_parts")
    if part is not None and not ingest_id:
        raise InvalidArgument("the parts of a file share one ingest_id: pass it")
    outcome = Outcome(
        source_path=source_uri or (str(path.resolve()) if path.exists() else str(path)),
        file_name=path.name,
        file_id="",
        ingest_id=spec.check_id("ingest_id", ingest_id) if ingest_id else uuid.uuid4().hex,
        status="failed",
        started_at=started.isoformat(),
        part=part,
        n_parts=n_parts,
    )
    try:
        if not path.is_file():
            raise SpecError(f"{path}: no such file")
        kind = recording_kind(path)
        outcome.file_id = sha256_file(path)
        target = resolve_target(
            path,
            landing=landing,
            lab=lab,
            condition=condition,
            timepoint=timepoint,
            require_all=kind in ("abf", "nwb"),
        )
        outcome.partition = {
            k: v
            for k, v in (
                ("lab", target.lab),
                ("condition", target.condition),
                ("timepoint", target.timepoint),
            )
            if v
        }
        published = lakeio.published_ingests(lake=lake)
        previous = published.get(outcome.file_id)
        if previous and previous[1] == spec.TRANSFORM_VERSION and not force:
            outcome.status = "duplicate"
            outcome.reason = f"content already published (ingest {previous[0]})"
            if part is None:
                record(outcome, lake=lake)
            return outcome
        outcome.source_format, tables = _decode(
            path,
            kind,
            target=target,
            file_id=outcome.file_id,
            ingest_id=outcome.ingest_id,
            plate_map=Path(plate_map) if plate_map else None,
            part=(part, n_parts) if part is not None and n_parts is not None else None,
        )
        stage = staging_dir(outcome.ingest_id, lake=lake)
        if part is not None:
            stage = storage.join(stage, f"part-{part}")
        for name, rows in tables.items():
            storage.write_parquet(rows, storage.join(stage, f"{name}.parquet"))
            outcome.rows[name] = rows.num_rows
        outcome.staging = stage
        outcome.status = "staged"
        storage.write_bytes(
            storage.join(stage, "outcome.json"), json.dumps(outcome.as_dict()).encode()
        )
        return outcome
    except NeurocyteError as exc:
        outcome.reason = str(exc)
    except Exception as exc:  # a reader or feature bug must not stop the other files
        log.error(
            "unexpected error on %s (file_id=%s)\n%s", path, outcome.file_id, traceback.format_exc()
        )
        outcome.reason = f"internal error: {type(exc).__name__}: {exc}"
    if not outcome.file_id:
        outcome.file_id = "0" * 64  # unreadable file: no content hash to key on
    if part is None:
        record(outcome, lake=lake)
    return outcome


def _as_outcome(o: Outcome | dict[str, Any]) -> Outcome:
    return Outcome(**o) if isinstance(o, dict) else o


#: Where a staged file's rows are: (staging dir, rows per table) of each of its parts.
_Sources = dict[str, list[tuple[str, dict[str, int]]]]


def _merge_file(parts: list[Outcome], *, lake: str | None) -> Outcome:
    """The outcome of a split file from its parts' outcomes (``staged`` if all are).

    A missing, failed or inconsistent part fails the whole file (recorded here
    with the reason, staging removed): nothing of it is published.
    """
    first = parts[0]
    n = int(first.n_parts or 0)
    by_part: dict[int, Outcome] = {}
    for p in parts:
        if p.part is not None:
            by_part.setdefault(p.part, p)  # a retried extract may report a part twice
    ids = [p.file_id for p in by_part.values() if p.file_id and p.file_id != "0" * 64]
    whole = Outcome(
        source_path=first.source_path,
        file_name=first.file_name,
        file_id=ids[0] if ids else first.file_id or "0" * 64,
        ingest_id=first.ingest_id,
        status="staged",
        started_at=min(p.started_at for p in parts),
        source_format=next((p.source_format for p in parts if p.source_format), ""),
        partition=next((p.partition for p in parts if p.partition), {}),
        staging=staging_dir(first.ingest_id, lake=lake),
        n_parts=n,
    )
    problems: list[str] = []
    missing = [k for k in range(n) if k not in by_part]
    if missing:
        listed = ", ".join(str(k + 1) for k in missing)
        problems.append(f"well group {listed} of {n} missing (never staged)")
    if len(set(ids)) > 1:
        problems.append("its parts read different content (the file changed meanwhile)")
    others = [p for _, p in sorted(by_part.items()) if p.status != "staged"]
    if not missing and len(others) == n and all(p.status == "duplicate" for p in others):
        whole.status, whole.reason = "duplicate", others[0].reason
    else:
        for p in others:
            problems.append(f"well group {int(p.part or 0) + 1} of {n} {p.status}: {p.reason}")
        if problems:
            whole.status = "failed"
            whole.reason = f"{first.file_name}: split plate not committed: " + "; ".join(problems)
    if whole.status != "staged":
        storage.remove_tree(whole.staging)
        whole.staging = ""
        record(whole, lake=lake)
        return whole
    for _, p in sorted(by_part.items()):
        for name, count in p.rows.items():
            whole.rows[name] = whole.rows.get(name, 0) + count
    return whole


def _merge_parts(outs: list[Outcome], *, lake: str | None) -> tuple[list[Outcome], _Sources]:
    """One outcome per file, the parts of a split file merged in its first part's place."""
    groups: dict[str, list[Outcome]] = {}
    order: list[Outcome | str] = []
    for o in outs:
        if o.part is None:
            order.append(o)
        else:
            if o.ingest_id not in groups:
                order.append(o.ingest_id)
            groups.setdefault(o.ingest_id, []).append(o)
    merged: list[Outcome] = []
    sources: _Sources = {}
    for item in order:
        if isinstance(item, Outcome):
            merged.append(item)
            sources[item.ingest_id] = [(item.staging, item.rows)]
            continue
        parts = sorted(groups[item], key=lambda p: int(p.part or 0))
        whole = _merge_file(parts, lake=lake)
        merged.append(whole)
        sources[item] = [(p.staging, p.rows) for p in parts if p.status == "staged"]
    return merged, sources


def _read_staged(name: str, where: list[tuple[str, dict[str, int]]]) -> pa.Table:
    """One table's staged rows of one file (its parts' rows merged)."""
    tables = [
        storage.read_parquet(storage.join(d, f"{name}.parquet"))
        for d, rows in where
        if name in rows
    ]
    if len(where) == 1:
        return tables[0]
    from transforms.pipeline.decode_mea import merge_part_tables

    return merge_part_tables(name, tables)


def commit_batch(
    outcomes: Sequence[Outcome | dict[str, Any]], *, lake: str | None = None
) -> list[Outcome]:
    """Validate staged files together, then commit the passing ones at once.

    Each table's rows of the whole batch are validated in one GX run; failures
    are attributed to files through their ``file_id``. Files with a failure
    are moved to ``<lake>/quarantine/<file_id>/`` and logged ``quarantined``
    with the failed expectations; nothing of them reaches the data tables.
    The others are appended with one commit per table; one ``ingest_log``
    commit then publishes all of them (the commit point), and one delete per
    table removes the rows of their superseded attempts.

    The parts of a split plate (outcomes with ``part`` set, sharing an
    ``ingest_id``) are merged first into one outcome per file, returned in
    place of its parts; a file with a part missing or not staged is
    ``failed`` with the reason and nothing of it is committed.
    """
    outs, sources = _merge_parts([_as_outcome(o) for o in outcomes], lake=lake)
    staged: list[Outcome] = []
    seen: dict[str, Outcome] = {}
    for o in outs:
        if o.status != "staged":
            continue
        if o.file_id in seen:  # the same bytes twice in one batch: keep the first
            o.status, o.reason = "duplicate", f"same content as {seen[o.file_id].file_name}"
            storage.remove_tree(o.staging)
            o.staging = ""
            record(o, lake=lake)
            continue
        seen[o.file_id] = o
        staged.append(o)
    if not staged:
        return outs
    batch_id = uuid.uuid4().hex
    run_time = _now().replace(microsecond=0).isoformat()
    local = not spec.is_remote(spec.lake_root(lake))
    try:
        combined: dict[str, pa.Table] = {}
        for name in dict.fromkeys(n for o in staged for n in o.rows):
            parts = [_read_staged(name, sources[o.ingest_id]) for o in staged if name in o.rows]
            combined[name] = pa.concat_tables(parts, promote_options="permissive")
        failures: dict[str, list[str]] = {}
        pages: dict[str, str] = {}
        for name, rows in combined.items():
            result = qc.validate(name, rows)
            if local:
                qc.save_result(result, batch_id=batch_id, run_time=run_time, lake=lake)
                page = qc.docs_page(name, batch_id=batch_id, run_time=run_time, lake=lake)
                pages[name] = str(page.relative_to(qc.docs_dir(lake)))
            for fid, lines in result.by_file.items():
                failures.setdefault(fid, []).extend(f"{name}: {line}" for line in lines)
            if result.unattributed:
                # A table-level expectation failed: find the culprits file by file.
                for o in staged:
                    mine = rows.filter(pc.equal(rows["file_id"], o.file_id))
                    alone = qc.validate(name, mine)
                    if not alone.success:
                        failures.setdefault(o.file_id, []).append(alone.reason)
        for o in staged:
            o.batch_id = batch_id
            o.qc_pages = {n: p for n, p in pages.items() if n in o.rows}
        bad = [o for o in staged if o.file_id in failures]
        good = [o for o in staged if o.file_id not in failures]
        for o in bad:
            quarantine = storage.join(spec.quarantine_dir(o.file_id, lake), o.ingest_id)
            storage.move_tree(o.staging, quarantine)
            o.status, o.staging = "quarantined", quarantine
            o.reason = " | ".join(dict.fromkeys(failures[o.file_id]))
        good_ids = pa.array([o.file_id for o in good], pa.string())
        for name, rows in combined.items():
            if good:
                lakeio.append_rows(
                    name, rows.filter(pc.is_in(rows["file_id"], good_ids)), lake=lake
                )
        for o in good:
            o.status = "published"
        record([*good, *bad], lake=lake)  # the commit point of every good file
        keep = {o.file_id: o.ingest_id for o in good}
        for name in combined:
            lakeio.prune_superseded_many(name, keep=keep, lake=lake)
        for o in good:
            storage.remove_tree(o.staging)
            o.staging = ""
        return outs
    except NeurocyteError as exc:
        reason = str(exc)
    except Exception as exc:
        log.error("unexpected error committing batch %s\n%s", batch_id, traceback.format_exc())
        reason = f"internal error: {type(exc).__name__}: {exc}"
    pending = [o for o in staged if o.status == "staged"]
    for o in pending:
        o.status, o.reason = "failed", reason
    record(pending, lake=lake)
    return outs


def commit_staged(outcome: Outcome | dict[str, Any], *, lake: str | None = None) -> Outcome:
    """Validate and commit one staged file (a batch of one)."""
    return commit_batch([outcome], lake=lake)[0]


def ingest_file(path: str | Path, *, lake: str | None = None, **kwargs: Any) -> Outcome:
    """Stage and commit one file (no publishing)."""
    return commit_staged(stage_file(path, lake=lake, **kwargs), lake=lake)


@dataclass(frozen=True)
class IngestSummary:
    outcomes: tuple[Outcome, ...]
    catalog: str
    docs: str

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out


#: Kinds (by name) whose files may be split into well groups: continuous plates, where
#: spike detection dominates the cost (an icephys NWB so split is staged by its part 0).
SPLITTABLE_KINDS = ("axion_raw", "nwb")


def plate_parts(
    file_name: str, size_bytes: int, *, split_plate_mb: float | None, max_parts: int = 16
) -> int:
    """How many well groups to stage a file in.

    1 unless the file is a continuous plate (``.raw``, NWB) larger than
    ``split_plate_mb`` MiB; then one group per ``split_plate_mb`` MiB of file,
    at most ``max_parts`` (groups are cut at filter-lane boundaries, see
    :func:`transforms.mea_rows.well_groups`, so a plate may fill fewer).
    """
    if not split_plate_mb or spec.recording_kind(file_name) not in SPLITTABLE_KINDS:
        return 1
    limit = float(split_plate_mb) * 2**20
    if size_bytes <= limit:
        return 1
    return max(1, min(int(max_parts), math.ceil(size_bytes / limit)))


def split_candidates(
    candidates: Sequence[dict[str, Any]], *, split_plate_mb: float | None, max_parts: int = 16
) -> list[dict[str, Any]]:
    """Work items: each candidate as is, or a large plate as one item per well group.

    The parts of a plate carry ``part``, ``n_parts`` and the ``ingest_id`` they
    share (a candidate needs ``file_name`` and ``size_bytes``).
    """
    out: list[dict[str, Any]] = []
    for cand in candidates:
        n = plate_parts(
            cand["file_name"],
            int(cand["size_bytes"]),
            split_plate_mb=split_plate_mb,
            max_parts=max_parts,
        )
        if n == 1:
            out.append(dict(cand))
            continue
        ingest_id = uuid.uuid4().hex
        out.extend({**cand, "part": k, "n_parts": n, "ingest_id": ingest_id} for k in range(n))
    return out


def group_parts(batches: Iterable[Sequence[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Staged outcomes regrouped for the gate: the parts of a split file in one batch.

    Batches of whole files stay as they are; each split file becomes one batch
    of its parts (whichever extract staged them), for :func:`commit_batch`.
    """
    out: list[list[dict[str, Any]]] = []
    split: dict[str, list[dict[str, Any]]] = {}
    for batch in batches:
        whole = [o for o in batch if o.get("part") is None]
        if whole:
            out.append(whole)
        for o in batch:
            if o.get("part") is not None:
                split.setdefault(o["ingest_id"], []).append(o)
    return out + list(split.values())


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, directories expanded to the recordings below them."""
    from transforms.pipeline.landing import is_candidate

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if is_candidate(q)))
        else:
            out.append(p)
    return out


def ingest_paths(
    paths: Sequence[str | Path],
    *,
    lake: str | None = None,
    landing: str | None = None,
    lab: str | None = None,
    condition: str | None = None,
    timepoint: str | None = None,
    plate_map: str | Path | None = None,
    force: bool = False,
    publish: bool = True,
    batch_size: int = 50,
    on_outcome: Callable[[Outcome], None] | None = None,
    split_plate_mb: float | None = None,
    max_parts: int = 16,
) -> IngestSummary:
    """Ingest many files in batches, then publish the catalog and QC docs once.

    Each batch is staged file by file, validated together and committed with
    one Delta commit per table (see :func:`commit_batch`). With
    ``split_plate_mb``, a larger continuous plate is staged well group by well
    group (:func:`plate_parts`), as the DAG's workers do, and merged at commit.
    """
    outcomes: list[Outcome] = []
    files = expand_paths(paths)
    common: dict[str, Any] = {
        "lake": lake,
        "landing": landing,
        "lab": lab,
        "condition": condition,
        "timepoint": timepoint,
        "plate_map": plate_map,
        "force": force,
    }
    for start in range(0, len(files), batch_size):
        staged: list[Outcome] = []
        for path in files[start : start + batch_size]:
            size = path.stat().st_size if path.is_file() else 0
            n = plate_parts(path.name, size, split_plate_mb=split_plate_mb, max_parts=max_parts)
            if n == 1:
                staged.append(stage_file(path, **common))
                continue
            ingest_id = uuid.uuid4().hex
            staged.extend(
                stage_file(path, **common, part=k, n_parts=n, ingest_id=ingest_id) for k in range(n)
            )
        for outcome in commit_batch(staged, lake=lake):
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    catalog = docs = ""
    if publish:
        from transforms.lake.catalog import publish as publish_catalog

        catalog = str(publish_catalog(lake=lake).catalog)
        docs = str(qc.build_data_docs(lake=lake))
    return IngestSummary(outcomes=tuple(outcomes), catalog=catalog, docs=docs)
