"""Export a published recording with its features, e.g. as NWB for DANDI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from transforms import spec
from transforms.errors import LakeError, SpecError
from transforms.lake.storage import sha256 as sha256_file

if TYPE_CHECKING:
    import duckdb

_PROVENANCE = ("file_id", "ingest_id", "transform_version", "params_json")
#: Recording columns handed to the NWB export as metadata (its keys).
_METADATA = (
    "cell_id",
    "subject",
    "notes",
    "lab",
    "condition",
    "timepoint",
    *spec.SUBJECT_FIELDS,
)


def resolve_file_id(
    con: duckdb.DuckDBPyConnection, prefix: str, *, view: str = "icephys_recordings"
) -> str:
    """The full file_id for a full id or a unique prefix of at least 8 hex digits."""
    if not re.fullmatch(r"[0-9a-f]{8,64}", prefix):
        raise SpecError(f"file_id must be 8-64 lowercase hex digits, got {prefix!r}")
    if view not in ("icephys_recordings", "mea_recordings"):
        raise SpecError(f"unknown view {view!r}")
    rows = con.execute(
        f"SELECT DISTINCT file_id FROM {view} WHERE starts_with(file_id, ?)",  # noqa: S608
        [prefix],
    ).fetchall()
    if not rows:
        raise SpecError(f"no published recording with file_id {prefix}")
    if len(rows) > 1:
        raise SpecError(f"file_id prefix {prefix} is ambiguous ({len(rows)} recordings)")
    return str(rows[0][0])


def _features(con: duckdb.DuckDBPyConnection, view: str, file_id: str, order: str) -> pa.Table:
    table: pa.Table = con.sql(
        f"SELECT * FROM {view} WHERE file_id = $1 ORDER BY {order}",  # noqa: S608
        params=[file_id],
    ).to_arrow_table()
    drop = [
        c
        for c in (*_PROVENANCE, *spec.PARTITION_COLUMNS, spec.TIMEPOINT_DAYS_COLUMN)
        if c in table.column_names
    ]
    return table.drop_columns(drop)


def export_recording_nwb(file_id: str, out: str | Path, *, lake: str | None = None) -> Path:
    """Write a published patch-clamp recording, its metadata and features as NWB.

    The source file is re-read (it must still hash to ``file_id``); the
    features are those published in the lake, so the NWB file carries exactly
    what analysts query.
    """
    from transforms.formats import read_icephys
    from transforms.formats.nwb_icephys_export import export_nwb
    from transforms.lake.catalog import connect
    from transforms.lake.storage import readable_source

    con = connect(lake=lake, read_only=True)
    try:
        full = resolve_file_id(con, file_id)
        # SELECT *: a lake written before a metadata column existed still exports
        found = con.execute("SELECT * FROM icephys_recordings WHERE file_id = ?", [full])
        names = [d[0] for d in found.description]
        rows = found.fetchall()
        if not rows:
            raise SpecError(f"no published patch-clamp recording with file_id {full}")
        row = dict(zip(names, rows[0], strict=True))
        source = readable_source(str(row["source_path"]), file_id=full)
        if not source.is_file():
            raise LakeError(f"source file of {full} is gone: {source}")
        if sha256_file(source) != full:
            raise LakeError(f"{source} changed since it was ingested (hash differs from file_id)")
        sweeps = _features(con, "icephys_sweeps", full, "sweep_number")
        spikes = _features(con, "icephys_spikes", full, "sweep_number, spike_index")
        cell = _features(con, "icephys_cell_features", full, "file_id")
    finally:
        con.close()
    metadata = {k: str(row[k]) for k in _METADATA if row.get(k)}
    return export_nwb(
        read_icephys(source),
        Path(out),
        file_id=full,
        metadata=metadata,
        sweeps=sweeps,
        spikes=spikes,
        cell=cell,
    )
