"""Export a published recording with its features, e.g. as NWB for DANDI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from transforms import spec
from transforms.errors import LakeError, SpecError
from transforms.lake.storage import readable_source
from transforms.lake.storage import sha256 as sha256_file

if TYPE_CHECKING:
    import duckdb

    from transforms.recording.plate import PlateLayout

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


#: Metadata keys ``export_plate_nwb`` accepts (see ``nwb_mea_export.export_mea_nwb``).
MEA_METADATA_KEYS = (
    "session_description",
    "session_id",
    "institution",
    "experimenter",
    "subject",
    "species",
    "sex",
    "age",
    "date_of_birth",
    "genotype",
    "strain",
)


def _plate_layout(plate_type: str | None, n_wells: int) -> PlateLayout:
    from transforms.recording.plate import PLATE_TYPES, layout_for_wells

    for layout in PLATE_TYPES.values():
        if plate_type in (layout.name, f"{layout.plate_type:#x}", str(layout.plate_type)):
            return layout
    return layout_for_wells(n_wells)


def export_plate_nwb(
    file_id: str,
    out: str | Path,
    *,
    lake: str | None = None,
    metadata: dict[str, str] | None = None,
    raw: bool = False,
) -> Path:
    """Write a published MEA plate as NWB: electrodes, Units, plate map, metrics, raw.

    Parameters
    ----------
    file_id
        The plate's file_id or a unique prefix (8+ hex digits).
    metadata
        Session and subject details (:data:`MEA_METADATA_KEYS`); the lab comes from
        the lake. DANDI needs ``subject``, ``species``, ``sex`` and ``age``.
    raw
        Also write the raw voltage as an ``ElectricalSeries``, read from the lake's
        raw archive when there is one, else from the original (checked against
        ``file_id``).

    Raises
    ------
    SpecError
        Unknown metadata keys, or no published plate with this ``file_id``.
    LakeError
        ``raw`` asked for and neither an archive nor the unchanged original exists.
    """
    from transforms import formats
    from transforms.formats.nwb_mea_export import export_mea_nwb
    from transforms.lake.catalog import connect

    meta = dict(metadata or {})
    unknown = sorted(set(meta) - set(MEA_METADATA_KEYS))
    if unknown:
        raise SpecError(f"unknown metadata {unknown}; known: {', '.join(MEA_METADATA_KEYS)}")
    con = connect(lake=lake, read_only=True)
    try:
        full = resolve_file_id(con, file_id, view="mea_recordings")
        found = con.execute("SELECT * FROM mea_recordings WHERE file_id = ? ORDER BY well", [full])
        names = [d[0] for d in found.description]
        rows = [dict(zip(names, r, strict=True)) for r in found.fetchall()]
        plate_map = con.sql(
            "SELECT well, condition AS treatment, dose, dose_units, lab, timepoint "
            "FROM mea_recordings WHERE file_id = $1 ORDER BY well",
            params=[full],
        ).to_arrow_table()
        spikes = con.sql(
            "SELECT electrode, time_s, amplitude_uv FROM mea_spikes WHERE file_id = $1 "
            "ORDER BY electrode, time_s",
            params=[full],
        ).to_arrow_table()
        wells = _features(con, "mea_well_metrics", full, "well")
        electrodes = _features(con, "mea_electrode_metrics", full, "electrode")
    finally:
        con.close()
    first = rows[0]
    layout = _plate_layout(first.get("plate_type"), int(first["n_wells"]))
    treatments = {str(r["well"]): str(r["condition"]) for r in rows}
    meta.setdefault("lab", str(first["lab"]))
    source: Any = None
    if raw:
        from transforms.serve.archive import archived_source

        path = archived_source(full, lake=lake)
        if path is None:
            path = readable_source(str(first["source_path"]), file_id=full)
            if not path.is_file() or sha256_file(path) != full:
                raise LakeError(
                    f"no raw archive of {full} and its original is gone or changed: {path}"
                )
        source = formats.open_continuous(path)
    try:
        if source is not None:
            listed = list(source.electrodes)
        else:
            named = (
                set(electrodes.column("electrode").to_pylist()) if electrodes.num_rows else set()
            )
            named |= set(spikes.column("electrode").to_pylist())
            listed = [e for e in layout.electrodes if e in named]
        return export_mea_nwb(
            out,
            file_id=full,
            layout=layout,
            electrodes=listed,
            treatments=treatments,
            spikes=spikes,
            plate_map=plate_map,
            well_metrics=wells,
            electrode_metrics=electrodes,
            recorded_at=first.get("recorded_at"),
            metadata=meta,
            raw=source,
        )
    finally:
        if source is not None and hasattr(source, "close"):
            source.close()


def export_nwb_any(
    file_id: str,
    out: str | Path,
    *,
    lake: str | None = None,
    metadata: dict[str, str] | None = None,
    raw: bool = False,
) -> Path:
    """NWB export of a published recording of either kind (patch clamp or MEA plate)."""
    from transforms.lake.catalog import connect

    con = connect(lake=lake, read_only=True)
    try:
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
        is_mea = False
        if "mea_recordings" in views:
            try:
                resolve_file_id(con, file_id, view="mea_recordings")
                is_mea = True
            except SpecError:
                is_mea = False
    finally:
        con.close()
    if is_mea:
        return export_plate_nwb(file_id, out, lake=lake, metadata=metadata, raw=raw)
    return export_recording_nwb(file_id, out, lake=lake)
