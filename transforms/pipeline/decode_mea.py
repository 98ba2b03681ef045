"""Rows of the MEA tables for one plate recording (spike list, .raw, .spk or NWB).

Every MEA table is partitioned by the *well's* condition: a plate carries
several conditions, given by its plate map (AxIS experiment log or a plain
``well,condition`` CSV). Without a plate map every well takes the condition of
the landing folder (or the CLI flag).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from transforms import formats, spec, untrusted
from transforms.errors import InvalidArgument, SpecError
from transforms.formats.platemap import PlateMap
from transforms.lake.provenance import params_json
from transforms.pipeline.landing import Target
from transforms.recording.plate import PlateLayout, PlateSpikes
from transforms.untrusted import escape

if TYPE_CHECKING:
    from transforms.pipeline.paramset import ParameterSet

MEA_RECORDING_SCHEMA = pa.schema(
    [
        pa.field("well", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("file_name", pa.string(), nullable=False),
        pa.field("file_size_bytes", pa.int64(), nullable=False),
        pa.field("source_kind", pa.string(), nullable=False),
        pa.field("plate_type", pa.string(), nullable=False),
        pa.field("n_wells", pa.int32(), nullable=False),
        pa.field("n_electrodes", pa.int32(), nullable=False),
        pa.field("sampling_rate_hz", pa.float64()),
        pa.field("declared_duration_s", pa.float64()),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("last_spike_s", pa.float64()),
        pa.field("n_spikes", pa.int64(), nullable=False),
        pa.field("recorded_at", pa.timestamp("us")),
        pa.field("plate_sn", pa.string()),
        pa.field("dose", pa.float64()),
        pa.field("dose_units", pa.string()),
        pa.field("plate_map", pa.string()),
        pa.field("reader_qc_flags", pa.string()),
        pa.field("detection_params_json", pa.string()),
        pa.field("experiment_started_at", pa.timestamp("us")),
        pa.field("axis_version", pa.string()),
        pa.field("instrument", pa.string()),
        pa.field("instrument_serial", pa.string()),
        pa.field("voltage_scale_uv_per_count", pa.float64()),
        pa.field("detector_threshold", pa.float64()),
        pa.field("settings_json", pa.string()),
    ]
)

#: Flag of a well the recording names but a partial plate map does not (it takes
#: the landing folder's condition).
PLATE_MAP_MISSING_WELL = "plate_map_missing_well"

#: What a partial plate map does to a well it leaves out (``$NEUROCYTE_PARTIAL_PLATE_MAP``):
#: ``flag`` (the default) keeps the well with the landing folder's condition and flags
#: it :data:`PLATE_MAP_MISSING_WELL` on every row of ``mea_recordings``; ``refuse``
#: fails the file, naming the wells, so nothing is published under a guessed condition.
ENV_PARTIAL_PLATE_MAP = "NEUROCYTE_PARTIAL_PLATE_MAP"
PARTIAL_PLATE_MAP_MODES = ("flag", "refuse")


def partial_plate_map_mode(mode: str | None = None) -> str:
    """``mode``, else ``$NEUROCYTE_PARTIAL_PLATE_MAP``, else ``flag``; checked."""
    chosen = (mode or os.environ.get(ENV_PARTIAL_PLATE_MAP, "") or "flag").strip().lower()
    if chosen not in PARTIAL_PLATE_MAP_MODES:
        raise InvalidArgument(
            f"partial plate map mode must be one of {PARTIAL_PLATE_MAP_MODES}, got {chosen!r} "
            f"(${ENV_PARTIAL_PLATE_MAP})"
        )
    return chosen


@dataclass(frozen=True)
class WellGroup:
    """One part of a split plate: its wells and their data columns, in data order."""

    wells: tuple[str, ...]
    electrodes: tuple[str, ...]


def well_groups(
    electrodes: tuple[str, ...] | list[str], layout: PlateLayout, n_parts: int
) -> list[WellGroup]:
    """Split a continuous plate into ``n_parts`` well groups (some may be empty).

    Detection is bit-for-bit identical on a group and on the whole plate only
    when the group's data columns are whole filter lanes of the plate
    (:data:`~transforms.mea.iir.LANE_CHANNELS` consecutive columns): groups are
    therefore runs of data columns cut at lane boundaries that no well
    straddles, balanced by column count. A wiring that interleaves wells leaves
    fewer cuts (at worst one group: the whole plate). Wells of the layout with
    no data column join the first group (they still get their metric rows).
    """
    from transforms.mea.iir import LANE_CHANNELS

    if n_parts < 1:
        raise InvalidArgument(f"n_parts must be >= 1, got {n_parts}")
    n = len(electrodes)
    well_of = [e.split("_", 1)[0] for e in electrodes]
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, w in enumerate(well_of):
        first.setdefault(w, i)
        last[w] = i
    valid = [
        c
        for c in range(LANE_CHANNELS, n, LANE_CHANNELS)
        if not any(first[w] < c <= last[w] for w in first)
    ]
    cuts: list[int] = []
    for k in range(1, n_parts):
        if not valid:
            break
        best = min(valid, key=lambda c: (abs(c - k * n / n_parts), c))
        if best not in cuts and (not cuts or best > cuts[-1]):
            cuts.append(best)
    bounds = [0, *cuts, n]
    groups = []
    for a, b in itertools.pairwise(bounds):
        cols = tuple(electrodes[a:b])
        groups.append(WellGroup(tuple(dict.fromkeys(well_of[a:b])), cols))
    groups += [WellGroup((), ())] * (n_parts - len(groups))
    orphans = tuple(w for w in layout.wells if w not in first)
    if orphans:
        groups[0] = WellGroup(groups[0].wells + orphans, groups[0].electrodes)
    return groups


def find_plate_map(path: Path) -> Path | None:
    """A plate map beside the recording: ``<stem>.platemap.csv`` or one matching file.

    The folder is listed without following links; a matching entry that is a
    symbolic link is refused (:func:`transforms.untrusted.refusal`), never read.
    """
    own = path.with_name(path.name.split(".")[0] + ".platemap.csv")
    if os.path.islink(own):
        raise SpecError(f"{escape(path.name)}: plate map {untrusted.refusal(own)}")
    if own.is_file():
        return own
    names = ("explog", "experimentlog", "platemap", "plate_map", "plate-map")
    found: list[Path] = []
    try:
        with os.scandir(path.parent) as entries:
            listed = sorted(entries, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        listed = []
    for entry in listed:
        lower = entry.name.lower()
        if entry.name == path.name or lower.startswith("."):
            continue
        if not (any(k in lower for k in names) and lower.endswith((".csv", ".csv.gz"))):
            continue
        if entry.is_symlink():
            raise SpecError(f"{escape(path.name)}: plate map {untrusted.refusal(entry.path)}")
        if entry.is_file(follow_symlinks=False):
            found.append(Path(entry.path))
    if len(found) > 1:
        raise SpecError(
            f"{escape(path.name)}: several plate maps beside it "
            f"({', '.join(escape(p.name) for p in found)}); pass one with --plate-map"
        )
    return found[0] if found else None


def read_plate(
    path: Path,
    kind: str,
    *,
    part: tuple[int, int] | None = None,
    detection_profile: str = "default",
    detection_overrides: Mapping[str, Any] | None = None,
) -> PlateSpikes:
    """Decode a plate recording into spikes (detecting them for continuous data).

    Spike files go through the registry's :func:`~transforms.formats.read_plate`;
    continuous ones are opened with :func:`~transforms.formats.open_continuous` and
    their spikes detected here. ``part=(k, n)`` decodes only well group ``k`` of ``n``
    (see :func:`well_groups`) of a continuous plate (``.raw``, NWB); a spike list or
    ``.spk`` is not split: group 0 is the whole plate, the others are empty.
    ``detection_profile`` chooses the detector of continuous data
    (:func:`~transforms.mea.detect.profile_params`: ``default``, ``axis`` from the
    recording's declared settings, ``sensitive``); ``detection_overrides`` (a lab's
    ``[mea.detection]`` parameter set) replaces fields of the profile's parameters.
    Both are recorded in ``detection_params_json``.
    """
    access = formats.format_of(kind).access
    if access == "spikes":
        whole = formats.read_plate(path, kind=kind)
        if part is None or part[0] == 0:
            return whole
        return dataclasses.replace(whole, spikes=whole.spikes.slice(0, 0), wells=())
    if access != "continuous":
        raise SpecError(f"{path.name}: not an MEA recording ({kind})")
    from transforms.mea.detect import NOISE_METADATA_KEY, detect_spikes, profile_params

    f: Any = formats.open_continuous(path, kind=kind)
    meta_of = f.plate_metadata() if hasattr(f, "plate_metadata") else {}
    params = profile_params(detection_profile, metadata=meta_of, source=path.name)
    if detection_overrides:
        params = dataclasses.replace(params, **detection_overrides)
    wells = None
    if part is None:
        spikes = detect_spikes(f, params=params)
    else:
        group = well_groups(f.electrodes, f.layout, part[1])[part[0]]
        spikes = detect_spikes(f, params=params, electrodes=list(group.electrodes))
        wells = group.wells
    meta = spikes.schema.metadata or {}
    detection = {"profile": params.profile, "params": params.as_dict()}
    if NOISE_METADATA_KEY in meta:
        detection["noise_sigma_uv"] = json.loads(meta[NOISE_METADATA_KEY])
    return PlateSpikes(
        kind,
        spikes.replace_schema_metadata(None),
        f.layout,
        f.duration_s,
        f.duration_s,
        f.sampling_rate_hz,
        f.recorded_at,
        tuple(getattr(f, "flags", ())),
        detection,
        formats.embedded_plate_map(f),
        wells,
        named_wells=tuple(dict.fromkeys(e.split("_", 1)[0] for e in f.electrodes)),
        metadata=meta_of,
    )


def wells_with_rows(plate: PlateSpikes, plate_map: PlateMap | None) -> tuple[str, ...]:
    """The wells that get rows, in plate order.

    A well the recording names (spikes, well information, channel array) or the
    plate map lists; every well when the reader names none (``named_wells`` None).
    A well group of a split plate keeps only its own wells.
    """
    wells = plate.layout.wells
    if plate.named_wells is not None:
        named = set(plate.named_wells) | set(plate_map.wells if plate_map else ())
        wells = tuple(w for w in wells if w in named)
    if plate.wells is not None:
        mine = set(plate.wells)
        wells = tuple(w for w in wells if w in mine)
    return wells


#: Header metadata with a column of its own in ``mea_recordings``.
_HEADER_COLUMNS = frozenset(
    {
        "recorded_at",
        "experiment_started_at",
        "axis_version",
        "instrument",
        "instrument_serial",
        "plate_serial",
        "sampling_rate_hz",
        "voltage_scale_uv_per_count",
        "detector_threshold",
    }
)


def header_settings_json(meta: dict[str, Any]) -> str | None:
    """The header metadata without its own column, as sorted JSON (None if empty)."""
    rest = {k: v for k, v in meta.items() if k not in _HEADER_COLUMNS and v is not None}
    if not rest:
        return None
    return json.dumps(rest, sort_keys=True, default=str, ensure_ascii=False)


def well_partitions(
    layout: PlateLayout,
    target: Target,
    plate_map: PlateMap | None,
    *,
    source: str,
    wells: tuple[str, ...] | None = None,
) -> dict[str, spec.Partition]:
    """Partition of every well (or of ``wells``): lab from the target, condition/timepoint."""
    out = {}
    for well in layout.wells if wells is None else wells:
        assignment = plate_map.wells.get(well) if plate_map else None
        condition = assignment.condition if assignment else target.condition
        timepoint = (assignment.timepoint if assignment else None) or target.timepoint
        if not condition or not timepoint:
            missing = "condition" if not condition else "timepoint"
            raise SpecError(
                f"{source}: no {missing} for well {well}: give a plate map, a landing folder "
                "or an explicit value"
            )
        out[well] = spec.Partition.of(target.lab, condition, timepoint, source=source)
    return out


#: Rows of one shared block of a constant column (see :func:`constant_column`).
_CONSTANT_BLOCK_ROWS = 1 << 16


def constant_column(value: str, n: int) -> pa.ChunkedArray:
    """``n`` copies of ``value`` as a string column whose blocks share one buffer.

    A 10 M-spike plate repeats its ``params_json`` (hundreds of bytes) on every
    row: as separate strings that alone is gigabytes; here it is one block of
    :data:`_CONSTANT_BLOCK_ROWS` strings, referenced as often as needed (Parquet
    dictionary-encodes it on write).
    """
    block = pa.array([value] * min(n, _CONSTANT_BLOCK_ROWS), pa.string())
    full, rest = divmod(n, len(block)) if n else (0, 0)
    chunks = [block] * full + ([block.slice(0, rest)] if rest else [])
    return pa.chunked_array(chunks, pa.string())


def _per_well(
    rows: pa.Table,
    wells: pa.ChunkedArray | pa.Array,
    parts: dict[str, spec.Partition],
    *,
    file_id: str,
    ingest_id: str,
    params: dict[str, Any],
) -> pa.Table:
    """Provenance in front, the well's partition columns at the end (vectorised)."""
    n = rows.num_rows
    names = list(parts)
    codes = pc.index_in(wells, value_set=pa.array(names, pa.string()))
    if codes.null_count:
        stray = pc.unique(pc.filter(wells, pc.is_null(codes))).to_pylist()
        raise SpecError(f"rows of wells without a partition: {stray[:5]}")
    out = pa.table(
        {
            "file_id": constant_column(file_id, n),
            "ingest_id": constant_column(ingest_id, n),
            "transform_version": constant_column(spec.TRANSFORM_VERSION, n),
            "params_json": constant_column(params_json(params), n),
        }
    )
    for name in rows.column_names:
        if name in out.column_names:  # the metrics' own params_json: folded into ours
            continue
        out = out.append_column(rows.schema.field(name), rows[name])
    for col in spec.PARTITION_COLUMNS:
        values = pa.array([getattr(parts[w], col) for w in names], pa.string())
        out = out.append_column(pa.field(col, pa.string(), nullable=False), pc.take(values, codes))
    days = pa.array([parts[w].timepoint_days for w in names], pa.int32())
    return out.append_column(pa.field(spec.TIMEPOINT_DAYS_COLUMN, pa.int32()), pc.take(days, codes))


def decode_mea(
    source: spec.SourceFile,
    *,
    target: Target,
    ingest_id: str,
    kind: str,
    plate_map_path: Path | None = None,
    part: tuple[int, int] | None = None,
    parameter_set: ParameterSet | None = None,
    detection_profile: str = "default",
    partial_plate_map: str | None = None,
) -> tuple[str, dict[str, pa.Table]]:
    """Decode a plate, compute the Neural-Metric-Tool metrics, shape every MEA table.

    A well the recording names but its plate map (a CSV) leaves out is flagged, or
    fails the file, as ``partial_plate_map`` says (:func:`partial_plate_map_mode`).

    With ``part=(k, n)`` only well group ``k`` of ``n`` is decoded and its rows
    returned (metrics are per electrode / well, so a group computes alone);
    :func:`merge_part_tables` joins the groups' rows of one table into the rows
    of the whole plate. ``parameter_set`` (the lab's ``neurocyte.toml``) overrides the
    detection and metric defaults; ``params_json`` records the values applied and the set.
    """
    from transforms.formats.platemap import read_plate_map
    from transforms.mea.metrics import MetricParams, compute_metrics

    path, file_id = source.local_path, source.file_id
    # A lab's parameter set may name a profile ([mea.detection] profile = "sensitive")
    # and override fields of it; an explicit ``detection_profile`` argument wins.
    overrides = dict(parameter_set.detection) if parameter_set else {}
    profile = str(overrides.pop("profile", detection_profile))
    if detection_profile != "default":
        profile = detection_profile
    plate = read_plate(
        path, kind, part=part, detection_profile=profile, detection_overrides=overrides
    )
    map_path = plate_map_path or find_plate_map(path)
    plate_map = read_plate_map(map_path, layout=plate.layout) if map_path else None
    if plate_map is None and plate.embedded_map:
        # No CSV: use the treatments AxIS stored in the file itself.
        from transforms.formats.platemap import WellAssignment, treatment_condition

        plate_map = PlateMap(
            source=path.name,
            layout=plate.layout,
            wells={
                w: WellAssignment(w, treatment_condition(t, source=path.name), None)
                for w, t in plate.embedded_map.items()
                if treatment_condition(t, source=path.name)
            },
            metadata={},
        )
    rows_for = wells_with_rows(plate, plate_map if map_path else None)
    if map_path and plate_map is not None and partial_plate_map_mode(partial_plate_map) == "refuse":
        unlisted = [w for w in rows_for if w not in plate_map.wells]
        if unlisted:
            shown = ", ".join(unlisted[:12]) + (" ..." if len(unlisted) > 12 else "")
            raise SpecError(
                f"{path.name}: plate map {map_path.name} does not list {len(unlisted)} "
                f"well(s) the recording names ({shown}); refused "
                f"(${ENV_PARTIAL_PLATE_MAP}=refuse: list every well, or use 'flag')"
            )
    parts = well_partitions(plate.layout, target, plate_map, source=path.name, wells=rows_for)
    metrics = compute_metrics(
        plate.spikes,
        layout=plate.layout,
        duration_s=plate.duration_s,
        params=parameter_set.metric_params() if parameter_set else MetricParams(),
    )
    params: dict[str, Any] = {"reader": kind, "metrics": metrics.params.as_dict()}
    if plate.detection:
        params["detection"] = plate.detection["params"]
    if parameter_set is not None:
        params["parameter_set"] = parameter_set.provenance(modality="mea")

    spikes = plate.spikes
    counts = (
        {item["values"]: item["counts"] for item in pc.value_counts(spikes["well"]).to_pylist()}
        if spikes.num_rows
        else {}
    )
    last = pc.max(spikes["time_s"]).as_py() if spikes.num_rows else None
    rec_rows = []
    meta = plate.metadata
    plate_sn = (plate_map.metadata.get("plate_sn") if plate_map else None) or meta.get(
        "plate_serial"
    )
    settings_json = header_settings_json(meta)
    for well in rows_for:
        assignment = plate_map.wells.get(well) if plate_map else None
        flags = list(plate.qc_flags)
        if map_path and assignment is None:
            flags.append(PLATE_MAP_MISSING_WELL)
        rec_rows.append(
            {
                "well": well,
                "source_path": source.uri,
                "file_name": source.name,
                "file_size_bytes": source.size_bytes,
                "source_kind": kind,
                "plate_type": plate.layout.name,
                "n_wells": plate.layout.n_wells,
                "n_electrodes": plate.layout.electrodes_per_well,
                "sampling_rate_hz": plate.sampling_rate_hz,
                "declared_duration_s": plate.declared_duration_s,
                "duration_s": plate.duration_s,
                "last_spike_s": last,
                "n_spikes": int(counts.get(well, 0)),
                "recorded_at": plate.recorded_at,
                "plate_sn": plate_sn,
                "dose": assignment.dose if assignment else None,
                "dose_units": assignment.units if assignment else None,
                "plate_map": map_path.name
                if map_path
                else (plate_map.source if plate_map else None),
                "reader_qc_flags": ";".join(flags),
                "detection_params_json": json.dumps(plate.detection, sort_keys=True)
                if plate.detection
                else None,
                "experiment_started_at": meta.get("experiment_started_at"),
                "axis_version": meta.get("axis_version"),
                "instrument": meta.get("instrument"),
                "instrument_serial": meta.get("instrument_serial"),
                "voltage_scale_uv_per_count": meta.get("voltage_scale_uv_per_count"),
                "detector_threshold": meta.get("detector_threshold"),
                "settings_json": settings_json,
            }
        )
    recordings = pa.Table.from_pylist(rec_rows, schema=MEA_RECORDING_SCHEMA)

    def shape(rows: pa.Table) -> pa.Table:
        return _per_well(
            rows, rows["well"], parts, file_id=file_id, ingest_id=ingest_id, params=params
        )

    electrode_metrics, well_metrics = metrics.electrode_metrics, metrics.well_metrics
    if rows_for != plate.layout.wells:  # a well group, or wells nothing names
        mine = pa.array(rows_for, pa.string())
        electrode_metrics = electrode_metrics.filter(pc.is_in(electrode_metrics["well"], mine))
        well_metrics = well_metrics.filter(pc.is_in(well_metrics["well"], mine))
    tables = {
        spec.MEA_RECORDINGS: shape(recordings),
        spec.MEA_SPIKES: shape(spikes),
        spec.MEA_ELECTRODE_METRICS: shape(electrode_metrics),
        spec.MEA_WELL_METRICS: shape(well_metrics),
        spec.MEA_BURSTS: shape(metrics.bursts),
        spec.MEA_NETWORK_BURSTS: shape(metrics.network_bursts),
    }
    return kind, tables


def merge_part_tables(name: str, parts: list[pa.Table]) -> pa.Table:
    """The rows of one table of a split plate: its well groups' rows together.

    Every MEA row is per well, electrode, spike or burst, so the groups' rows
    concatenate, except two plate-wide values of ``mea_recordings``:
    ``last_spike_s`` (the plate's last spike: the latest of the groups') and
    the noise levels in ``detection_params_json`` (every group's electrodes).
    """
    rows = pa.concat_tables(parts, promote_options="permissive")
    if name != spec.MEA_RECORDINGS or rows.num_rows == 0:
        return rows
    last = pc.max(rows["last_spike_s"]).as_py()
    i = rows.schema.get_field_index("last_spike_s")
    rows = rows.set_column(
        i, rows.schema.field(i), pa.array([last] * rows.num_rows, rows.schema.field(i).type)
    )
    docs = [json.loads(d) for d in rows["detection_params_json"].to_pylist() if d]
    if docs:
        merged = dict(docs[0])
        noise = {k: v for d in docs for k, v in (d.get("noise_sigma_uv") or {}).items()}
        if noise:
            merged["noise_sigma_uv"] = noise
        text = json.dumps(merged, sort_keys=True)
        i = rows.schema.get_field_index("detection_params_json")
        rows = rows.set_column(
            i, rows.schema.field(i), pa.array([text] * rows.num_rows, pa.string())
        )
    return rows
