"""Publish the lake as a DuckDB catalog file of views over the Delta snapshots.

Each view in ``sql/`` reads exactly the Parquet files of its table's current
Delta snapshot (pinned at publish time), so the catalog opens with plain
DuckDB — Python or CLI, offline, no extension — and every query in one
catalog sees one consistent snapshot. Publishing again swaps in a new catalog
file atomically.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from transforms import spec
from transforms.errors import LakeError, SpecError
from transforms.lake import delta as lakeio

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

log = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\{\{\s*source\s*\}\}")

#: View build order: ``curation_log`` and ``excluded`` (the curators' exclusions) and
#: ``published`` first: every data view joins on both.
VIEW_ORDER = ("ingest_log", spec.CURATION_LOG, "excluded", "published", *spec.DATA_TABLES)
#: Views of other views (no ``{{ source }}``), in VIEW_ORDER.
_DERIVED_VIEWS: Final = frozenset({"excluded"})


def sql_dir() -> Path:
    return spec.resource_dir("sql")


def sql_literal(text: str) -> str:
    """A SQL string literal; the only way a value enters generated SQL."""
    if "\x00" in text:
        raise SpecError("NUL byte in a SQL literal")
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class TableSnapshot:
    """One table as a catalog pins it: Delta version, data files, schema columns.

    ``version`` is -1 for a table that does not exist yet.
    """

    version: int
    uris: tuple[str, ...]
    columns: tuple[str, ...]


#: Tries at a consistent cut before publishing gives up (a lake under constant load).
CUT_ATTEMPTS: Final = 20


def _snapshot(table: str, *, lake: str | None) -> TableSnapshot:
    if not lakeio.table_exists(table, lake=lake):
        return TableSnapshot(-1, (), ())
    version, uris = lakeio.snapshot_files(table, lake=lake)
    cols = tuple(lakeio.table_columns(table, lake=lake)) if table == spec.INGEST_LOG else ()
    return TableSnapshot(version, tuple(uris), cols)


def consistent_cut(*, lake: str | None = None) -> dict[str, TableSnapshot]:
    """Snapshots of every table such that the data hold every row the log publishes.

    The log is read first, then the data tables, then the log's version again. An
    attempt's rows are appended before its ``published`` log row, and rows are only
    pruned after a newer attempt of the same file has been logged. So if the log
    did not move while the data were read, the data hold every row of every attempt
    that log snapshot names as latest; if it moved, the cut is taken again. No
    clock is involved, only Delta versions.

    Raises
    ------
    LakeError
        If the log moved during each of :data:`CUT_ATTEMPTS` tries.
    """
    delay = 0.02
    for _ in range(CUT_ATTEMPTS):
        log = _snapshot(spec.INGEST_LOG, lake=lake)
        cut = {spec.INGEST_LOG: log}
        for table in (*spec.DATA_TABLES, spec.CURATION_LOG):
            cut[table] = _snapshot(table, lake=lake)
        after = lakeio.table_version(spec.INGEST_LOG, lake=lake)
        if after == log.version:
            return cut
        time.sleep(delay)
        delay = min(2 * delay, 1.0)
    raise LakeError(
        f"no consistent snapshot of the lake in {CUT_ATTEMPTS} tries: ingest_log kept "
        "changing while the tables were read; publish again when the lake is quieter"
    )


def _source_expr(table: str, snap: TableSnapshot) -> str:
    """``read_parquet([...])`` over a table's pinned snapshot."""
    if snap.version < 0 or not snap.uris:
        if table == spec.CURATION_LOG:
            from transforms.lake.curation import empty_source_sql

            return empty_source_sql()
        if table == spec.INGEST_LOG:
            return (
                "(SELECT NULL::VARCHAR AS file_id, NULL::VARCHAR AS ingest_id, "
                "NULL::VARCHAR AS status, NULL::VARCHAR AS transform_version, "
                "NULL::VARCHAR AS source_path, NULL::VARCHAR AS file_name, "
                "NULL::TIMESTAMPTZ AS finished_at, NULL::BIGINT AS log_seq WHERE false)"
            )
        # well and sweep_number: the columns the views' curation ANTI JOIN names
        return (
            "(SELECT NULL::VARCHAR AS file_id, NULL::VARCHAR AS ingest_id, "
            "NULL::VARCHAR AS well, NULL::BIGINT AS sweep_number WHERE false)"
        )
    files = ", ".join(sql_literal(lakeio.local_path(u)) for u in snap.uris)
    if table == spec.CURATION_LOG:
        return f"read_parquet([{files}], union_by_name = true)"
    if table == spec.INGEST_LOG:
        source = f"read_parquet([{files}], union_by_name = true)"
        if "log_seq" not in snap.columns:  # a log written before the column existed
            source = f"(SELECT *, NULL::BIGINT AS log_seq FROM {source})"  # noqa: S608
        return source
    hive_types = ", ".join(f"{sql_literal(c)}: VARCHAR" for c in spec.PARTITION_COLUMNS)
    return (
        f"read_parquet([{files}], hive_partitioning = true, "
        f"hive_types = {{{hive_types}}}, union_by_name = true)"
    )


def render_view(name: str, cut: dict[str, TableSnapshot]) -> str:
    """The ``CREATE VIEW`` statement of ``sql/<name>.sql`` over the snapshots of ``cut``."""
    path = sql_dir() / f"{name}.sql"
    if not path.is_file():
        raise LakeError(f"no view definition {path}")
    if name in _DERIVED_VIEWS:
        return path.read_text(encoding="utf-8")
    table = spec.INGEST_LOG if name == "published" else name
    source = _source_expr(table, cut[table])
    text = path.read_text(encoding="utf-8")
    if not _PLACEHOLDER.search(text):
        raise LakeError(f"{path}: no {{{{ source }}}} placeholder")
    return _PLACEHOLDER.sub(lambda _m: source, text)


@dataclass(frozen=True)
class PublishResult:
    catalog: Path
    versions: dict[str, int]
    files: dict[str, int]


def publish(*, lake: str | None = None) -> PublishResult:
    """(Re)create the catalog (``<lake>/catalog.duckdb`` or ``$NEUROCYTE_CATALOG``).

    One view per published table. For an ``s3://`` lake the views read the
    snapshot's Parquet objects through DuckDB's ``httpfs`` extension, which
    must be installed (it is never downloaded here); readers configure their
    own S3 credentials (``CREATE SECRET``), the catalog holds none.

    Every view reads one consistent cut of the lake (:func:`consistent_cut`), so a
    replacement committed while publishing never shows a file half or not at all.
    The new catalog is written beside the old one and renamed over it, so a
    reader never opens a half-built catalog.
    """
    import duckdb

    from transforms.lake import storage

    root = spec.lake_root(lake)
    # A remote lake's catalog is a local file ($NEUROCYTE_CATALOG) whose views
    # read s3:// Parquet through DuckDB's httpfs extension: checked first, so
    # a host without it gets a clear CatalogUnavailable and no partial file.
    target = Path(spec.catalog_path(lake))
    if spec.is_remote(root):
        storage.require_httpfs(duckdb.connect())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    cut = consistent_cut(lake=lake)
    versions = {t: s.version for t, s in cut.items()}
    files = {t: len(s.uris) for t, s in cut.items()}
    con = duckdb.connect(str(tmp))
    try:
        if spec.is_remote(root):
            storage.require_httpfs(con)
        for name in VIEW_ORDER:
            con.execute(render_view(name, cut))
        for path in sorted((sql_dir() / "convenience").glob("*.sql")):
            # Views over the views above; one whose tables hold no data yet (so
            # have no columns) is left out until a later publish.
            try:
                con.execute(path.read_text(encoding="utf-8"))
            except duckdb.BinderException as exc:
                log.info("convenience view %s skipped: %s", path.stem, exc)
        con.execute(
            "CREATE TABLE _catalog (view_name VARCHAR, delta_version BIGINT, n_files BIGINT, "
            "published_at TIMESTAMPTZ, lake VARCHAR)"
        )
        now = datetime.now(UTC)
        con.executemany(
            "INSERT INTO _catalog VALUES (?, ?, ?, ?, ?)",
            [(n, versions[n], files[n], now, root) for n in versions],
        )
    finally:
        con.close()
    tmp.replace(target)
    return PublishResult(catalog=target, versions=versions, files=files)


def connect(*, lake: str | None = None, read_only: bool = True) -> DuckDBPyConnection:
    """Open the published catalog (read-only by default, as analysts should)."""
    import duckdb

    path = Path(spec.catalog_path(lake))
    if not path.is_file():
        raise LakeError(f"no catalog at {path}: run `neurocyte publish` (or an ingest) first")
    return duckdb.connect(str(path), read_only=read_only)
