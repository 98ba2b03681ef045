"""Nightly upkeep of the lake: stale files, compaction, z-order, vacuum, checkpoints.

Every side-effecting function is keyword-only and defaults to ``dry_run=True``:
it reports what it would do and changes nothing unless asked.

Order matters for readers: the catalog pins the Parquet files of a snapshot,
so after a compaction the catalog must be republished, and vacuum must keep
removed files for longer than any catalog in use may live (the default
retention, 7 days, is far longer than the nightly republish interval).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from transforms import spec
from transforms.errors import SpecError
from transforms.lake import delta as lakeio
from transforms.lake import storage

Mode = Literal["compact", "zorder"]

#: Columns queries filter on that are *not* partition columns (those are
#: pruned by partition already): z-ordering clusters rows by them.
ZORDER_COLUMNS: dict[str, tuple[str, ...]] = {spec.INGEST_LOG: ("file_id", "status")}
DEFAULT_ZORDER: tuple[str, ...] = ("file_id",)

DEFAULT_RETENTION_HOURS = 168


@dataclass(frozen=True)
class StaleFile:
    """A published file whose rows come from an older transform version."""

    path: str
    file_name: str
    file_id: str
    transform_version: str
    exists: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stale_files(*, lake: str | None = None, version: str | None = None) -> list[StaleFile]:
    """Files whose latest published attempt predates ``version`` (default: the code's).

    A file is stale when the transform version stored with its latest
    published ingest differs from :data:`spec.TRANSFORM_VERSION`. Its
    ``source_path`` is where the nightly DAG re-reads it from; ``exists`` says
    whether it is still there (a file removed from the landing zone cannot be
    re-ingested and is reported, not silently dropped).
    """
    current = version or spec.TRANSFORM_VERSION
    published = lakeio.published_ingests(lake=lake)
    stale = {fid: v for fid, (_i, v) in published.items() if v != current}
    if not stale:
        return []
    log = lakeio.read_table(
        spec.INGEST_LOG,
        lake=lake,
        columns=["file_id", "ingest_id", "source_path", "file_name", "status"],
    )
    assert log is not None  # published_ingests found rows
    wanted = {published[f][0] for f in stale}
    out: dict[str, StaleFile] = {}
    for fid, iid, path, name, status in zip(
        log["file_id"].to_pylist(),
        log["ingest_id"].to_pylist(),
        log["source_path"].to_pylist(),
        log["file_name"].to_pylist(),
        log["status"].to_pylist(),
        strict=True,
    ):
        if status == "published" and iid in wanted and fid not in out:
            out[fid] = StaleFile(path, name, fid, stale[fid], storage.exists(path))
    return sorted(out.values(), key=lambda s: s.path)


@dataclass
class TableReport:
    """What maintenance did (or would do) to one table."""

    table: str
    files_before: int = 0
    files_after: int = 0
    version_before: int = -1
    version_after: int = -1
    optimize: dict[str, Any] = field(default_factory=dict)
    vacuumed: int = 0
    checkpoint: bool = False
    dry_run: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _open(table: str, lake: str | None) -> Any:
    from deltalake import DeltaTable

    return DeltaTable(spec.table_uri(table, lake), storage_options=lakeio.storage_options(lake))


def zorder_columns(table: str) -> tuple[str, ...]:
    """The z-order columns of ``table`` (never a partition column)."""
    cols = ZORDER_COLUMNS.get(table, DEFAULT_ZORDER)
    bad = set(cols) & set(spec.PARTITION_COLUMNS)
    if bad:
        raise SpecError(f"{table}: cannot z-order by partition columns {sorted(bad)}")
    return cols


def maintain_table(
    table: str,
    *,
    lake: str | None = None,
    mode: Mode = "zorder",
    target_size: int | None = None,
    retention_hours: int = DEFAULT_RETENTION_HOURS,
    dry_run: bool = True,
) -> TableReport:
    """Compact (or z-order) a table's small files, checkpoint, then vacuum.

    Parameters
    ----------
    table
        One of :data:`spec.ALL_TABLES`.
    lake
        The lake root (default ``$NEUROCYTE_LAKE``).
    mode
        ``"compact"`` bin-packs small files per partition; ``"zorder"`` also
        clusters rows by :func:`zorder_columns` (slower, better skipping).
    target_size
        Target file size in bytes (delta-rs default when ``None``).
    retention_hours
        Vacuum deletes only files removed from the table longer ago than this;
        values under 168 h are refused by delta-rs' retention check.
    dry_run
        Report file counts and what vacuum would delete; change nothing.

    Returns
    -------
    TableReport
    """
    report = TableReport(table=table, dry_run=dry_run)
    if not lakeio.table_exists(table, lake=lake):
        return report
    dt = _open(table, lake)
    report.version_before = dt.version()
    report.files_before = len(dt.file_uris())
    if dry_run:
        report.files_after = report.files_before
        report.version_after = report.version_before
        report.vacuumed = len(dt.vacuum(retention_hours=retention_hours, dry_run=True))
        return report

    props = lakeio.commit_properties(operation=f"{mode} {table}")

    def optimize() -> dict[str, Any]:
        fresh = _open(table, lake)
        if mode == "zorder":
            return dict(
                fresh.optimize.z_order(
                    zorder_columns(table), target_size=target_size, commit_properties=props
                )
            )
        return dict(fresh.optimize.compact(target_size=target_size, commit_properties=props))

    if mode not in ("compact", "zorder"):
        raise SpecError(f"unknown maintenance mode {mode!r}")
    report.optimize = lakeio.rerun_on_conflict(optimize, what=f"{mode} {table}")
    dt = _open(table, lake)
    dt.create_checkpoint()
    report.checkpoint = True
    dt.cleanup_metadata()
    report.vacuumed = len(dt.vacuum(retention_hours=retention_hours, dry_run=False))
    dt = _open(table, lake)
    report.version_after = dt.version()
    report.files_after = len(dt.file_uris())
    return report


def maintain(
    *,
    lake: str | None = None,
    tables: tuple[str, ...] | None = None,
    mode: Mode = "zorder",
    target_size: int | None = None,
    retention_hours: int = DEFAULT_RETENTION_HOURS,
    dry_run: bool = True,
) -> list[TableReport]:
    """:func:`maintain_table` for every existing table (default: all of them)."""
    return [
        maintain_table(
            t,
            lake=lake,
            mode=mode,
            target_size=target_size,
            retention_hours=retention_hours,
            dry_run=dry_run,
        )
        for t in (tables or spec.ALL_TABLES)
    ]
