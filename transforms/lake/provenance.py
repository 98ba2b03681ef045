"""Provenance columns carried by every data row."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from transforms import spec

PROVENANCE_FIELDS = (
    pa.field("file_id", pa.string(), nullable=False),
    pa.field("ingest_id", pa.string(), nullable=False),
    pa.field("transform_version", pa.string(), nullable=False),
    pa.field("params_json", pa.string(), nullable=False),
)


def params_json(params: dict[str, Any]) -> str:
    """Canonical JSON of the parameters that produced a row (sorted keys)."""
    return json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))


def with_provenance(
    rows: pa.Table,
    *,
    file_id: str,
    ingest_id: str,
    partition: spec.Partition,
    params: dict[str, Any],
) -> pa.Table:
    """Prefix provenance columns and append the partition columns to ``rows``.

    ``timepoint_days`` (:func:`transforms.spec.timepoint_days`) follows the
    partition columns, so every data table can be ordered by time.
    """
    n = rows.num_rows
    front = {
        "file_id": pa.array([file_id] * n, pa.string()),
        "ingest_id": pa.array([ingest_id] * n, pa.string()),
        "transform_version": pa.array([spec.TRANSFORM_VERSION] * n, pa.string()),
        "params_json": pa.array([params_json(params)] * n, pa.string()),
    }
    out = pa.table(front)
    for name in rows.column_names:
        if name in out.column_names:  # a step's own params column: folded into ours
            continue
        out = out.append_column(rows.schema.field(name), rows[name])
    for col, value in partition.as_dict().items():
        out = out.append_column(
            pa.field(col, pa.string(), nullable=False), pa.array([value] * n, pa.string())
        )
    return out.append_column(
        pa.field(spec.TIMEPOINT_DAYS_COLUMN, pa.int32()),
        pa.array([partition.timepoint_days] * n, pa.int32()),
    )
