"""Ingest one file: hash, decode, extract features, QC-gate, commit, log.

The two halves are separate functions so the Airflow DAG can run them as two
tasks that pass only paths and ids: :func:`stage_file` (decode + features,
written as Parquet into ``<lake>/_staging/<ingest_id>/``) and
:func:`commit_staged` (GX validation, Delta append, ``ingest_log`` commit
point, pruning of superseded rows). :func:`ingest_paths` runs both for many
files and then publishes, which is what ``neurocyte ingest`` does.
"""

from __future__ import annotations

import json
import logging
import shutil
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from transforms import lake as lakeio
from transforms import qc, spec
from transforms.errors import NeurocyteError, SpecError
from transforms.landing import Target, resolve_target, sha256_file

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
    qc_pages: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> datetime:
    return datetime.now(UTC)


def staging_dir(ingest_id: str, *, lake: str | None = None) -> Path:
    root = spec.lake_root(lake)
    if spec.is_remote(root):
        raise SpecError("staging needs a local lake path")
    return Path(root) / "_staging" / ingest_id


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
) -> tuple[str, dict[str, pa.Table]]:
    if kind in ("abf", "nwb"):
        from transforms.icephys_rows import decode_icephys

        return decode_icephys(path, target=target, file_id=file_id, ingest_id=ingest_id)
    from transforms.mea_rows import decode_mea

    return decode_mea(
        path,
        target=target,
        file_id=file_id,
        ingest_id=ingest_id,
        kind=kind,
        plate_map_path=plate_map,
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
        "started_at": datetime.fromisoformat(outcome.started_at),
        "finished_at": finished_at,
    }


def record(outcome: Outcome, *, lake: str | None = None) -> None:
    """Append the outcome to ``ingest_log``."""
    row = _log_row(outcome, finished_at=_now())
    lakeio.append_log(pa.Table.from_pylist([row], schema=lakeio.INGEST_LOG_SCHEMA), lake=lake)


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
) -> Outcome:
    """Decode and extract features; stage the rows as Parquet for the gate.

    Terminal outcomes (``failed``, ``duplicate``) are recorded in
    ``ingest_log`` here; a ``staged`` outcome is recorded by
    :func:`commit_staged`. Never raises for bad input.
    """
    path = Path(path)
    started = _now()
    outcome = Outcome(
        source_path=str(path.resolve()) if path.exists() else str(path),
        file_name=path.name,
        file_id="",
        ingest_id=uuid.uuid4().hex,
        status="failed",
        started_at=started.isoformat(),
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
            record(outcome, lake=lake)
            return outcome
        outcome.source_format, tables = _decode(
            path,
            kind,
            target=target,
            file_id=outcome.file_id,
            ingest_id=outcome.ingest_id,
            plate_map=Path(plate_map) if plate_map else None,
        )
        stage = staging_dir(outcome.ingest_id, lake=lake)
        stage.mkdir(parents=True, exist_ok=True)
        for name, rows in tables.items():
            pq.write_table(rows, stage / f"{name}.parquet")
            outcome.rows[name] = rows.num_rows
        outcome.staging = str(stage)
        outcome.status = "staged"
        (stage / "outcome.json").write_text(json.dumps(outcome.as_dict()), encoding="utf-8")
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
    record(outcome, lake=lake)
    return outcome


def commit_staged(outcome: Outcome | dict[str, Any], *, lake: str | None = None) -> Outcome:
    """Validate staged rows, then append them and record the commit point.

    A batch that fails any suite is moved to ``<lake>/quarantine/<file_id>/``
    and logged ``quarantined`` with the failed expectations; nothing of it
    reaches the data tables.
    """
    if isinstance(outcome, dict):
        outcome = Outcome(**outcome)
    if outcome.status != "staged":
        return outcome
    stage = Path(outcome.staging)
    run_time = _now().replace(microsecond=0).isoformat()
    try:
        tables = {name: pq.read_table(stage / f"{name}.parquet") for name in outcome.rows}
        failures: list[str] = []
        for name, rows in tables.items():
            result = qc.validate(name, rows)
            if not spec.is_remote(spec.lake_root(lake)):
                qc.save_result(
                    result,
                    file_id=outcome.file_id,
                    ingest_id=outcome.ingest_id,
                    run_time=run_time,
                    lake=lake,
                )
                page = qc.docs_page(
                    name,
                    file_id=outcome.file_id,
                    ingest_id=outcome.ingest_id,
                    run_time=run_time,
                    lake=lake,
                )
                outcome.qc_pages[name] = str(page)
            if not result.success:
                failures.append(result.reason)
        if failures:
            quarantine = Path(spec.quarantine_dir(outcome.file_id, lake)) / outcome.ingest_id
            quarantine.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(stage), str(quarantine))
            outcome.status = "quarantined"
            outcome.reason = " | ".join(failures)
            outcome.staging = str(quarantine)
            record(outcome, lake=lake)
            return outcome
        for name, rows in tables.items():
            lakeio.append_rows(name, rows, lake=lake)
        outcome.status = "published"
        record(outcome, lake=lake)  # the commit point
        for name in tables:
            lakeio.prune_superseded(
                name, file_id=outcome.file_id, keep_ingest_id=outcome.ingest_id, lake=lake
            )
        shutil.rmtree(stage, ignore_errors=True)
        outcome.staging = ""
        return outcome
    except NeurocyteError as exc:
        outcome.status, outcome.reason = "failed", str(exc)
    except Exception as exc:
        log.error(
            "unexpected error committing %s (file_id=%s)\n%s",
            outcome.file_name,
            outcome.file_id,
            traceback.format_exc(),
        )
        outcome.status, outcome.reason = "failed", f"internal error: {type(exc).__name__}: {exc}"
    record(outcome, lake=lake)
    return outcome


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


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, directories expanded to the recordings below them."""
    from transforms.landing import is_candidate

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
    on_outcome: Callable[[Outcome], None] | None = None,
) -> IngestSummary:
    """Ingest many files one by one, then publish the catalog and QC docs once."""
    outcomes = []
    for path in expand_paths(paths):
        outcome = ingest_file(
            path,
            lake=lake,
            landing=landing,
            lab=lab,
            condition=condition,
            timepoint=timepoint,
            plate_map=plate_map,
            force=force,
        )
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    catalog = docs = ""
    if publish:
        from transforms.publish import publish as publish_catalog

        catalog = str(publish_catalog(lake=lake).catalog)
        docs = str(qc.build_data_docs(lake=lake))
    return IngestSummary(outcomes=tuple(outcomes), catalog=catalog, docs=docs)
