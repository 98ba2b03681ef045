"""Publish the lake as a DuckDB catalog file of views over the Delta snapshots.

Each view in ``sql/`` reads exactly the Parquet files of its table's current
Delta snapshot (pinned at publish time), so the catalog opens with plain
DuckDB — Python or CLI, offline, no extension — and every query in one
catalog sees one consistent snapshot. Publishing again swaps in a new catalog
file atomically.

The views of a local lake name their files relative to the catalog file and
resolve them through the catalog's macro ``neurocyte_catalog_dir()``
(``sql/catalog_dir.sql``), so a lake copied or moved with its catalog opens
anywhere: DuckDB itself resolves relative paths against the process's working
directory, never the database file's.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from transforms import spec
from transforms.errors import InvalidArgument, LakeError, SpecError

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

log = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\{\{\s*source\s*\}\}")

#: View build order: ``curation_log`` and ``excluded`` (the curators' exclusions) and
#: ``published`` first: every data view joins on both.
VIEW_ORDER = ("ingest_log", spec.CURATION_LOG, "excluded", "published", *spec.DATA_TABLES)
#: Views of other views (no ``{{ source }}``), in VIEW_ORDER.
_DERIVED_VIEWS: Final = frozenset({"excluded"})

#: The catalog's macro (``sql/<name>.sql``) giving its own directory, and the DuckDB
#: variable that overrides it (an ATTACHed catalog, a custom ``temp_directory``).
CATALOG_DIR_MACRO: Final = "catalog_dir"
CATALOG_DIR_VARIABLE: Final = "neurocyte_catalog_dir"

#: The catalog file is written in DuckDB 1.5's storage format, so analysts' DuckDB
#: CLIs and clients from 1.5 on open it too (the Python package writes 2.0's by default,
#: which 1.5 refuses); nothing in the views needs a newer one.
CATALOG_STORAGE_VERSION: Final = "v1.5.0"


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
    from transforms.lake import delta as lakeio  # pyarrow + deltalake: not for `neurocyte sql`

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
    from transforms.lake import delta as lakeio

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


def _file_list(uris: tuple[str, ...], *, base: Path | None) -> str:
    """The SQL list of a snapshot's files.

    With ``base`` (a local lake's catalog directory) every path is relative to it and
    prefixed at bind time by ``neurocyte_catalog_dir()``; otherwise the URIs as they
    are (an ``s3://`` lake).
    """
    from transforms.lake import delta as lakeio  # pyarrow + deltalake: publish only

    if base is None:
        return "[" + ", ".join(sql_literal(lakeio.local_path(u)) for u in uris) + "]"
    rel = (Path(os.path.relpath(lakeio.local_path(u), base)).as_posix() for u in uris)
    listed = ", ".join(sql_literal(r) for r in rel)
    return f"list_transform([{listed}], lambda p: neurocyte_catalog_dir() || p)"


def _source_expr(table: str, snap: TableSnapshot, *, base: Path | None = None) -> str:
    """``read_parquet([...])`` over a table's pinned snapshot (paths relative to ``base``)."""
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
    files = _file_list(snap.uris, base=base)
    if table == spec.CURATION_LOG:
        return f"read_parquet({files}, union_by_name = true)"
    if table == spec.INGEST_LOG:
        source = f"read_parquet({files}, union_by_name = true)"
        if "log_seq" not in snap.columns:  # a log written before the column existed
            source = f"(SELECT *, NULL::BIGINT AS log_seq FROM {source})"  # noqa: S608
        return source
    hive_types = ", ".join(f"{sql_literal(c)}: VARCHAR" for c in spec.PARTITION_COLUMNS)
    return (
        f"read_parquet({files}, hive_partitioning = true, "
        f"hive_types = {{{hive_types}}}, union_by_name = true)"
    )


def render_view(name: str, cut: dict[str, TableSnapshot], *, base: Path | None = None) -> str:
    """The ``CREATE VIEW`` statement of ``sql/<name>.sql`` over the snapshots of ``cut``.

    ``base``: the directory of the catalog the view goes into, for a local lake (its
    files are then named relative to it); None keeps absolute URIs.
    """
    path = sql_dir() / f"{name}.sql"
    if not path.is_file():
        raise LakeError(f"no view definition {path}")
    if name in _DERIVED_VIEWS:
        return path.read_text(encoding="utf-8")
    table = spec.INGEST_LOG if name == "published" else name
    source = _source_expr(table, cut[table], base=base)
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
    base = None if spec.is_remote(root) else target.parent.resolve()
    config: dict[str, str | bool | int | float | list[str]] = {
        "storage_compatibility_version": CATALOG_STORAGE_VERSION
    }
    con = duckdb.connect(str(tmp), config=config)
    try:
        if spec.is_remote(root):
            storage.require_httpfs(con)
        con.execute((sql_dir() / f"{CATALOG_DIR_MACRO}.sql").read_text(encoding="utf-8"))
        # The temp file's own directory is the catalog's: resolve through it while building.
        set_catalog_dir(con, target.parent)
        for name in VIEW_ORDER:
            con.execute(render_view(name, cut, base=base))
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
        # Local ones relative to the catalog's directory, as the views name them, so
        # a moved lake's connections allow the files at their new place.
        con.execute("CREATE TABLE _catalog_files (table_name VARCHAR, path VARCHAR)")
        listed = [(t, _listed_path(u, base=base)) for t, snap in cut.items() for u in snap.uris]
        if listed:
            con.executemany("INSERT INTO _catalog_files VALUES (?, ?)", listed)
    finally:
        con.close()
    tmp.replace(target)
    return PublishResult(catalog=target, versions=versions, files=files)


def _listed_path(uri: str, *, base: Path | None) -> str:
    from transforms.lake import delta as lakeio

    if base is None:
        return lakeio.local_path(uri)
    return Path(os.path.relpath(lakeio.local_path(uri), base)).as_posix()


def set_catalog_dir(con: DuckDBPyConnection, directory: Path) -> None:
    """Tell a connection which directory its catalog's views resolve their files from.

    Plain DuckDB finds it unaided (see ``sql/catalog_dir.sql``); this makes it
    explicit for connections that ATTACH a catalog or change ``temp_directory``.
    """
    con.execute(f"SET VARIABLE {CATALOG_DIR_VARIABLE} = ?", [str(directory.resolve())])


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
        con = duckdb.connect(str(path), read_only=False)
        set_catalog_dir(con, path.parent)
        return con
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
        set_catalog_dir(con, path.parent)
        _lock_down(con, lake=lake, catalog_dir=path.parent.resolve())
    except BaseException:
        con.close()
        raise
    return con


def _allowed(listed: str, catalog_dir: Path) -> list[str]:
    """The path strings a listed file is opened by: as listed (absolute, or a URI), or
    the catalog's directory joined to it as the views join it (and normalised)."""
    if "://" in listed or os.path.isabs(listed):
        return [listed]
    joined = f"{catalog_dir.as_posix().rstrip('/')}/{listed}"
    return [joined, os.path.normpath(joined)]


#: Connections of one process to one catalog file share a DuckDB instance and its
#: settings: the check-then-lock of :func:`_lock_down` runs one thread at a time.
_LOCK_DOWN = threading.Lock()


def _lock_down(con: DuckDBPyConnection, *, lake: str | None, catalog_dir: Path) -> None:
    with _LOCK_DOWN:
        _lock_down_once(con, lake=lake, catalog_dir=catalog_dir)


def _lock_down_once(con: DuckDBPyConnection, *, lake: str | None, catalog_dir: Path) -> None:
    import duckdb

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
        allowed = sorted({a for r in rows for a in _allowed(str(r[0]), catalog_dir)})
    else:  # a catalog published before the list existed: its lake's files
        from transforms.lake import delta as lakeio

        allowed = sorted(
            {lakeio.local_path(u) for t in spec.ALL_TABLES for u in _table_files(t, lake=lake)}
        )
    if spec.is_remote(root):
        from transforms.lake import storage  # pyarrow: only for a remote lake

        storage.require_httpfs(con)  # views over s3:// read through it: load before locking
    try:
        con.execute("SET allowed_paths = ?", [allowed])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        raise LakeError(f"cannot open the catalog read-only: {exc}") from exc


def _table_files(table: str, *, lake: str | None) -> list[str]:
    from transforms.lake import delta as lakeio

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
