"""What happened to one file: the :class:`Outcome` of an attempt and its ``ingest_log`` row."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa

from transforms import spec, untrusted
from transforms.errors import NeurocyteError
from transforms.lake import delta as lakeio
from transforms.lake import leases, storage

log = logging.getLogger(__name__)

Status = Literal["published", "quarantined", "failed", "duplicate", "not_retried", "staged"]


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
    #: The metadata that applied (:func:`transforms.pipeline.identity.metadata_digest`);
    #: empty when unknown (logged as NULL, so the file is tried again).
    metadata_digest: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def now_utc() -> datetime:
    return datetime.now(UTC)


def log_row(outcome: Outcome, *, finished_at: datetime) -> dict[str, Any]:
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
        "metadata_digest": outcome.metadata_digest or None,
    }


#: Where the full text of a capped reason is kept, inside the attempt's quarantine folder.
FULL_REASON_FILE = "reason.txt"


def cap_reason(outcome: Outcome, *, lake: str | None = None) -> None:
    """Cap ``outcome.reason`` at :data:`transforms.untrusted.REASON_MAX_CHARS`.

    A longer reason (a failed expectation listing huge values, a message quoting a
    whole line of a file) keeps its head, and the full text is written to
    ``<lake>/quarantine/<file_id>/<ingest_id>/reason.txt``, which the reason names; the
    maintenance sweep ages it out with the attempt's other quarantine files.
    """
    head, capped = untrusted.cap_reason(outcome.reason)
    if not capped:
        return
    file_id = outcome.file_id or spec.UNREADABLE_FILE_ID
    rel = f"{spec.QUARANTINE_DIR}/{file_id}/{outcome.ingest_id}/{FULL_REASON_FILE}"
    try:
        target = storage.join(spec.quarantine_dir(file_id, lake), outcome.ingest_id)
        storage.write_bytes(
            storage.join(target, FULL_REASON_FILE), outcome.reason.encode("utf-8", "replace")
        )
        where = f"full text ({len(outcome.reason)} chars) in <lake>/{rel}"
    except (OSError, NeurocyteError) as exc:
        where = f"{len(outcome.reason)} chars; the full text could not be saved: {exc}"
    outcome.reason = f"{head} …[truncated: {where}]"


def record(outcome: Outcome | Sequence[Outcome], *, lake: str | None = None) -> None:
    """Append outcomes to ``ingest_log`` in one commit (reasons capped: :func:`cap_reason`)."""
    outcomes = [outcome] if isinstance(outcome, Outcome) else list(outcome)
    if not outcomes:
        return
    for o in outcomes:
        cap_reason(o, lake=lake)
    now = now_utc()
    rows = [log_row(o, finished_at=now) for o in outcomes]
    try:
        lakeio.append_log(pa.Table.from_pylist(rows, schema=lakeio.INGEST_LOG_SCHEMA), lake=lake)
    finally:
        # The attempts are over, logged or not (a full disk): their files' leases go
        # back, so the next run retries them at once.
        for o in outcomes:
            if o.file_id and o.file_id != spec.UNREADABLE_FILE_ID:
                leases.release_id(o.file_id, holder=o.ingest_id, lake=lake)


def record_failure(outcome: Outcome | Sequence[Outcome], *, lake: str | None = None) -> None:
    """:func:`record` for outcomes that publish nothing (failed, duplicate, not_retried,
    quarantined).

    If even the log cannot be written (the disk that failed the attempt is still
    full), the outcome's reason says so and the run goes on: nothing is published
    either way, and the next run retries the file.
    """
    outcomes = [outcome] if isinstance(outcome, Outcome) else list(outcome)
    try:
        record(outcomes, lake=lake)
    except Exception as exc:  # the run must go on with the other files
        log.error("could not log %d outcome(s): %s", len(outcomes), exc)
        for o in outcomes:
            o.reason = (o.reason + " " if o.reason else "") + (
                f"(not logged in ingest_log: {type(exc).__name__}: {exc})"
            )


def is_out_of_memory(exc: BaseException) -> bool:
    """``MemoryError``, or an Arrow / DuckDB allocation or thread-start failure (over budget)."""
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__}: {exc}"
    # a thread pool that cannot start a thread (its stack is refused) is the same
    markers = ("std::bad_alloc", "Out of memory", "out of memory", "Failed to launch worker thread")
    return type(exc).__name__ in ("ArrowMemoryError", "OutOfMemoryException") or any(
        m in text for m in markers
    )


def resource_reason(name: str) -> str:
    """The reason of an attempt that ran out of memory: a resource failure, not the data's."""
    from transforms.pipeline import allocator

    budget = allocator.memory_budget_mb()
    within = f"the worker budget of {budget} MiB" if budget else "the memory available"
    return (
        f"resource: {name}: out of memory (needs more than {within}; "
        f"${allocator.ENV_MEMORY_MB}); retry with a larger budget"
    )
