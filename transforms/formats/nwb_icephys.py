"""NWB 2.x intracellular (patch-clamp) decoding through pynwb, into :mod:`transforms.model`.

Two layouts are understood:

* the icephys metadata tables (NWB >= 2.4): each row of the
  ``IntracellularRecordingsTable`` pairs a response (``CurrentClampSeries`` /
  ``VoltageClampSeries`` / ``IZeroClampSeries``) with its stimulus;
* older files without those tables: the ``PatchClampSeries`` in ``/acquisition``
  are the responses and the ones in ``/stimulus/presentation`` are matched to
  them by ``sweep_number``, else by the sweep index in their names.

NWB stores ``data * conversion + offset`` in SI units (volts, amperes); the
model wants mV and pA, so every trace is rescaled here. Decoding only: no
analysis happens in this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from transforms.errors import DecodeError, NeurocyteError, UnsupportedRecording
from transforms.recording.icephys import ClampMode, IcephysRecording, Sweep
from transforms.untrusted import excerpt

#: Factor from ``data * conversion + offset`` in the stored unit to mV or pA.
_TO_MV = {"volts": 1e3, "volt": 1e3, "v": 1e3, "millivolts": 1.0, "mv": 1.0}
_TO_PA = {
    "amperes": 1e12,
    "ampere": 1e12,
    "amps": 1e12,
    "a": 1e12,
    "nanoamperes": 1e3,
    "na": 1e3,
    "picoamperes": 1.0,
    "pa": 1.0,
}
#: Values pynwb and converters write when a text field has no real content.
_EMPTY_TEXT = {"", "na", "n/a", "none", "null", "{}", "unknown", "no description", "no comments"}


@dataclass(frozen=True)
class _Pair:
    """One response series (slice) with its stimulus series (slice), if any."""

    response: Any
    response_start: int
    response_count: int
    stimulus: Any | None
    stimulus_start: int
    stimulus_count: int


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple, np.ndarray)):
        return "; ".join(t for t in (_text(v) for v in value) if t)
    return str(value).strip()


def _meaningful(value: object) -> str:
    text = _text(value)
    return "" if text.lower() in _EMPTY_TEXT else text


def _probe_hdf5(path: Path) -> str:
    """Check the file is a readable NWB 2.x HDF5 file; return its ``nwb_version``."""
    import h5py

    if not path.is_file():
        raise DecodeError(f"{path.name}: no such file")
    if path.stat().st_size == 0:
        raise DecodeError(f"{path.name}: zero-length file")
    if not h5py.is_hdf5(path):
        raise DecodeError(f"{path.name}: not an HDF5 file, so not an NWB 2.x file")
    try:
        with h5py.File(path, "r") as h5:
            version = h5.attrs.get("nwb_version")
            if version is None and "nwb_version" in h5:
                version = h5["nwb_version"][()]  # NWB 1.x keeps it as a dataset
    except OSError as exc:  # h5py reports truncation and corruption as OSError
        raise DecodeError(f"{path.name}: HDF5 file cannot be opened ({exc})") from exc
    version_text = _text(version)
    if not version_text:
        raise DecodeError(f"{path.name}: HDF5 file without an nwb_version attribute (not NWB)")
    match = re.search(r"(\d+)\.\d+", version_text)
    if match is None or int(match.group(1)) < 2:
        raise DecodeError(f"{path.name}: NWB version {version_text!r} is not supported (NWB 2.x)")
    return version_text


def _unit_factor(unit: str, *, voltage: bool) -> float | None:
    table = _TO_MV if voltage else _TO_PA
    return table.get(unit.strip().lower())


def _series_mode(series: Any) -> ClampMode:
    """Clamp mode from the neurodata type, else from the response unit."""
    kind = type(series).__name__
    if kind in ("CurrentClampSeries", "IZeroClampSeries"):
        return "current_clamp"
    if kind == "VoltageClampSeries":
        return "voltage_clamp"
    unit = _text(getattr(series, "unit", "")).lower()
    if unit in _TO_MV:
        return "current_clamp"
    if unit in _TO_PA:
        return "voltage_clamp"
    return "unknown"


def _load(series: Any, start: int, count: int, factor: float) -> np.ndarray:
    """``(data * conversion + offset) * factor`` as float64, for one slice of a series."""
    data = series.data
    stop = start + count if count >= 0 else None
    raw = np.asarray(data[start:stop], dtype=np.float64)
    offset = float(getattr(series, "offset", 0.0) or 0.0)
    return (raw * float(series.conversion) + offset) * factor


def _rate_hz(series: Any, start: int, name: str) -> float:
    if series.rate is not None:
        rate = float(series.rate)
    else:
        timestamps = np.asarray(series.timestamps[start : start + 1000], dtype=np.float64)
        steps = np.diff(timestamps)
        if steps.size == 0 or not np.all(steps > 0):
            raise DecodeError(f"{name}: series {series.name!r} has unusable timestamps")
        rate = 1.0 / float(np.median(steps))
    if not np.isfinite(rate) or rate <= 0:
        raise DecodeError(f"{name}: series {series.name!r} has invalid rate {rate!r}")
    return rate


def _start_s(series: Any, start: int, rate_hz: float) -> float:
    if series.rate is not None:
        return float(series.starting_time or 0.0) + start / rate_hz
    return float(series.timestamps[start])


def _reference(ref: Any) -> tuple[Any, int, int] | None:
    """(series, start, count) of a TimeSeriesReference, or None for an empty one.

    pynwb reads the stored ``(-1, -1, series)`` placeholder either as ``None`` or as
    a reference whose fields are all ``None``, depending on the version.
    """
    if ref is None or ref.timeseries is None or ref.idx_start is None:
        return None
    start, count = int(ref.idx_start), int(ref.count)
    return None if start < 0 or count < 0 else (ref.timeseries, start, count)


def _pairs_from_table(nwb: Any) -> list[_Pair]:
    table = nwb.intracellular_recordings
    responses = table.category_tables["responses"]["response"]
    stimuli = (
        table.category_tables["stimuli"]["stimulus"] if "stimuli" in table.category_tables else None
    )
    pairs: list[_Pair] = []
    for row in range(len(table)):
        response = _reference(responses[row])
        if response is None:
            continue  # a stimulus-only row has nothing to analyse
        stimulus = _reference(stimuli[row]) if stimuli is not None else None
        pairs.append(
            _Pair(
                response=response[0],
                response_start=response[1],
                response_count=response[2],
                stimulus=stimulus[0] if stimulus is not None else None,
                stimulus_start=stimulus[1] if stimulus is not None else 0,
                stimulus_count=stimulus[2] if stimulus is not None else -1,
            )
        )
    return pairs


def _is_patch_clamp(obj: Any) -> bool:
    from pynwb.icephys import PatchClampSeries

    return isinstance(obj, PatchClampSeries)


def _match_key(series: Any) -> tuple[str, int] | None:
    if series.sweep_number is not None:
        return ("sweep", int(series.sweep_number))
    # Names such as ``ic__Step__3`` / ``ics__Step__3`` or ``sweep_3_response``:
    # the sweep index is the last number once channel suffixes (AD0, DA0) are gone.
    stripped = re.sub(r"_?(AD|DA|TTL)\d+$", "", series.name, flags=re.IGNORECASE)
    numbers = re.findall(r"\d+", stripped)
    return ("name", int(numbers[-1])) if numbers else None


def _pairs_from_acquisition(nwb: Any, name: str) -> list[_Pair]:
    responses = [s for s in nwb.acquisition.values() if _is_patch_clamp(s)]
    stimuli = [s for s in nwb.stimulus.values() if _is_patch_clamp(s)]
    by_key: dict[tuple[str, int], Any] = {}
    for stim in stimuli:
        key = _match_key(stim)
        if key is not None:
            by_key.setdefault(key, stim)
    pairs: list[_Pair] = []
    for resp in responses:
        key = _match_key(resp)
        stim = by_key.get(key) if key is not None else None
        if stim is None and len(stimuli) == len(responses) == 1:
            stim = stimuli[0]
        pairs.append(_Pair(resp, 0, -1, stim, 0, -1))
    return pairs


def _sweep_table_numbers(nwb: Any) -> dict[str, int]:
    """Series name -> sweep number from the (deprecated) SweepTable, if the file has one."""
    sweep_table = getattr(nwb, "sweep_table", None)
    if sweep_table is None:
        return {}
    numbers: dict[str, int] = {}
    for row in range(len(sweep_table)):
        number = int(sweep_table["sweep_number"][row])
        for series in sweep_table["series"][row]:
            numbers[series.name] = number
    return numbers


def _sort_key(pair: _Pair) -> tuple[float, int, str]:
    series = pair.response
    start = float(series.starting_time or 0.0) if series.rate is not None else 0.0
    number = series.sweep_number if series.sweep_number is not None else -1
    return (start, int(number), series.name)


def _metadata(nwb: Any, pairs: Iterable[_Pair]) -> tuple[dict[str, str], str]:
    meta: dict[str, str] = {}

    def put(key: str, value: object) -> None:
        text = _meaningful(value)
        if text:
            meta[key] = text

    put("identifier", nwb.identifier)
    put("session_id", nwb.session_id)
    put("session_description", nwb.session_description)
    put("lab", nwb.lab)
    put("institution", nwb.institution)
    put("experimenter", nwb.experimenter)
    put("protocol", nwb.protocol)
    put("experiment_description", nwb.experiment_description)
    subject = nwb.subject
    if subject is not None:
        put("subject", subject.subject_id)
        for attr in ("species", "sex", "age", "genotype", "strain"):
            put(attr, getattr(subject, attr, None))
        born = getattr(subject, "date_of_birth", None)
        if isinstance(born, datetime):
            meta["date_of_birth"] = born.isoformat()
    electrodes: dict[str, Any] = {}
    protocols: list[str] = []
    for pair in pairs:
        electrode = pair.response.electrode
        if electrode is not None:
            electrodes.setdefault(electrode.name, electrode)
        for series in (pair.response, pair.stimulus):
            desc = _meaningful(getattr(series, "stimulus_description", None))
            if desc and desc not in protocols:
                protocols.append(desc)
    sequential = getattr(nwb, "icephys_sequential_recordings", None)
    if sequential is not None and "stimulus_type" in sequential.colnames:
        for value in sequential["stimulus_type"][:]:
            text = _meaningful(value)
            if text and text not in protocols:
                protocols.append(text)
    if electrodes:
        first = next(iter(electrodes.values()))
        put("electrode", first.name)
        put("electrode_description", first.description)
        put("cell_id", getattr(first, "cell_id", None))
        put("electrode_location", getattr(first, "location", None))
        put("slice", getattr(first, "slice", None))
    if protocols:
        meta["protocols"] = "; ".join(protocols)
    return meta, "; ".join(protocols)


#: Fewest samples a series needs to be analysed (the dV/dt filter's edge extension
#: alone takes 15 on each side); a shorter one is skipped and flagged.
MIN_SWEEP_SAMPLES = 64


def _build_sweeps(pairs: list[_Pair], nwb: Any, name: str) -> tuple[list[Sweep], list[str]]:
    flags: list[str] = []
    electrode_names = [p.response.electrode.name for p in pairs if p.response.electrode is not None]
    if len(set(electrode_names)) > 1:
        # The model holds one response per sweep: keep the first electrode's recordings.
        first = electrode_names[0]
        pairs = [
            p for p in pairs if p.response.electrode is None or p.response.electrode.name == first
        ]
        flags.append("multiple_electrodes")
    table_numbers = _sweep_table_numbers(nwb)
    sweeps: list[Sweep] = []
    numbers: list[int | None] = []
    for pair in pairs:
        response = pair.response
        mode = _series_mode(response)
        if mode == "unknown":
            raise UnsupportedRecording(
                f"{name}: series {response.name!r} has unit {response.unit!r}, neither volts "
                "nor amperes"
            )
        current_clamp = mode == "current_clamp"
        factor = _unit_factor(_text(response.unit), voltage=current_clamp)
        if factor is None:
            expected = "volts" if current_clamp else "amperes"
            raise UnsupportedRecording(
                f"{name}: {type(response).__name__} {response.name!r} has unit "
                f"{response.unit!r}, expected {expected}"
            )
        values = _load(response, pair.response_start, pair.response_count, factor)
        if values.shape[0] < 2:
            flags.append("empty_series_skipped")
            continue
        if values.shape[0] < MIN_SWEEP_SAMPLES:  # a truncated series: nothing to analyse
            flags.append("short_series_skipped")
            continue
        rate_hz = _rate_hz(response, pair.response_start, name)
        command: np.ndarray | None = None
        stimulus = pair.stimulus
        if stimulus is not None and type(stimulus).__name__ != "IZeroClampSeries":
            cmd_factor = _unit_factor(_text(stimulus.unit), voltage=not current_clamp)
            if cmd_factor is None:
                flags.append("command_units_unexpected")
            else:
                cmd = _load(stimulus, pair.stimulus_start, pair.stimulus_count, cmd_factor)
                same_rate = np.isclose(_rate_hz(stimulus, pair.stimulus_start, name), rate_hz)
                if cmd.shape == values.shape and same_rate:
                    command = cmd
                else:
                    flags.append("command_misaligned")
        number = response.sweep_number
        if number is None and stimulus is not None:
            number = stimulus.sweep_number
        if number is None:
            number = table_numbers.get(response.name)
        numbers.append(None if number is None else int(number))
        sweeps.append(
            Sweep(
                number=len(sweeps),  # provisional; replaced below once numbers are known
                sampling_rate_hz=rate_hz,
                clamp_mode=mode,
                response=values,
                command=command,
                response_unit="mV" if current_clamp else "pA",
                command_unit="pA" if current_clamp else "mV",
                start_time_s=_start_s(response, pair.response_start, rate_hz),
            )
        )
    known = [n for n in numbers if n is not None]
    if len(known) == len(numbers) and len(set(known)) == len(known):
        sweeps = [replace(s, number=n) for s, n in zip(sweeps, known, strict=True)]
    elif known:
        flags.append("sweep_numbers_renumbered")  # missing or repeated: keep the 0-based order
    return sweeps, sorted(set(flags))


def read_nwb(path: str | Path) -> IcephysRecording:
    """Decode the intracellular recordings of an NWB 2.x file.

    Parameters
    ----------
    path
        The ``.nwb`` (HDF5) file.

    Returns
    -------
    IcephysRecording
        ``source_format="nwb"`` and ``format_version`` the file's ``nwb_version``.
        Current-clamp sweeps in mV with the command in pA, voltage-clamp sweeps
        in pA with the command in mV, all float64. Sweep numbers come from the
        series' ``sweep_number`` (or the deprecated SweepTable); files that
        store none are numbered 0, 1, ... in recording order. ``recorded_at``
        is the session start time; subject, electrode and protocol details go
        into ``metadata`` as strings.

    Raises
    ------
    DecodeError
        Zero-length, not HDF5, truncated or corrupt, not NWB 2.x, or pynwb
        cannot build the file.
    UnsupportedRecording
        The file is NWB but holds no usable patch-clamp series.
    """
    from pynwb import NWBHDF5IO

    path = Path(path)
    version = _probe_hdf5(path)
    try:
        io = NWBHDF5IO(str(path), "r")
    except Exception as exc:  # pynwb/hdmf raise many types while loading cached specs
        raise DecodeError(
            f"{path.name}: pynwb cannot open the file ({excerpt(str(exc), limit=300)})"
        ) from exc
    try:
        try:
            nwb = io.read()
        except Exception as exc:  # hdmf's object mapper raises arbitrary types on bad content
            raise DecodeError(
                f"{path.name}: pynwb cannot read the file "
                f"({type(exc).__name__}: {excerpt(str(exc), limit=300)})"
            ) from exc
        return _decode(nwb, path, version)
    except NeurocyteError:
        raise
    except _CORRUPT as exc:  # hdmf resolves links and references lazily, on first use
        raise DecodeError(
            f"{path.name}: corrupt NWB structure ({type(exc).__name__}: "
            f"{excerpt(str(exc), limit=300)})"
        ) from exc
    finally:
        io.close()


#: What a structurally corrupt file raises once pynwb has read it: a broken link or
#: reference (ValueError, KeyError), a dataset of the wrong type or shape (ValueError,
#: TypeError, IndexError), absurd values in arithmetic (ArithmeticError, LinAlgError).
_CORRUPT = (
    OSError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    ArithmeticError,
    RuntimeError,
    np.linalg.LinAlgError,
)


def _decode(nwb: Any, path: Path, version: str) -> IcephysRecording:
    """The recording held by an opened NWB file (read_nwb turns its failures into DecodeError)."""
    table = getattr(nwb, "intracellular_recordings", None)
    pairs = _pairs_from_table(nwb) if table is not None and len(table) > 0 else []
    if not pairs:
        pairs = sorted(_pairs_from_acquisition(nwb, path.name), key=_sort_key)
    if not pairs:
        raise UnsupportedRecording(
            f"{path.name}: NWB file without intracellular (PatchClampSeries) recordings"
        )
    try:
        sweeps, flags = _build_sweeps(pairs, nwb, path.name)
    except OSError as exc:  # a dataset whose chunks lie past the end of a truncated file
        raise DecodeError(f"{path.name}: cannot read series data ({exc})") from exc
    if not sweeps:
        raise UnsupportedRecording(f"{path.name}: every intracellular series is empty")
    metadata, protocol = _metadata(nwb, pairs)
    recorded_at: datetime | None = nwb.session_start_time
    channel_names = tuple(
        dict.fromkeys(
            p.response.electrode.name if p.response.electrode is not None else p.response.name
            for p in pairs
        )
    )
    channel_units = tuple(dict.fromkeys(_text(p.response.unit) for p in pairs))
    return IcephysRecording(
        source_format="nwb",
        format_version=version,
        protocol=protocol,
        recorded_at=recorded_at,
        sweeps=tuple(sweeps),
        channel_names=channel_names,
        channel_units=channel_units,
        qc_flags=tuple(flags),
        metadata=metadata,
    )
