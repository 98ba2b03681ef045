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


#: What the sweep leaves alone: anything younger may belong to an attempt in flight.
DEFAULT_GRACE_HOURS = 24.0


@dataclass
class SweepReport:
    """What :func:`sweep` removed (or, with ``dry_run``, would remove)."""

    dry_run: bool
    grace_hours: float
    #: table -> rows of attempts that never became published (crashed before their
    #: commit point, or failed after appending), older than the grace period.
    orphan_rows: dict[str, int] = field(default_factory=dict)
    orphan_attempts: list[str] = field(default_factory=list)
    staging_dirs: list[str] = field(default_factory=list)
    catalog_temp_files: list[str] = field(default_factory=list)
    quarantine_copies: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _orphan_attempts(table: str, *, lake: str | None, cutoff_s: float) -> dict[str, int]:
    """ingest_id -> rows in ``table``, of attempts with no ``published`` log row whose
    data files were all committed before ``cutoff_s`` (epoch seconds)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    dt = _open(table, lake)
    adds = pa.table(dt.get_add_actions(flatten=True)).to_pydict()
    base = dt.table_uri.rstrip("/")
    rows: list[tuple[str, bool, int]] = []  # (ingest_id, file older than cutoff, rows)
    for path, mtime_ms in zip(adds["path"], adds["modification_time"], strict=True):
        uri = lakeio.local_path(f"{base}/{path}")
        fsys, fs_path = storage.filesystem(uri)
        ids = pq.read_table(fs_path, columns=["ingest_id"], filesystem=fsys)["ingest_id"]
        counts = pc.value_counts(ids).to_pylist()
        old = int(mtime_ms) / 1000.0 < cutoff_s
        rows += [(c["values"], old, int(c["counts"])) for c in counts]
    if not any(old for _, old, _ in rows):
        return {}
    log = lakeio.read_table(spec.INGEST_LOG, lake=lake, columns=["ingest_id", "status"])
    published = set()
    if log is not None:
        published = {
            i
            for i, s in zip(log["ingest_id"].to_pylist(), log["status"].to_pylist(), strict=True)
            if s == "published"
        }
    young = {i for i, old, _ in rows if not old}
    orphans: dict[str, int] = {}
    for ingest_id, _old, n in rows:
        if ingest_id in published or ingest_id in young:
            continue
        orphans[ingest_id] = orphans.get(ingest_id, 0) + n
    return orphans


def sweep(
    *,
    lake: str | None = None,
    grace_hours: float = DEFAULT_GRACE_HOURS,
    dry_run: bool = True,
    now: float | None = None,
) -> SweepReport:
    """Remove what failed attempts leave behind, older than ``grace_hours``.

    * rows of attempts that never became published (a crash between append and
      commit point, a failure after appending): invisible to every view, deleted;
    * ``<lake>/_staging/<ingest_id>/`` folders of killed runs;
    * ``.catalog.duckdb.<pid>.tmp`` files of killed publishes;
    * quarantine copies of a file other than its latest attempt's.

    Everything younger than the grace period is kept: it may be an attempt in
    flight on another worker. ``dry_run=True`` (the default) only reports.
    """
    import time
    from pathlib import Path

    if not grace_hours >= 0:
        raise SpecError(f"grace_hours must be >= 0, got {grace_hours!r}")
    now = time.time() if now is None else now
    cutoff = now - grace_hours * 3600.0
    report = SweepReport(dry_run=dry_run, grace_hours=grace_hours)
    root = spec.lake_root(lake)
    for table in spec.DATA_TABLES:
        if not lakeio.table_exists(table, lake=lake):
            continue
        orphans = _orphan_attempts(table, lake=lake, cutoff_s=cutoff)
        if not orphans:
            continue
        report.orphan_rows[table] = sum(orphans.values())
        report.orphan_attempts = sorted(set(report.orphan_attempts) | set(orphans))
        if not dry_run:
            lakeio.delete_attempts(table, ingest_ids=sorted(orphans), lake=lake)
    staging = storage.join(root, "_staging")
    by_attempt: dict[str, float] = {}
    for obj in storage.list_files(staging):
        attempt = obj.uri[len(staging) :].strip("/").split("/", 1)[0]
        by_attempt[attempt] = max(by_attempt.get(attempt, 0.0), obj.mtime)
    for attempt, mtime in sorted(by_attempt.items()):
        if mtime < cutoff:
            report.staging_dirs.append(storage.join(staging, attempt))
    if not spec.is_remote(root):
        catalog = Path(spec.catalog_path(lake))
        for tmp in sorted(catalog.parent.glob(f".{catalog.name}.*.tmp")):
            if tmp.stat().st_mtime < cutoff:
                report.catalog_temp_files.append(str(tmp))
    report.quarantine_copies = _stale_quarantine_copies(root, lake=lake, cutoff_s=cutoff)
    if not dry_run:
        for uri in (*report.staging_dirs, *report.quarantine_copies):
            storage.remove_tree(uri)
        for path in report.catalog_temp_files:
            Path(path).unlink(missing_ok=True)
    return report


def _stale_quarantine_copies(root: str, *, lake: str | None, cutoff_s: float) -> list[str]:
    """Quarantine folders of a file other than its latest logged attempt's."""
    quarantine = storage.join(root, spec.QUARANTINE_DIR)
    copies: dict[str, dict[str, float]] = {}
    for obj in storage.list_files(quarantine):
        parts = obj.uri[len(quarantine) :].strip("/").split("/")
        if len(parts) < 3:
            continue
        file_id, attempt = parts[0], parts[1]
        seen = copies.setdefault(file_id, {})
        seen[attempt] = max(seen.get(attempt, 0.0), obj.mtime)
    latest = {
        row["file_id"]: row["ingest_id"] for row in lakeio.latest_attempts(lake=lake).to_pylist()
    }
    stale = []
    for file_id, attempts in sorted(copies.items()):
        keep = latest.get(file_id)
        if keep not in attempts:  # none is the latest: keep the newest copy
            keep = max(attempts, key=lambda a: attempts[a])
        for attempt, mtime in sorted(attempts.items()):
            if attempt != keep and mtime < cutoff_s:
                stale.append(storage.join(quarantine, file_id, attempt))
    return stale
