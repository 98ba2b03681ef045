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

import errno
import json
import logging
import os
import traceback
import uuid
from pathlib import Path

import pyarrow as pa

from transforms import formats, spec, untrusted
from transforms.errors import (
    DecodeError,
    InvalidArgument,
    LakeError,
    NeurocyteError,
    ResourceLimit,
    SpecError,
)
from transforms.lake import fingerprints, leases, storage
from transforms.pipeline import allocator, identity, paramset
from transforms.pipeline.landing import Target, resolve_target
from transforms.pipeline.outcome import (
    Outcome,
    is_out_of_memory,
    now_utc,
    record_failure,
    resource_reason,
)

log = logging.getLogger(__name__)

#: I/O errors that say nothing about the file (a full disk, a lost mount): its attempt
#: is logged without a metadata digest, so the next run tries it again.
_ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM, errno.ESTALE}
)


def _decode(
    source: spec.SourceFile,
    kind: str,
    *,
    target: Target,
    ingest_id: str,
    plate_map: Path | None,
    part: tuple[int, int] | None = None,
    parameter_set: paramset.ParameterSet | None = None,
) -> tuple[str, dict[str, pa.Table]]:
    if formats.format_of(kind).modality == "icephys":
        from transforms.pipeline.decode_icephys import decode_icephys

        if part is not None and part[0] > 0:  # not split: part 0 carries the whole file
            return "", {}
        with allocator.memory_budget():  # $NEUROCYTE_WORKER_MEMORY_MB, after the imports
            return decode_icephys(
                source, kind=kind, target=target, ingest_id=ingest_id, parameter_set=parameter_set
            )
    if formats.format_of(kind).access == "vendor_metrics":
        from transforms.pipeline.decode_vendor import decode_vendor_metrics

        if part is not None and part[0] > 0:
            return "", {}
        return decode_vendor_metrics(
            source, target=target, ingest_id=ingest_id, kind=kind, plate_map_path=plate_map
        )
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
            parameter_set=parameter_set,
        )


def _archived_original(path: Path) -> tuple[Path, str, int] | None:
    """For a raw archive directory: its original's path, file_id and size; else None.

    Raises
    ------
    DecodeError, UnsupportedRecording
        An incomplete or unreadable archive, or one that does not name its original.
    """
    if not (path.is_dir() and spec.is_raw_archive_name(path.name)):
        return None
    from transforms.formats.raw_archive import open_raw_archive

    with open_raw_archive(path) as arc:
        if not arc.source_uri or arc.source_size_bytes is None:
            raise DecodeError(f"{path.name}: the archive does not record its original's path")
        return Path(arc.source_uri), arc.file_id, int(arc.source_size_bytes)


def stage_file(
    path: str | Path,
    *,
    lake: str | None = None,
    landing: str | None = None,
    lab: str | None = None,
    condition: str | None = None,
    timepoint: str | None = None,
    plate_map: str | Path | None = None,
    params_file: str | None = None,
    force: bool = False,
    source_uri: str | None = None,
    part: int | None = None,
    n_parts: int | None = None,
    ingest_id: str | None = None,
    lease: bool = True,
) -> Outcome:
    """Decode and extract features; stage the rows as Parquet for the gate.

    Terminal outcomes (``failed``, ``duplicate``, ``not_retried``) are recorded in
    ``ingest_log`` here; a ``staged`` outcome is recorded by
    :func:`commit_staged`. Never raises for bad input.

    Whether the file is ingested at all is :func:`transforms.pipeline.identity.decide`'s
    rule on its content hash and metadata digest (``force`` ingests regardless).
    ``params_file`` names the parameter set for the file instead of its lab's
    ``<landing>/<lab>/neurocyte.toml`` (:mod:`transforms.pipeline.paramset`). ``source_uri`` is the
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
    allocator.limit_blas_threads()
    if (part is None) != (n_parts is None) or (
        part is not None and n_parts is not None and not 0 <= part < n_parts
    ):
        raise InvalidArgument(f"part {part!r} of {n_parts!r}: give both, 0 <= part < n_parts")
    if part is not None and not ingest_id:
        raise InvalidArgument("the parts of a file share one ingest_id: pass it")
    outcome = Outcome(
        # a link is recorded under its own path, never its target's
        source_path=source_uri or os.path.abspath(path),
        file_name=path.name,
        file_id="",
        ingest_id=spec.check_id("ingest_id", ingest_id) if ingest_id else uuid.uuid4().hex,
        status="failed",
        started_at=started.isoformat(),
        part=part,
        n_parts=n_parts,
    )
    try:
        # A raw archive in the lake (the nightly re-ingest of a plate whose original
        # left the landing zone) is a folder; anything else comes from the untrusted
        # landing zone: a bounded name, no link (the file's or a folder's below the
        # landing root), a regular file; a link's target is never read.
        archived = None if os.path.islink(path) else _archived_original(path)
        if archived is None:
            untrusted.check_name(path.name)
            root = spec.landing_root(landing)
            if not spec.is_remote(root):
                untrusted.check_inside(path, root)
            before = untrusted.lstat_regular(path)
        else:
            before = os.lstat(path)
        kind = formats.kind_of(path)
        size = before.st_size
        if archived is None:
            outcome.file_id = storage.sha256(path)
            where = path
        else:
            # A raw archive of a plate whose original left the landing zone: the
            # archive holds the original's verified samples, file_id, URI and size;
            # rows record the original, read from the archive.
            where, outcome.file_id, size = archived
            outcome.source_path, outcome.file_name = str(where), where.name
            if plate_map is None and where.parent.is_dir():
                from transforms.pipeline.decode_mea import find_plate_map

                plate_map = find_plate_map(where)
        # The metadata that applies, digested before any of it is read for the decode: a
        # sidecar edited meanwhile then differs from the digest logged, and the next run
        # applies it (the other order could log the new digest beside the old values).
        outcome.metadata_digest = identity.metadata_digest(
            where,
            landing=landing,
            lab=lab,
            condition=condition,
            timepoint=timepoint,
            plate_map=plate_map,
            params_file=params_file,
        )
        # The file's identity, computed once: rows record its landing URI, not the
        # local copy a worker reads (a temporary download for an S3 landing zone).
        source = spec.SourceFile(
            uri=outcome.source_path,
            name=where.name,
            size_bytes=size,
            file_id=outcome.file_id,
            local_path=path,
        )
        target: Target | None = None
        bad_target: NeurocyteError | None = None
        try:
            target = resolve_target(
                where,
                landing=landing,
                lab=lab,
                condition=condition,
                timepoint=timepoint,
                require_all=formats.format_of(kind).modality == "icephys",
            )
        except NeurocyteError as exc:  # raised below unless the file is not ingested
            bad_target = exc
        if target is not None:
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
        verdict = identity.AttemptIndex.load(lake=lake, file_id=outcome.file_id).verdict(
            outcome.file_id, outcome.metadata_digest, force=force
        )
        if verdict is not None:  # duplicate, or not_retried: nothing changed since
            outcome.status, outcome.reason = verdict.status, verdict.reason
            if part is None:
                record_failure(outcome, lake=lake)
            return outcome
        if bad_target is not None or target is None:
            raise bad_target or SpecError(f"{path.name}: no partition")
        parameter_set = paramset.load_parameter_set(
            where, landing=landing, lab=lab, params_file=params_file
        )
        outcome.source_format, tables = _decode(
            source,
            kind,
            target=target,
            ingest_id=outcome.ingest_id,
            plate_map=Path(plate_map) if plate_map else None,
            part=(part, n_parts) if part is not None and n_parts is not None else None,
            parameter_set=parameter_set,
        )
        # One read per attempt: the bytes decoded must be the bytes hashed. A file
        # rewritten meanwhile changes size, mtime or inode; such an attempt fails and
        # the file is tried again once it has settled (its new content is new).
        after = os.lstat(path)
        if (after.st_size, after.st_mtime_ns, after.st_ino) != (
            before.st_size,
            before.st_mtime_ns,
            before.st_ino,
        ):
            outcome.metadata_digest = ""  # not the file's fault: tried again, whatever changed
            raise DecodeError(
                f"{path.name}: changed while it was being read (size {before.st_size} -> "
                f"{after.st_size} bytes); it is retried once it has settled"
            )
        if archived is None and not source_uri and part in (None, 0):
            # raw access's change detector baseline (an archive is verified on read)
            fp = fingerprints.Fingerprint.of(path, before)
            fingerprints.remember(path, fp, file_id=outcome.file_id, lake=lake)
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
        if isinstance(exc, LakeError):  # the lake failed, not the file: tried again
            outcome.metadata_digest = ""
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
        if isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:
            outcome.metadata_digest = ""  # a full disk, a lost mount: tried again
    if not outcome.file_id:
        outcome.file_id = spec.UNREADABLE_FILE_ID  # no content hash to key on
    if part is None:
        record_failure(outcome, lake=lake)
    return outcome
