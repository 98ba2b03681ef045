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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from transforms import spec
from transforms.errors import LakeError, SpecError
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


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _source_expr(table: str, *, lake: str | None) -> tuple[str, int, int]:
    """``read_parquet([...])`` over the table's snapshot, its version and file count."""
    if not lakeio.table_exists(table, lake=lake):
        empty = "(SELECT NULL::VARCHAR AS file_id, NULL::VARCHAR AS ingest_id WHERE false)"
        if table == spec.INGEST_LOG:
            empty = (
                "(SELECT NULL::VARCHAR AS file_id, NULL::VARCHAR AS ingest_id, "
                "NULL::VARCHAR AS status, NULL::VARCHAR AS transform_version, "
                "NULL::VARCHAR AS source_path, NULL::VARCHAR AS file_name, "
                "NULL::TIMESTAMPTZ AS finished_at, NULL::BIGINT AS log_seq WHERE false)"
            )
        return empty, -1, 0
    version, uris = lakeio.snapshot_files(table, lake=lake)
    if not uris:
        return (
            "(SELECT NULL::VARCHAR AS file_id, NULL::VARCHAR AS ingest_id WHERE false)",
            version,
            0,
        )
    files = ", ".join(sql_literal(_local_path(u)) for u in uris)
    if table == spec.INGEST_LOG:
        source = f"read_parquet([{files}], union_by_name = true)"
        if "log_seq" not in lakeio.table_columns(table, lake=lake):  # a log older than it
            source = f"(SELECT *, NULL::BIGINT AS log_seq FROM {source})"  # noqa: S608
        return source, version, len(uris)
    hive_types = ", ".join(f"{sql_literal(c)}: VARCHAR" for c in spec.PARTITION_COLUMNS)
    return (
        f"read_parquet([{files}], hive_partitioning = true, "
        f"hive_types = {{{hive_types}}}, union_by_name = true)",
        version,
        len(uris),
    )


def render_view(name: str, *, lake: str | None = None) -> tuple[str, int, int]:
    """The ``CREATE VIEW`` statement of ``sql/<name>.sql`` for the current snapshot."""
    path = sql_dir() / f"{name}.sql"
    if not path.is_file():
        raise LakeError(f"no view definition {path}")
    table = spec.INGEST_LOG if name == "published" else name
    source, version, n_files = _source_expr(table, lake=lake)
    text = path.read_text(encoding="utf-8")
    if not _PLACEHOLDER.search(text):
        raise LakeError(f"{path}: no {{{{ source }}}} placeholder")
    return _PLACEHOLDER.sub(lambda _m: source, text), version, n_files


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
    versions: dict[str, int] = {}
    files: dict[str, int] = {}
    con = duckdb.connect(str(tmp))
    try:
        if spec.is_remote(root):
            storage.require_httpfs(con)
        for name in VIEW_ORDER:
            statement, version, n_files = render_view(name, lake=lake)
            con.execute(statement)
            if name != "published":
                versions[name], files[name] = version, n_files
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
