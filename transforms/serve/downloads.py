"""Downloads: a catalog view filtered by facets, streamed as CSV or Parquet in batches.

The query runs in DuckDB and its result is read as Arrow record batches
(:data:`BATCH_ROWS` rows at a time), each encoded and handed to the response
before the next is fetched, so no download ever holds a whole table in memory.
View and column names come only from :data:`VIEWS` and the view's own schema;
every filter value is a DuckDB parameter.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

import pyarrow as pa

from transforms import spec
from transforms.errors import SpecError

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

#: Views one can download.
VIEWS: Final = frozenset(
    {
        "icephys_recordings",
        "icephys_sweeps",
        "icephys_spikes",
        "icephys_cell_features",
        "cells",
        "mea_recordings",
        "mea_spikes",
        "mea_electrode_metrics",
        "mea_well_metrics",
        "mea_bursts",
        "mea_network_bursts",
        "well_metrics_by_condition",
        "qc_summary",
        "curation_log",
        "excluded",
    }
)
#: Columns a download may be filtered by (when the view has them).
FILTER_COLUMNS: Final = (
    "file_id",
    "lab",
    "condition",
    "timepoint",
    "subject",
    "species",
    "protocol",
    "well",
)
#: Rows fetched, encoded and sent at a time.
BATCH_ROWS: Final = 50_000
#: Columns never sent (server paths stay on the server).
_PRIVATE: Final = ("source_path",)

Format = Literal["csv", "parquet"]


def _columns(con: DuckDBPyConnection, view: str) -> list[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
        "ORDER BY ordinal_position",
        [view],
    ).fetchall()
    return [r[0] for r in rows]


def query(
    con: DuckDBPyConnection, view: str, filters: Mapping[str, Sequence[str]]
) -> tuple[str, list[Any]]:
    """The SELECT (and its parameters) of a view filtered by facet values.

    Raises
    ------
    SpecError
        An unknown view, or a filter on a column the view lacks.
    """
    if view not in VIEWS:
        raise SpecError(f"unknown view {view!r}; downloadable: {', '.join(sorted(VIEWS))}")
    cols = _columns(con, view)
    if not cols:
        raise SpecError(f"view {view} is not in the catalog")
    where, params = [], []
    for col, values in filters.items():
        if not values:
            continue
        if col not in FILTER_COLUMNS:
            raise SpecError(f"cannot filter by {col!r}; filters: {', '.join(FILTER_COLUMNS)}")
        if col not in cols:
            raise SpecError(f"view {view} has no column {col}")
        if col == "file_id":
            for v in values:
                spec.check_file_id(v)
        where.append(f"list_contains(?::VARCHAR[], {col}::VARCHAR)")
        params.append(list(values))
    select = ", ".join(f'"{c}"' for c in cols if c not in _PRIVATE)
    sql = f"SELECT {select} FROM {view}"  # noqa: S608  (whitelisted names)
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql, params


def stream(
    con: DuckDBPyConnection,
    view: str,
    filters: Mapping[str, Sequence[str]],
    *,
    fmt: Format,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[bytes]:
    """The view's rows encoded as ``fmt``, one chunk per record batch.

    The query is checked before the first chunk (a bad filter raises here, not
    mid-download).
    """
    sql, params = query(con, view, filters)
    reader = con.sql(sql, params=params).to_arrow_reader(batch_rows)
    return _csv(reader) if fmt == "csv" else _parquet(reader)


def _csv(reader: pa.RecordBatchReader) -> Iterator[bytes]:
    import pyarrow.csv as pacsv

    header = True
    for batch in reader:
        buf = io.BytesIO()
        pacsv.write_csv(batch, buf, write_options=pacsv.WriteOptions(include_header=header))
        header = False
        yield buf.getvalue()
    if header:  # no rows: the header alone
        buf = io.BytesIO()
        pacsv.write_csv(reader.schema.empty_table(), buf)
        yield buf.getvalue()


class _Chunks(io.RawIOBase):
    """A write-only file whose written bytes are taken out chunk by chunk."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.parts.append(data)
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _parquet(reader: pa.RecordBatchReader) -> Iterator[bytes]:
    import pyarrow.parquet as pq

    sink = _Chunks()
    with pq.ParquetWriter(sink, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)  # one row group per batch
            chunk = sink.take()
            if chunk:
                yield chunk
    yield sink.take()
