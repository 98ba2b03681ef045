"""ABF1 / ABF2 decoding through pyabf, into the neutral :mod:`transforms.model`.

Decoding only: no analysis happens here (the pyABF lesson). Channels are chosen
by their units, not their position, because labs wire amplifiers differently.
"""

from __future__ import annotations

import struct
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from transforms.errors import DecodeError, NeurocyteError, UnsupportedRecording
from transforms.recording.icephys import ClampMode, IcephysRecording, Sweep

#: Scale factors to the canonical units (mV for potential, pA for current).
_VOLTAGE_UNITS = {"mv": 1.0, "v": 1000.0, "uv": 1e-3, "µv": 1e-3}
_CURRENT_UNITS = {"pa": 1.0, "na": 1000.0, "ua": 1e6, "µa": 1e6, "fa": 1e-3}

#: ABF nOperationMode 3 is gap-free; 5 is episodic stimulation.
_GAP_FREE = 3


def _unit_kind(unit: str) -> tuple[str, float]:
    u = unit.strip().lower().replace("\x00", "")
    if u in _VOLTAGE_UNITS:
        return "voltage", _VOLTAGE_UNITS[u]
    if u in _CURRENT_UNITS:
        return "current", _CURRENT_UNITS[u]
    return "unknown", 1.0


def _clean(text: object) -> str:
    return str(text or "").replace("\x00", "").strip()


def _fixed_length(abf: Any) -> bool:
    """Every sweep has ``sweepPointCount`` samples (no variable-length synch array)."""
    synch = getattr(abf, "_synchArraySection", None)
    return abf.sweepCount <= 1 or synch is None or len(set(synch.lLength)) == 1


def _responses(abf: Any, channel: int) -> list[np.ndarray]:
    """Every sweep of an input channel, as pyabf's ``sweepY`` would give it."""
    if _fixed_length(abf):
        n = abf.sweepPointCount
        data = abf.data[channel]
        return [data[k * n : (k + 1) * n] for k in range(abf.sweepCount)]
    out = []
    for number in range(abf.sweepCount):
        abf.setSweep(number, channel=channel)
        out.append(abf.sweepY)
    return out


class _DacCache:
    """Per-file memo: each DAC's pyabf epoch table and command waveforms, built once."""

    def __init__(self) -> None:
        self.tables: dict[int, Any] = {}
        self.commands: dict[int, list[np.ndarray]] = {}


def _dac_source(abf: Any, dac: int) -> tuple[int, int]:
    """``(nWaveformEnable, nWaveformSource)`` of a DAC (0, 0 beyond the header's DACs)."""
    header = abf._headerV1 if abf.abfVersion["major"] == 1 else abf._dacSection
    enabled = header.nWaveformEnable[dac] if dac < len(header.nWaveformEnable) else 0
    source = header.nWaveformSource[dac] if dac < len(header.nWaveformSource) else 0
    return int(enabled), int(source)


def _epoch_table(abf: Any, dac: int, cache: _DacCache) -> Any | None:
    """pyabf's epoch table of a DAC when its commands come from it, else None.

    That is a fixed-length file whose DAC waveform is enabled and defined by the
    protocol's epoch table (source 1) and not an ABF1 stimulus-file waveform.
    """
    if dac in cache.tables:
        return cache.tables[dac]
    enabled, source = _dac_source(abf, dac)
    table = None
    if _fixed_length(abf) and enabled and source == 1:
        import pyabf.waveform

        table = pyabf.waveform.EpochTable(abf, dac)
    cache.tables[dac] = table
    return table


def _commands(abf: Any, dac: int, cache: _DacCache) -> list[np.ndarray]:
    """Every sweep's command waveform of a DAC, as pyabf's ``sweepC`` would give it.

    pyabf's ``setSweep``/``sweepC`` rebuild the whole epoch table (all sweeps)
    for each sweep asked for; for fixed-length sweeps driven by the epoch
    table the table is built once here. Anything else (DAC files, variable-
    length sweeps, disabled waveforms) goes through pyabf's own path.
    """
    if dac in cache.commands:
        return cache.commands[dac]
    enabled, source = _dac_source(abf, dac)
    n = abf.sweepPointCount
    if abf.abfVersion["major"] == 1 and enabled and source == 2:
        # An ABF1 waveform read from a stimulus file: pyabf cannot render it (its
        # findStimulusWaveformFile raises UnboundLocalError for ABF1), and the
        # file is not shipped with the recording anyway, so the command is unknown.
        out = [np.full(n, np.nan) for _ in range(abf.sweepCount)]
    elif (table := _epoch_table(abf, dac, cache)) is not None:
        out = [
            np.asarray(table.epochWaveformsBySweep[k].getWaveform()[:n], dtype=np.float64)
            for k in range(abf.sweepCount)
        ]
    else:
        out = []
        for number in range(abf.sweepCount):
            abf.setSweep(number, channel=dac)
            out.append(np.asarray(abf.sweepC, dtype=np.float64))
    cache.commands[dac] = out
    return out


def _step_levels(wave: Any, n_samples: int) -> list[float] | None:
    """The finite levels one sweep's command takes, in order, if it is made of steps only.

    ``wave`` is pyabf's ``EpochSweepWaveform`` of the sweep: segments
    ``[p1, p2)`` each filled with one level ("Step"). The waveform pyabf would
    synthesise (NaN, then each segment written in turn, cut to ``n_samples``)
    holds exactly the levels of the segments that keep samples, in this order,
    when the segments are in order, do not overlap and fit. Anything else (a
    ramp, pulse train or other epoch type, segments out of order or past the
    end) gives None: the waveform is then built to find out.
    """
    total = wave.p2s[-1] if wave.p2s else 0
    end = 0
    levels: list[float] = []
    for p1, p2, level, kind in zip(wave.p1s, wave.p2s, wave.levels, wave.types, strict=True):
        if kind != "Step" or not end <= p1 <= p2 <= total:
            return None
        end = p2
        if min(p2, n_samples) > min(p1, n_samples) and np.isfinite(level):
            levels.append(float(level))
    return levels


def _command_active(abf: Any, dac: int, cache: _DacCache) -> bool:
    """Whether DAC ``dac``'s waveform changes within or across sweeps.

    pyabf synthesises the waveform from the protocol's epoch table; a DAC that
    only holds a level (or is unused) gives the same constant on every sweep.
    For step protocols this is read from the epoch table's levels per sweep,
    without synthesising a waveform per sweep (a DAC left idle beside the
    active one used to cost a full waveform for every sweep); the answer is
    the one the waveforms give (same rule, same order of checks).
    """
    # per sweep: (lowest, highest, first) finite level, or None for no finite value
    spans: list[tuple[float, float, float] | None] | None = None
    table = _epoch_table(abf, dac, cache) if dac not in cache.commands else None
    if table is not None:
        n = abf.sweepPointCount
        steps = [_step_levels(table.epochWaveformsBySweep[k], n) for k in range(abf.sweepCount)]
        if all(levels is not None for levels in steps):
            spans = [(min(lv), max(lv), lv[0]) if lv else None for lv in steps if lv is not None]
    if spans is None:
        spans = []
        for c in _commands(abf, dac, cache):
            fin = c[np.isfinite(c)]
            spans.append((float(fin.min()), float(fin.max()), float(fin[0])) if fin.size else None)
    first: float | None = None
    for span in spans:
        if span is None:
            continue
        lo, hi, start = span
        if lo != hi:
            return True
        if first is None:
            first = start
        elif start != first:
            return True
    return False


def _choose_channel(
    abf: Any,
    adc_units: list[str],
    dac_units: list[str],
    name: str,
    cache: _DacCache,
) -> tuple[ClampMode, int, int | None, list[str]]:
    """Clamp mode, recorded channel, command DAC and reader flags of a file.

    The mode follows what the rig did, not DAC 0's label: a DAC in current
    units that steps, with a potential input, is current clamp; a DAC in
    potential units that steps, with a current input, is voltage clamp (an
    ABF may drive its active command from DAC 1 while DAC 0 idles in mV, as
    ``18425108_abf1.abf`` does). pyabf pairs ADC channel ``i`` with DAC ``i``;
    the paired input is preferred. Without any stepping command (gap-free,
    holding only) the units of DAC 0 decide. A current command with only
    current inputs cannot be: the amplifier's Vm output carries a wrong unit
    label, and the file is flagged ``units_mislabelled``.
    """
    kinds = [_unit_kind(u)[0] for u in adc_units]
    v_chs = [i for i, k in enumerate(kinds) if k == "voltage"]
    i_chs = [i for i, k in enumerate(kinds) if k == "current"]
    if not v_chs and not i_chs:
        problems = [p for i, u in enumerate(adc_units) if (p := _unit_problem(abf, i, u))]
        detail = f": {'; '.join(problems)}" if problems else ""
        raise UnsupportedRecording(
            f"{name}: no channel with voltage or current units (ADC units {adc_units}){detail}"
        )
    # pyabf can only synthesise the waveforms of DACs that have an ADC partner
    n_dac = min(len(dac_units), abf.channelCount)
    dac_kinds = [_unit_kind(dac_units[d])[0] for d in range(n_dac)]

    def pick(chs: list[int], dac: int) -> int:
        return dac if dac in chs else chs[0]

    for d in range(n_dac):
        if dac_kinds[d] == "current" and v_chs and _command_active(abf, d, cache):
            return "current_clamp", pick(v_chs, d), d, []
        if dac_kinds[d] == "voltage" and i_chs and _command_active(abf, d, cache):
            return "voltage_clamp", pick(i_chs, d), d, []
    dac0 = dac_kinds[0] if dac_kinds else "unknown"
    if dac0 == "current" and v_chs:
        return "current_clamp", pick(v_chs, 0), 0, []
    if dac0 == "voltage" and i_chs:
        return "voltage_clamp", pick(i_chs, 0), 0, []
    if dac0 == "current":  # current command, current inputs only
        return "current_clamp", i_chs[0], 0, ["units_mislabelled"]
    if v_chs:
        return "current_clamp", v_chs[0], _dac_of(dac_kinds, "current"), []
    return "voltage_clamp", i_chs[0], _dac_of(dac_kinds, "voltage"), []


def _ignored_channels(abf: Any, adc_units: list[str], channel: int) -> list[str]:
    """``other_channels_ignored:<names>`` when other inputs record what ``channel`` does.

    The model holds one response per sweep. Further ADC channels in the same
    kind of unit (a second headstage of a pair recording, say) are dropped, and
    the flag says which, so the lost cell is visible in ``reader_qc_flags``;
    channels of another kind (a current monitor beside Vm) are not responses.
    """
    kind = _unit_kind(adc_units[channel])[0]
    names = [
        _clean(abf.adcNames[i]).replace(";", "_").replace(",", "_") or f"ADC{i}"
        for i, unit in enumerate(adc_units)
        if i != channel and _unit_kind(unit)[0] == kind
    ]
    return [f"other_channels_ignored:{','.join(names)}"] if names else []


def _unit_problem(abf: Any, channel: int, unit: str) -> str:
    """What is wrong with an ADC unit the reader refuses, for the error message."""
    if unit.strip().lower() != "a":
        return ""
    label = f"ADC {channel} {_clean(abf.adcNames[channel])!r} is labelled 'A' (amperes)"
    try:
        values = np.asarray(abf.data[channel], dtype=np.float64)
    except (AttributeError, IndexError, TypeError, ValueError):
        return f"{label}; Neurocyte reads currents in pA, nA or µA only"
    finite = values[np.isfinite(values)]
    if not finite.size:
        return f"{label} and holds no finite values"
    lo, hi = float(finite.min()), float(finite.max())
    if max(abs(lo), abs(hi)) > 1e-6:
        # a patch-clamp current is pA to nA: 1e-12 to 1e-8 A
        return (
            f"{label}, but its values span {lo:.3g} to {hi:.3g}: implausible as amperes "
            "(a patch-clamp current is pA to nA), so the label is wrong; the file is refused "
            "rather than rescaled by a guess"
        )
    return (
        f"{label} with values {lo:.3g} to {hi:.3g}; Neurocyte reads currents in pA, nA or µA "
        "only: relabel the channel"
    )


def _dac_of(dac_kinds: list[str], kind: str) -> int | None:
    """The first DAC in ``kind`` units, or None (the command is then unknown)."""
    return next((d for d, k in enumerate(dac_kinds) if k == kind), None)


def read_abf(path: str | Path) -> IcephysRecording:
    """Decode an ABF1 or ABF2 file.

    Parameters
    ----------
    path
        The ``.abf`` file.

    Returns
    -------
    IcephysRecording
        Current-clamp sweeps in mV with the command in pA, or voltage-clamp
        sweeps in pA with the command in mV.

    Raises
    ------
    DecodeError
        If pyabf cannot parse the file (truncated, corrupt, not an ABF).
    UnsupportedRecording
        If the file has no sweeps or no channel with physical units.
    """
    import pyabf  # heavy-ish import kept local so the package imports fast

    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise DecodeError(f"{path.name}: zero-length file")
    _check_declared_sweeps(path, size)
    try:
        abf = pyabf.ABF(str(path), loadData=True)
    except Exception as exc:  # pyabf raises bare Exceptions of many kinds on bad bytes
        raise DecodeError(
            f"{path.name}: not a readable ABF file ({type(exc).__name__}: {exc})"
        ) from exc
    try:
        return _decode(abf, path)
    except NeurocyteError:
        raise
    except (
        ValueError,
        IndexError,
        KeyError,
        TypeError,
        ZeroDivisionError,
        OverflowError,
        MemoryError,
        struct.error,
    ) as exc:
        # pyabf builds sweep and command waveforms lazily: a corrupt header
        # surfaces only here, as a bare exception from inside pyabf.
        raise DecodeError(
            f"{path.name}: corrupt ABF header or data ({type(exc).__name__}: {exc})"
        ) from exc


def _check_declared_sweeps(path: Path, size: int) -> None:
    """Refuse a header whose sweep count cannot fit the file, before pyabf allocates it.

    Every sweep holds at least one 2-byte sample, so more sweeps than
    ``size / 2`` is corruption (a claim of 2**31 sweeps would otherwise make
    pyabf allocate tens of GB). ``lActualEpisodes`` sits at byte 16 in ABF1
    and byte 12 in ABF2 headers.
    """
    with open(path, "rb") as fh:
        head = fh.read(20)
    if len(head) < 20:
        raise DecodeError(f"{path.name}: truncated ABF header ({len(head)} bytes)")
    offset = {b"ABF ": 16, b"ABF2": 12}.get(head[:4])
    if offset is None:
        raise DecodeError(f"{path.name}: not a readable ABF file (signature {head[:4]!r})")
    (episodes,) = struct.unpack_from("<i" if offset == 16 else "<I", head, offset)
    if episodes < 0 or episodes > size // 2:
        raise DecodeError(
            f"{path.name}: header declares {episodes} sweeps, impossible in {size} bytes"
        )


def _decode(abf: Any, path: Path) -> IcephysRecording:
    """The loaded pyabf object as the neutral model (may raise from inside pyabf)."""
    if abf.sweepCount < 1 or abf.sweepPointCount < 2:
        raise UnsupportedRecording(f"{path.name}: no sweeps")
    if not np.isfinite(abf.sampleRate) or abf.sampleRate <= 0:
        raise DecodeError(f"{path.name}: invalid sampling rate {abf.sampleRate!r}")
    adc_units = [_clean(u) for u in abf.adcUnits]
    dac_units = [_clean(u) for u in abf.dacUnits]
    gap_free = int(getattr(abf, "nOperationMode", 5)) == _GAP_FREE
    cache = _DacCache()
    mode, channel, dac, qc_flags = _choose_channel(abf, adc_units, dac_units, path.name, cache)

    qc_flags += _ignored_channels(abf, adc_units, channel)
    response_scale = _unit_kind(adc_units[channel])[1]
    if "units_mislabelled" in qc_flags:
        response_scale = 1.0  # keep the values as recorded: no guessed rescale
    cmd_scale = _unit_kind(dac_units[dac])[1] if dac is not None else 1.0

    sweeps: list[Sweep] = []
    responses = _responses(abf, channel)
    commands = _commands(abf, dac, cache) if dac is not None and not gap_free else None
    if commands is not None and not any(np.isfinite(c).any() for c in commands):
        commands = None  # e.g. a stimulus-file waveform that is not available
        qc_flags.append("command_unavailable")
    for number in range(abf.sweepCount):
        response = np.asarray(responses[number], dtype=np.float64) * response_scale
        command: np.ndarray | None = None
        if commands is not None:
            command = commands[number] * cmd_scale
        sweeps.append(
            Sweep(
                number=number,
                sampling_rate_hz=float(abf.sampleRate),
                clamp_mode=mode,
                response=response,
                command=command,
                response_unit="mV" if mode == "current_clamp" else "pA",
                command_unit="pA" if mode == "current_clamp" else "mV",
                start_time_s=float(abf.sweepTimesSec[number])
                if len(abf.sweepTimesSec) > number
                else 0.0,
            )
        )

    recorded_at: datetime | None = abf.abfDateTime
    if recorded_at is not None and recorded_at.year < 1980:  # pyabf's "no date" sentinel
        recorded_at = None
        qc_flags.append("invalid_date")

    return IcephysRecording(
        source_format="abf1" if abf.abfVersion["major"] == 1 else "abf2",
        format_version=abf.abfVersionString,
        protocol=_protocol_name(abf),
        recorded_at=recorded_at,
        sweeps=tuple(sweeps),
        channel_names=tuple(_clean(n) for n in abf.adcNames),
        channel_units=tuple(adc_units),
        qc_flags=tuple(qc_flags),
        metadata={
            "operation_mode": "gap_free" if gap_free else "episodic",
            "response_channel": f"{channel}:{_clean(abf.adcNames[channel])}",
            "command_dac": "" if dac is None else f"{dac}:{dac_units[dac]}",
        },
        command_resolution=None if dac is None else _dac_step(abf, dac, cmd_scale),
    )


def _protocol_name(abf: Any) -> str:
    """The protocol's name, or "" without one.

    pyabf writes the string ``"None"`` into both ``protocol`` and
    ``protocolPath`` when the header names no ``.pro`` file; that sentinel is
    not a protocol name and must not reach the lake as text.
    """
    name = _clean(abf.protocol)
    if name == "None" and _clean(getattr(abf, "protocolPath", "None")) in ("", "None"):
        return ""
    return name


def _dac_step(abf: Any, dac: int, cmd_scale: float) -> float | None:
    """One DAC step in command units (pA or mV), from the ABF2 DAC scaling.

    The DAC outputs ``fDACRange / lDACResolution`` volts per step, and the
    amplifier turns a volt into ``fDACScaleFactor`` command units; ``cmd_scale``
    converts those to pA or mV. ABF1 headers as pyabf reads them carry no
    per-DAC scale factor, so they give ``None``.
    """
    if abf.abfVersion["major"] != 2:
        return None
    proto, dacs = abf._protocolSection, abf._dacSection
    try:
        volts_per_step = float(proto.fDACRange) / float(proto.lDACResolution)
        units_per_volt = float(dacs.fDACScaleFactor[dac])
    except (AttributeError, IndexError, TypeError, ValueError, ZeroDivisionError):
        return None
    step = abs(volts_per_step * units_per_volt * cmd_scale)
    return step if np.isfinite(step) and step > 0 else None
