"""Rows of ``mea_vendor_metrics`` for one vendor metrics export (Axion NMT CSV).

One row per well (or, from a per-electrode block, per electrode) and metric, as the
vendor's software computed it, with the export's settings kept. Partitions follow
the MEA rule: the plate map beside the file (the same search as for a spike list),
else the treatments the export names, else the landing folder's condition.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from transforms import formats, spec
from transforms.errors import SpecError
from transforms.formats.platemap import PlateMap, WellAssignment, treatment_condition
from transforms.lake.provenance import with_provenance
from transforms.pipeline.decode_mea import find_plate_map, well_partitions
from transforms.pipeline.landing import Target
from transforms.recording.plate import PlateLayout, layout_for_plate_name, layout_for_wells

VENDOR_METRICS_SCHEMA = pa.schema(
    [
        pa.field("well", pa.string(), nullable=False),
        pa.field("electrode", pa.string()),
        pa.field("level", pa.string(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("metric_label", pa.string(), nullable=False),
        pa.field("unit", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("treatment", pa.string()),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("file_name", pa.string(), nullable=False),
        pa.field("file_size_bytes", pa.int64(), nullable=False),
        pa.field("source_kind", pa.string(), nullable=False),
        pa.field("recorded_at", pa.timestamp("us")),
        pa.field("recording_name", pa.string()),
        pa.field("plate_sn", pa.string()),
        pa.field("plate_map", pa.string()),
        pa.field("settings_json", pa.string()),
    ]
)

#: Typed header values with a column of their own (the rest go to settings_json).
_OWN_COLUMNS = frozenset({"recorded_at", "recording_name", "plate_serial"})


def _layout(plate_type: str | None, wells: tuple[str, ...]) -> PlateLayout:
    layout = layout_for_plate_name(plate_type) if plate_type else None
    if layout is not None and set(wells) <= set(layout.wells):
        return layout
    for n in (12, 24, 48, 96):
        candidate = layout_for_wells(n)
        if set(wells) <= set(candidate.wells):
            return candidate
    raise SpecError(f"wells {', '.join(wells[:5])}... fit no standard plate")


def decode_vendor_metrics(
    source: spec.SourceFile,
    *,
    target: Target,
    ingest_id: str,
    kind: str,
    plate_map_path: Any = None,
) -> tuple[str, dict[str, pa.Table]]:
    """Read a vendor metrics export and shape its ``mea_vendor_metrics`` rows."""
    from transforms.formats.platemap import read_plate_map

    path = source.local_path
    nm = formats.read_vendor_metrics(path, kind=kind)
    meta = nm.metadata
    layout = _layout(meta.get("plate_type_text"), nm.wells)
    map_path = plate_map_path or find_plate_map(path)
    plate_map = read_plate_map(map_path, layout=layout) if map_path else None
    if plate_map is None and nm.treatments:
        plate_map = PlateMap(
            source=path.name,
            layout=layout,
            wells={
                w: WellAssignment(w, treatment_condition(t, source=path.name), None)
                for w, t in nm.treatments.items()
                if treatment_condition(t, source=path.name)
            },
            metadata={},
        )
    parts = well_partitions(layout, target, plate_map, source=path.name, wells=nm.wells)
    plate_sn = (plate_map.metadata.get("plate_sn") if plate_map else None) or meta.get(
        "plate_serial"
    )
    rest = {k: v for k, v in meta.items() if k not in _OWN_COLUMNS and v is not None}
    rest["delimiter"] = {",": "comma", "\t": "tab", ";": "semicolon"}[nm.delimiter]
    rest["blocks"] = list(nm.blocks)
    settings_json = json.dumps(rest, sort_keys=True, default=str, ensure_ascii=False)
    map_name = map_path.name if map_path else (plate_map.source if plate_map else None)
    params = {"reader": kind}
    by_partition: dict[spec.Partition, list[dict[str, Any]]] = {}
    for r in nm.rows:
        by_partition.setdefault(parts[r.well], []).append(
            {
                "well": r.well,
                "electrode": r.electrode,
                "level": r.level,
                "category": r.category,
                "metric": r.metric,
                "metric_label": r.label,
                "unit": r.unit,
                "value": r.value,
                "treatment": nm.treatments.get(r.well),
                "source_path": source.uri,
                "file_name": source.name,
                "file_size_bytes": source.size_bytes,
                "source_kind": kind,
                "recorded_at": meta.get("recorded_at"),
                "recording_name": meta.get("recording_name"),
                "plate_sn": plate_sn,
                "plate_map": map_name,
                "settings_json": settings_json,
            }
        )
    tables = [
        with_provenance(
            pa.Table.from_pylist(rows, schema=VENDOR_METRICS_SCHEMA),
            file_id=source.file_id,
            ingest_id=ingest_id,
            partition=partition,
            params=params,
        )
        for partition, rows in by_partition.items()
    ]
    return kind, {spec.MEA_VENDOR_METRICS: pa.concat_tables(tables)}
