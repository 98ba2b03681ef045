"""Archive published raw plates into the lake (``neurocyte archive``, the nightly DAG).

A published continuous MEA recording (Axion ``.raw``, NWB ``ElectricalSeries``) is
located through the catalog, checked against its ``file_id`` (full SHA-256: the
archive must be of the content that was ingested), and written losslessly
compressed to ``<lake>/archive/raw/<file_id>.zarr``
(:mod:`transforms.formats.raw_archive`; verified before it counts). Afterwards
raw access reads the archive when the original is gone from the landing zone
(:func:`archived_source`), and the original may be deleted (``delete_source``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from transforms import formats, spec
from transforms.errors import DecodeError, LakeError, NeurocyteError, UnsupportedRecording
from transforms.lake import storage

log = logging.getLogger(__name__)

#: Recordings of these kinds hold continuous samples worth archiving.
ARCHIVABLE_KINDS: Final = ("axion_raw", "nwb_ecephys")
#: Published continuous MEA recordings (one row per file; a split plate has many rows).
_PUBLISHED_CONTINUOUS = """
SELECT DISTINCT file_id, file_name, source_kind
FROM mea_recordings
WHERE list_contains(?, source_kind)
ORDER BY file_id
"""

Status = Literal["archived", "exists", "failed"]


@dataclass(frozen=True)
class ArchiveOutcome:
    """The result of archiving one recording.

    Attributes
    ----------
    file_id, file_name
        The recording.
    status
        ``archived`` (written and verified now), ``exists`` (a complete archive of it
        is already in the lake) or ``failed``.
    path
        The archive (None when failed).
    ratio, seconds
        Compression ratio and wall time (archived only).
    reason
        Why it failed.
    source_deleted
        The original was deleted from the landing zone after archiving.
    """

    file_id: str
    file_name: str
    status: Status
    path: Path | None = None
    ratio: float | None = None
    seconds: float | None = None
    reason: str = ""
    source_deleted: bool = False


def archive_path(file_id: str, *, lake: str | None = None) -> Path:
    """The local path of a recording's archive (a remote lake is not supported yet).

    Raises
    ------
    LakeError
        For an ``s3://`` lake.
    """
    uri = spec.raw_archive_path(file_id, lake)
    if spec.is_remote(uri):
        raise LakeError(f"raw archives are written to a local lake only, not {uri}")
    return Path(uri)


def archived_source(file_id: str, *, lake: str | None = None) -> Path | None:
    """A complete archive of ``file_id`` in the lake, or None."""
    path = archive_path(file_id, lake=lake)
    if not path.is_dir():
        return None
    from transforms.formats.raw_archive import open_raw_archive

    try:
        with open_raw_archive(path) as arc:
            return path if arc.file_id == file_id else None
    except (DecodeError, UnsupportedRecording):
        return None


def archive_recording(
    file_id: str,
    *,
    lake: str | None = None,
    force: bool = False,
    workers: int = 2,
    delete_source: bool = False,
) -> ArchiveOutcome:
    """Archive one published continuous recording into the lake.

    Parameters
    ----------
    file_id
        The recording (its SHA-256).
    force
        Write again even if a complete archive exists.
    workers
        Compression threads.
    delete_source
        Delete the original from a local landing zone once the archive is verified.

    Raises
    ------
    LakeError
        Unknown ``file_id``, or a source that is gone or changed since ingest.
    UnsupportedRecording
        A recording without continuous samples (a spike list, ``.spk``, patch clamp).
    """
    from transforms.formats.raw_archive import write_archive
    from transforms.serve.raw import locate, verify_source

    record = locate(file_id, lake=lake)
    name = record.source_uri.rstrip("/").rsplit("/", 1)[-1]
    dest = archive_path(file_id, lake=lake)
    if not force and archived_source(file_id, lake=lake) is not None:
        return ArchiveOutcome(file_id, name, "exists", path=dest)
    if record.kind != "mea":
        raise UnsupportedRecording(f"{name}: a patch-clamp recording, no raw plate to archive")
    kind = formats.kind_of(record.source_path)
    if kind not in ARCHIVABLE_KINDS:
        raise UnsupportedRecording(f"{name}: {kind} holds no continuous samples to archive")
    verify_source(record, verify="full")  # the content ingested, nothing else
    started = time.monotonic()
    opened: Any = formats.open_continuous(record.source_path, kind=kind)
    with opened as source:
        info = write_archive(
            source,
            dest,
            file_id=file_id,
            source_name=name,
            source_kind=kind,
            source_uri=record.source_uri,
            source_size_bytes=record.file_size_bytes,
            workers=workers,
        )
    seconds = time.monotonic() - started
    log.info("file_id=%s archived %s: ratio %.2f in %.1f s", file_id, name, info.ratio, seconds)
    deleted = False
    if delete_source and not storage.is_s3(record.source_uri):
        Path(record.source_uri).unlink(missing_ok=True)
        deleted = True
    return ArchiveOutcome(
        file_id,
        name,
        "archived",
        path=info.path,
        ratio=info.ratio,
        seconds=seconds,
        source_deleted=deleted,
    )


def archive_published(
    *,
    lake: str | None = None,
    workers: int = 2,
    delete_source: bool = False,
) -> list[ArchiveOutcome]:
    """Archive every published continuous recording that has no archive yet.

    A recording that cannot be archived is reported (``failed``, with the reason)
    and the others go on.
    """
    from transforms.lake.catalog import connect

    con = connect(lake=lake, read_only=True)
    try:
        cols = con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
            ["mea_recordings"],
        ).fetchall()
        if "source_kind" not in {c[0] for c in cols}:  # no MEA recording published yet
            return []
        rows = con.execute(_PUBLISHED_CONTINUOUS, [list(ARCHIVABLE_KINDS)]).fetchall()
    finally:
        con.close()
    outcomes = []
    for file_id, file_name, _kind in rows:
        try:
            outcomes.append(
                archive_recording(file_id, lake=lake, workers=workers, delete_source=delete_source)
            )
        except NeurocyteError as exc:
            log.warning("file_id=%s not archived: %s", file_id, exc)
            outcomes.append(ArchiveOutcome(file_id, file_name, "failed", reason=str(exc)))
    return outcomes
