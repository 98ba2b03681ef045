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
from transforms.errors import InvalidArgument, LakeError, SpecError
from transforms.lake import delta as lakeio

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

log = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\{\{\s*source\s*\}\}")

#: View build order: ``published`` first, every data view joins on it.
VIEW_ORDER = ("ingest_log", "published", *spec.DATA_TABLES)


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
        for table in spec.DATA_TABLES:
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
        if table == spec.INGEST_LOG:
            return (
                "(SELECT NULL::VARCHAR AS file_id, NULL::VARCHAR AS ingest_id, "
                "NULL::VARCHAR AS status, NULL::VARCHAR AS transform_version, "
                "NULL::VARCHAR AS source_path, NULL::VARCHAR AS file_name, "
                "NULL::TIMESTAMPTZ AS finished_at, NULL::BIGINT AS log_seq WHERE false)"
            )
        return "(SELECT NULL::VARCHAR AS file_id, NULL::VARCHAR AS ingest_id WHERE false)"
    files = ", ".join(sql_literal(lakeio.local_path(u)) for u in snap.uris)
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
        # The files the views read: the only files a read-only connection may open.
        con.execute("CREATE TABLE _catalog_files (table_name VARCHAR, path VARCHAR)")
        listed = [(t, lakeio.local_path(u)) for t, snap in cut.items() for u in snap.uris]
        if listed:
            con.executemany("INSERT INTO _catalog_files VALUES (?, ?)", listed)
    finally:
        con.close()
    tmp.replace(target)
    return PublishResult(catalog=target, versions=versions, files=files)


#: The catalog's table listing every data file its views read.
FILES_TABLE: Final = "_catalog_files"

#: Statement types a read-only query may hold (``neurocyte sql``): queries only. COPY,
#: EXPORT, ATTACH, INSTALL/LOAD, SET and every write are refused before they run.
READ_ONLY_STATEMENTS: Final = frozenset({"SELECT", "EXPLAIN", "PRAGMA", "CALL"})


def connect(*, lake: str | None = None, read_only: bool = True) -> DuckDBPyConnection:
    """Open the published catalog (read-only by default, as analysts should).

    A read-only connection cannot reach the file system beyond the catalog and the
    data files its views read (the list publishing stored in ``_catalog_files``):
    ``enable_external_access`` is off with exactly those files in ``allowed_paths``,
    extensions are neither installed nor loaded, and the configuration is then
    locked, so a query cannot switch any of it back. ``read_text('/etc/passwd')``,
    ``COPY ... TO``, ``ATTACH``, ``INSTALL`` all fail. DuckDB's allowed paths are
    allowed for writing too, so :func:`check_read_only` additionally refuses every
    statement but a query (``neurocyte sql`` applies it).
    """
    import duckdb

    path = Path(spec.catalog_path(lake))
    if not path.is_file():
        raise LakeError(f"no catalog at {path}: run `neurocyte publish` (or an ingest) first")
    if not read_only:
        return duckdb.connect(str(path), read_only=False)
    con = duckdb.connect(
        str(path),
        read_only=True,
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
        },
    )
    try:
        _lock_down(con, lake=lake)
    except BaseException:
        con.close()
        raise
    return con


def _lock_down(con: DuckDBPyConnection, *, lake: str | None) -> None:
    import duckdb

    from transforms.lake import storage

    root = spec.lake_root(lake)
    locked, external = con.execute(
        "SELECT current_setting('lock_configuration'), current_setting('enable_external_access')"
    ).fetchall()[0]
    if locked:
        # DuckDB shares one database instance between the connections of a process to
        # one file, settings included: an earlier connect() locked it down already.
        if external:
            raise LakeError("the catalog is open with external access in this process")
        return
    if con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [FILES_TABLE]
    ).fetchall()[0][0]:
        rows = con.execute("SELECT DISTINCT path FROM _catalog_files").fetchall()
        allowed = sorted(str(r[0]) for r in rows)
    else:  # a catalog published before the list existed: its lake's files
        allowed = sorted(
            {lakeio.local_path(u) for t in spec.ALL_TABLES for u in _table_files(t, lake=lake)}
        )
    if spec.is_remote(root):
        storage.require_httpfs(con)  # views over s3:// read through it: load before locking
    try:
        con.execute("SET allowed_paths = ?", [allowed])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        raise LakeError(f"cannot open the catalog read-only: {exc}") from exc


def _table_files(table: str, *, lake: str | None) -> list[str]:
    if not lakeio.table_exists(table, lake=lake):
        return []
    return list(lakeio.snapshot_files(table, lake=lake)[1])


def check_read_only(con: DuckDBPyConnection, query: str) -> None:
    """Refuse ``query`` unless every statement in it only reads (:data:`READ_ONLY_STATEMENTS`).

    Raises
    ------
    InvalidArgument
        Naming the first statement of another kind (``COPY``, ``ATTACH``, ``SET`` …).
    """
    import duckdb

    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise InvalidArgument(f"cannot parse the query: {exc}") from exc
    for st in statements:
        kind = str(st.type).rsplit(".", 1)[-1]
        if kind not in READ_ONLY_STATEMENTS:
            raise InvalidArgument(
                f"the catalog is read-only: {kind} statements are refused "
                f"(allowed: {', '.join(sorted(READ_ONLY_STATEMENTS))})"
            )
