"""Stage one file: identify it once, decode it, extract features, write the rows as Parquet.

:func:`stage_file` is the extract half of an ingest (the DAG's ``extract`` task, the
CLI's per-file step). The file is identified once, as a :class:`~transforms.spec.SourceFile`
(landing URI, name, size, content hash), and that identity is what every row records;
its rows wait in ``<lake>/_staging/<ingest_id>/`` for the gate (:mod:`transforms.pipeline.commit`).

Scale-out within a plate: ``stage_file(part=k, n_parts=n)`` stages only well group ``k``
of ``n`` of a continuous plate, in ``<staging>/part-<k>/``; the parts share one
``ingest_id`` and are merged at commit.
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from pathlib import Path

import pyarrow as pa

from transforms import formats, spec
from transforms.errors import (
    DecodeError,
    InvalidArgument,
    NeurocyteError,
    ResourceLimit,
    SpecError,
)
from transforms.lake import delta as lakeio
from transforms.lake import leases, storage
from transforms.pipeline import allocator
from transforms.pipeline.landing import Target, resolve_target
from transforms.pipeline.outcome import (
    Outcome,
    is_out_of_memory,
    now_utc,
    record_failure,
    resource_reason,
)

log = logging.getLogger(__name__)


def _decode(
    source: spec.SourceFile,
    kind: str,
    *,
    target: Target,
    ingest_id: str,
    plate_map: Path | None,
    part: tuple[int, int] | None = None,
) -> tuple[str, dict[str, pa.Table]]:
    if formats.format_of(kind).modality == "icephys":
        from transforms.pipeline.decode_icephys import decode_icephys

        if part is not None and part[0] > 0:  # not split: part 0 carries the whole file
            return "", {}
        with allocator.memory_budget():  # $NEUROCYTE_WORKER_MEMORY_MB, after the imports
            return decode_icephys(source, kind=kind, target=target, ingest_id=ingest_id)
    from transforms.mea import metrics  # noqa: F401 - imported (scipy starts threads) before the budget
    from transforms.pipeline.decode_mea import decode_mea

    with allocator.memory_budget():
        return decode_mea(
            source,
            target=target,
            ingest_id=ingest_id,
            kind=kind,
            plate_map_path=plate_map,
            part=part,
        )


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
    lease: bool = True,
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

    ``lease=False`` skips the file's lease (:mod:`transforms.lake.leases`), which
    otherwise makes an overlapping attempt at the same content a ``duplicate``; the
    commit protocol keeps the lake consistent either way (an ``s3://`` lake has no
    leases).
    """
    path = Path(path)
    started = now_utc()
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
        kind = formats.kind_of(path)
        before = path.stat()
        size = before.st_size
        outcome.file_id = storage.sha256(path)
        # The file's identity, computed once: rows record its landing URI, not the
        # local copy a worker reads (a temporary download for an S3 landing zone).
        source = spec.SourceFile(
            uri=outcome.source_path,
            name=path.name,
            size_bytes=size,
            file_id=outcome.file_id,
            local_path=path,
        )
        target = resolve_target(
            path,
            landing=landing,
            lab=lab,
            condition=condition,
            timepoint=timepoint,
            require_all=formats.format_of(kind).modality == "icephys",
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
        held = (
            leases.acquire(outcome.file_id, holder=outcome.ingest_id, lake=lake) if lease else None
        )
        if isinstance(held, str):  # an overlapping run has this file in hand
            outcome.status = "duplicate"
            outcome.reason = f"being ingested by another run (attempt {held})"
            if part is None:
                record_failure(outcome, lake=lake)
            return outcome
        published = lakeio.published_ingests(lake=lake)
        previous = published.get(outcome.file_id)
        if previous and previous[1] == spec.TRANSFORM_VERSION and not force:
            outcome.status = "duplicate"
            outcome.reason = f"content already published (ingest {previous[0]})"
            if part is None:
                record_failure(outcome, lake=lake)
            return outcome
        outcome.source_format, tables = _decode(
            source,
            kind,
            target=target,
            ingest_id=outcome.ingest_id,
            plate_map=Path(plate_map) if plate_map else None,
            part=(part, n_parts) if part is not None and n_parts is not None else None,
        )
        # One read per attempt: the bytes decoded must be the bytes hashed. A file
        # rewritten meanwhile changes size, mtime or inode; such an attempt fails and
        # the file is tried again once it has settled (its new content is new).
        after = path.stat()
        if (after.st_size, after.st_mtime_ns, after.st_ino) != (
            before.st_size,
            before.st_mtime_ns,
            before.st_ino,
        ):
            raise DecodeError(
                f"{path.name}: changed while it was being read (size {before.st_size} -> "
                f"{after.st_size} bytes); it is retried once it has settled"
            )
        stage = spec.staging_dir(outcome.ingest_id, lake)
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
    except ResourceLimit as exc:
        outcome.reason = f"resource: {exc}"
    except NeurocyteError as exc:
        outcome.reason = str(exc)
    except Exception as exc:  # a reader or feature bug must not stop the other files
        if is_out_of_memory(exc):  # MemoryError, or Arrow's: the budget, not the data
            outcome.reason = resource_reason(path.name)
        else:
            log.error(
                "unexpected error on %s (file_id=%s)\n%s",
                path,
                outcome.file_id,
                traceback.format_exc(),
            )
            outcome.reason = f"internal error: {type(exc).__name__}: {exc}"
    if not outcome.file_id:
        outcome.file_id = spec.UNREADABLE_FILE_ID  # no content hash to key on
    if part is None:
        record_failure(outcome, lake=lake)
    return outcome
