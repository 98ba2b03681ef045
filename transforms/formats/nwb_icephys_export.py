"""NWB 2.x export of a patch-clamp recording and its feature tables, ready for DANDI.

The file holds:

* one ``CurrentClampSeries`` + ``CurrentClampStimulusSeries`` (or the
  voltage-clamp equivalents) per sweep, linked through the icephys metadata
  tables: ``IntracellularRecordingsTable`` (one row a sweep),
  ``SimultaneousRecordingsTable`` (one electrode, so one row each) and
  ``SequentialRecordingsTable`` (one row, ``stimulus_type`` = the protocol);
* the session and subject metadata;
* the feature tables (``sweeps``, ``spikes``, ``cell``) as ``DynamicTable``s in
  the processing module ``icephys_features``, each column described with its unit.

Traces are stored as float32 in mV / pA with ``conversion`` to volts / amperes,
so ``data * conversion`` is SI as NWB requires and float32 keeps 7 significant
digits, far beyond the 16-bit digitisers that produced them.

Metadata keys understood (all strings, all optional): ``subject``, ``species``,
``sex`` (M/F/O/U or male/female/other/unknown, default U), ``age`` (ISO 8601
duration, default ``P0D/``: "age unknown", unless ``date_of_birth`` is given),
``date_of_birth`` (ISO 8601), ``strain``, ``genotype``, ``cell_id``, ``electrode_description``,
``lab``, ``institution``, ``experimenter`` (``;``-separated), ``session_description``,
``session_id``, ``subject_description``, ``session_start_time`` (ISO 8601, used
only when the recording has no date), ``condition``, ``timepoint``, ``notes``.
Any other key is kept, as ``key: value`` lines, in the file's ``notes``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa

from transforms.errors import InvalidArgument, UnsupportedRecording
from transforms.recording.icephys import IcephysRecording, Sweep

#: Session start written when neither the recording nor the metadata has a date:
#: the Unix epoch, an obviously artificial value (nwbinspector reports it as
#: "may not be set to the true date", which is the truth).
FALLBACK_SESSION_START: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: Subject age written when the metadata gives none: ISO 8601 range "0 days or older".
UNKNOWN_AGE: Final = "P0D/"
FEATURES_MODULE: Final = "icephys_features"
#: Region column added to feature tables that carry a ``sweep_number`` column.
RECORDING_LINK: Final = "intracellular_recording"

_KNOWN_KEYS: Final = frozenset(
    {
        "subject",
        "species",
        "sex",
        "age",
        "strain",
        "genotype",
        "cell_id",
        "electrode_description",
        "lab",
        "institution",
        "experimenter",
        "session_description",
        "session_id",
        "session_start_time",
        "condition",
        "timepoint",
        "notes",
        "subject_description",
        "date_of_birth",
    }
)
#: Spellings of sex that NWB's M/F/U/O code stands for (DANDI accepts only the code).
_SEX_CODES: Final = {"m": "M", "male": "M", "f": "F", "female": "F", "u": "U", "unknown": "U"}
_SEX_CODES_OTHER: Final = {"o": "O", "other": "O"}
#: Column-name suffix -> unit, longest first so ``_mv_per_ms`` wins over ``_ms``.
_UNIT_SUFFIXES: Final = (
    ("_mv_per_ms", "mV/ms"),
    ("_v_per_s", "V/s"),
    ("_pa_per_s", "pA/s"),
    ("_hz_per_pa", "Hz/pA"),
    ("_mohm", "MOhm"),
    ("_gohm", "GOhm"),
    ("_ohm", "Ohm"),
    ("_mv", "mV"),
    ("_pa", "pA"),
    ("_na", "nA"),
    ("_pf", "pF"),
    ("_ns", "nS"),
    ("_khz", "kHz"),
    ("_hz", "Hz"),
    ("_ms", "ms"),
    ("_s", "s"),
    ("_pct", "%"),
    ("_percent", "%"),
)
_FEATURE_TABLE_DOCS: Final = {
    "sweeps": "Per-sweep features of the patch-clamp recording, one row a sweep.",
    "spikes": "Per-spike (action potential) features, one row a detected spike.",
    "cell": "Per-cell summary features of the patch-clamp recording.",
}


def _session_start(recording: IcephysRecording, metadata: dict[str, str]) -> datetime:
    when = recording.recorded_at
    if when is None and metadata.get("session_start_time"):
        try:
            when = datetime.fromisoformat(metadata["session_start_time"])
        except ValueError as exc:
            raise InvalidArgument(
                f"metadata session_start_time {metadata['session_start_time']!r} is not ISO 8601"
            ) from exc
    if when is None:
        return FALLBACK_SESSION_START
    # ABF stores wall-clock time without a zone; NWB requires one, UTC is the stated default.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _sex_code(value: str | None) -> str:
    """NWB's sex code (M/F/U/O) for a spelling labs use; ``U`` when not given."""
    if not value:
        return "U"
    key = value.strip().lower()
    return _SEX_CODES.get(key) or _SEX_CODES_OTHER.get(key) or value


def _date_of_birth(metadata: dict[str, str]) -> datetime | None:
    text = metadata.get("date_of_birth")
    if not text:
        return None
    try:
        born = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidArgument(f"metadata date_of_birth {text!r} is not ISO 8601") from exc
    # NWB requires a zone; a bare date is taken as UTC, as session times are
    return born if born.tzinfo is not None else born.replace(tzinfo=UTC)


def _unit_of(column: str) -> str:
    lower = column.lower()
    for suffix, unit in _UNIT_SUFFIXES:
        if lower.endswith(suffix):
            return unit
    return "dimensionless or not applicable"


def _column_description(field: pa.Field) -> str:
    meta = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
    text = meta.get("description") or field.name.replace("_", " ")
    unit = meta.get("unit") or _unit_of(field.name)
    return f"{text} (unit: {unit})"


def _column_values(column: pa.ChunkedArray, *, table: str, name: str) -> tuple[Any, bool]:
    """Arrow column -> (data for hdmf, ragged?). Nulls become NaN (numbers) or ''."""
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        rows = column.to_pylist()
        flat_type = kind.value_type
        if not (pa.types.is_integer(flat_type) or pa.types.is_floating(flat_type)):
            raise InvalidArgument(
                f"feature table {table!r}: list column {name!r} must hold numbers"
            )
        return [
            np.asarray([np.nan if v is None else v for v in (row or [])], dtype=np.float64)
            for row in rows
        ], True
    if pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        if column.null_count == 0:
            dtype = np.bool_ if pa.types.is_boolean(kind) else None
            return np.asarray(column.to_numpy(zero_copy_only=False), dtype=dtype), False
        # NaN is the only missing marker HDF5 numbers have, so nullable ints become float64.
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return np.asarray(values, dtype=np.float64), False
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        return ["" if v is None else str(v) for v in column.to_pylist()], False
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return ["" if v is None else v.isoformat() for v in column.to_pylist()], False
    raise InvalidArgument(f"feature table {table!r}: column {name!r} has unsupported type {kind}")


def _feature_table(
    name: str, table: pa.Table, *, recordings: Any, row_of_sweep: dict[int, int]
) -> Any:
    from hdmf.common import DynamicTable

    for reserved in ("id", RECORDING_LINK):
        if reserved in table.column_names:
            raise InvalidArgument(
                f"feature table {name!r}: a column named {reserved!r} clashes with the one "
                "export_nwb writes"
            )
    description = _FEATURE_TABLE_DOCS.get(name, f"Feature table {name}.")
    out = DynamicTable(name=name, description=description, id=list(range(table.num_rows)))
    for field in table.schema:
        data, ragged = _column_values(table.column(field.name), table=name, name=field.name)
        out.add_column(
            name=field.name, description=_column_description(field), data=data, index=ragged
        )
    if "sweep_number" in table.column_names:
        numbers = table.column("sweep_number").to_pylist()
        if all(n in row_of_sweep for n in numbers):
            # A region column lets NWB tools join features to the recorded sweeps.
            out.add_column(
                name=RECORDING_LINK,
                description="Row of the IntracellularRecordingsTable holding this sweep",
                data=[row_of_sweep[n] for n in numbers],
                table=recordings,
            )
    return out


def _series_pair(
    sweep: Sweep, electrode: Any, protocol: str, *, compress: bool
) -> tuple[Any, Any | None]:
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from pynwb.icephys import (
        CurrentClampSeries,
        CurrentClampStimulusSeries,
        VoltageClampSeries,
        VoltageClampStimulusSeries,
    )

    def wrap(values: np.ndarray) -> Any:
        data = np.asarray(values, dtype=np.float32)
        return H5DataIO(data, compression="gzip", compression_opts=4) if compress else data

    common = {
        "electrode": electrode,
        "rate": float(sweep.sampling_rate_hz),
        "starting_time": float(sweep.start_time_s),
        "sweep_number": np.uint64(sweep.number),  # the schema's unsigned type, no warning
        "stimulus_description": protocol,
    }
    tag = f"{sweep.number:05d}"
    # mV -> V and pA -> A: NWB wants data * conversion in SI units.
    if sweep.clamp_mode == "current_clamp":
        response = CurrentClampSeries(
            name=f"current_clamp_response_{tag}",
            data=wrap(sweep.response),
            conversion=1e-3,
            description=f"Membrane potential, sweep {sweep.number} (stored in mV)",
            **common,
        )
        stimulus = (
            CurrentClampStimulusSeries(
                name=f"current_clamp_stimulus_{tag}",
                data=wrap(sweep.command),
                conversion=1e-12,
                description=f"Injected current, sweep {sweep.number} (stored in pA)",
                **common,
            )
            if sweep.command is not None
            else None
        )
    else:
        response = VoltageClampSeries(
            name=f"voltage_clamp_response_{tag}",
            data=wrap(sweep.response),
            conversion=1e-12,
            description=f"Membrane current, sweep {sweep.number} (stored in pA)",
            **common,
        )
        stimulus = (
            VoltageClampStimulusSeries(
                name=f"voltage_clamp_stimulus_{tag}",
                data=wrap(sweep.command),
                conversion=1e-3,
                description=f"Command potential, sweep {sweep.number} (stored in mV)",
                **common,
            )
            if sweep.command is not None
            else None
        )
    return response, stimulus


def _check_inputs(recording: IcephysRecording, file_id: str, metadata: dict[str, str]) -> None:
    if not file_id.strip():
        raise InvalidArgument("export_nwb: file_id must be a non-empty string")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise InvalidArgument(
                f"{file_id}: metadata {key!r} must be a string, got {type(value)}"
            )
    if not recording.sweeps:
        raise UnsupportedRecording(f"{file_id}: recording has no sweeps to export")
    numbers = [s.number for s in recording.sweeps]
    if len(set(numbers)) != len(numbers) or min(numbers) < 0:
        raise InvalidArgument(f"{file_id}: sweep numbers must be unique and >= 0, got {numbers}")
    for sweep in recording.sweeps:
        if sweep.clamp_mode not in ("current_clamp", "voltage_clamp"):
            raise UnsupportedRecording(
                f"{file_id}: sweep {sweep.number} has clamp mode {sweep.clamp_mode!r}; "
                "NWB needs current or voltage clamp"
            )
        if sweep.command is not None and sweep.command.shape != sweep.response.shape:
            raise InvalidArgument(
                f"{file_id}: sweep {sweep.number} command has {sweep.command.shape[0]} samples, "
                f"response {sweep.response.shape[0]}"
            )


def _notes(recording: IcephysRecording, metadata: dict[str, str]) -> str:
    lines = [
        f"Converted by Neurocyte from {recording.source_format} "
        f"(format version {recording.format_version or 'unknown'}).",
    ]
    if recording.recorded_at is None:
        lines.append("The source file records no valid acquisition date.")
    if recording.qc_flags:
        lines.append(f"Reader QC flags: {', '.join(recording.qc_flags)}.")
    if metadata.get("notes"):
        lines.append(metadata["notes"])
    lines.extend(f"{k}: {v}" for k, v in sorted(metadata.items()) if k not in _KNOWN_KEYS)
    if recording.metadata:
        lines.append("Source metadata: " + json.dumps(recording.metadata, sort_keys=True))
    return "\n".join(lines)


def export_nwb(
    recording: IcephysRecording,
    out_path: str | Path,
    *,
    file_id: str,
    metadata: dict[str, str],
    sweeps: pa.Table | None = None,
    spikes: pa.Table | None = None,
    cell: pa.Table | None = None,
    compress: bool = True,
) -> Path:
    """Write a recording (and its feature tables) as an NWB 2.x file.

    Parameters
    ----------
    recording
        The decoded recording; every sweep must be current or voltage clamp.
    out_path
        Destination ``.nwb`` path; parent folders are created; an existing file is
        replaced only once the new one is complete.
    file_id
        The NWB ``identifier`` (and the default ``session_id``).
    metadata
        Subject and session details; see the module docstring for the keys.
        Without ``subject`` no ``Subject`` is written, which DANDI (and
        nwbinspector, as CRITICAL) rejects.
    sweeps, spikes, cell
        Feature tables, each written as a ``DynamicTable`` of that name in the
        processing module ``icephys_features``; tables with no rows are left
        out (an empty table is a best-practice violation). A table with a
        ``sweep_number`` column also gets an ``intracellular_recording`` region
        column pointing at that sweep's row of the IntracellularRecordingsTable.
    compress
        Store traces gzip-compressed (level 4).

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    InvalidArgument
        Empty ``file_id``, non-string metadata, bad ``session_start_time``,
        repeated sweep numbers or a feature column NWB cannot hold.
    UnsupportedRecording
        No sweeps, or a sweep of unknown clamp mode.
    """
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.file import Subject

    _check_inputs(recording, file_id, metadata)
    out_path = Path(out_path)
    protocol = recording.protocol or "unknown protocol"
    experimenter = [e.strip() for e in metadata.get("experimenter", "").split(";") if e.strip()]
    keywords = ["patch clamp", "intracellular electrophysiology"] + [
        f"{k}: {metadata[k]}" for k in ("condition", "timepoint") if metadata.get(k)
    ]
    nwbfile = NWBFile(
        session_description=metadata.get("session_description")
        or f"Patch-clamp recording {file_id}, protocol {protocol}.",
        identifier=file_id,
        session_start_time=_session_start(recording, metadata),
        session_id=metadata.get("session_id", file_id).replace("/", "_"),
        experimenter=experimenter or None,
        lab=metadata.get("lab") or None,
        institution=metadata.get("institution") or None,
        protocol=recording.protocol or None,
        experiment_description="; ".join(
            f"{k}: {metadata[k]}" for k in ("condition", "timepoint") if metadata.get(k)
        )
        or None,
        keywords=keywords,
        notes=_notes(recording, metadata),
    )
    if any(metadata.get(k) for k in ("subject", "species", "sex", "age", "date_of_birth")):
        born = _date_of_birth(metadata)
        nwbfile.subject = Subject(
            subject_id=metadata.get("subject") or None,
            description=metadata.get("subject_description") or None,
            species=metadata.get("species") or None,
            sex=_sex_code(metadata.get("sex")),
            # NWB wants an age or a date of birth; "P0D/" (0 days or older) only without both
            age=metadata.get("age") or (None if born else UNKNOWN_AGE),
            date_of_birth=born,
            strain=metadata.get("strain") or None,
            genotype=metadata.get("genotype") or None,
        )

    channels = ", ".join(
        f"{n} ({u})" for n, u in zip(recording.channel_names, recording.channel_units, strict=False)
    )
    device = nwbfile.create_device(
        name="amplifier",
        description=f"Patch-clamp amplifier and digitiser; channels: {channels or 'not recorded'}",
    )
    electrode = nwbfile.create_icephys_electrode(
        name="electrode_0",
        description=metadata.get("electrode_description") or "whole-cell patch-clamp electrode",
        device=device,
        cell_id=metadata.get("cell_id") or None,
    )
    simultaneous: list[int] = []
    row_of_sweep: dict[int, int] = {}
    for sweep in recording.sweeps:
        response, stimulus = _series_pair(sweep, electrode, protocol, compress=compress)
        row = nwbfile.add_intracellular_recording(
            electrode=electrode, stimulus=stimulus, response=response
        )
        row_of_sweep[sweep.number] = row
        simultaneous.append(nwbfile.add_icephys_simultaneous_recording(recordings=[row]))
    nwbfile.add_icephys_sequential_recording(
        simultaneous_recordings=simultaneous, stimulus_type=protocol
    )

    tables = {"sweeps": sweeps, "spikes": spikes, "cell": cell}
    present = {name: t for name, t in tables.items() if t is not None and t.num_rows > 0}
    if present:
        module = nwbfile.create_processing_module(
            name=FEATURES_MODULE,
            description="Electrophysiological features computed by Neurocyte from the sweeps.",
        )
        for name, table in present.items():
            module.add(
                _feature_table(
                    name,
                    table,
                    recordings=nwbfile.intracellular_recordings,
                    row_of_sweep=row_of_sweep,
                )
            )

    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden sibling with the .nwb suffix pynwb expects; renamed only once complete.
    partial = out_path.with_name(f".{out_path.stem}.partial.nwb")
    try:
        with NWBHDF5IO(str(partial), "w") as io:
            io.write(nwbfile)
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)
    return out_path
