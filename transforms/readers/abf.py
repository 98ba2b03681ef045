"""ABF1 / ABF2 decoding through pyabf, into the neutral :mod:`transforms.model`.

Decoding only: no analysis happens here (the pyABF lesson). Channels are chosen
by their units, not their position, because labs wire amplifiers differently.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from transforms.errors import DecodeError, UnsupportedRecording
from transforms.model import ClampMode, IcephysRecording, Sweep

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
    if path.stat().st_size == 0:
        raise DecodeError(f"{path.name}: zero-length file")
    try:
        abf = pyabf.ABF(str(path), loadData=True)
    except Exception as exc:  # pyabf raises bare Exceptions of many kinds on bad bytes
        raise DecodeError(
            f"{path.name}: not a readable ABF file ({type(exc).__name__}: {exc})"
        ) from exc

    if abf.sweepCount < 1 or abf.sweepPointCount < 2:
        raise UnsupportedRecording(f"{path.name}: no sweeps")
    if not np.isfinite(abf.sampleRate) or abf.sampleRate <= 0:
        raise DecodeError(f"{path.name}: invalid sampling rate {abf.sampleRate!r}")

    adc_units = [_clean(u) for u in abf.adcUnits]
    kinds = [_unit_kind(u) for u in adc_units]
    voltage_channels = [i for i, (k, _) in enumerate(kinds) if k == "voltage"]
    current_channels = [i for i, (k, _) in enumerate(kinds) if k == "current"]
    dac_units = [_clean(u) for u in abf.dacUnits]
    dac_kind = _unit_kind(dac_units[0])[0] if dac_units else "unknown"

    qc_flags: list[str] = []
    mode: ClampMode
    if dac_kind == "current" and voltage_channels:
        mode, channel = "current_clamp", voltage_channels[0]
    elif dac_kind == "voltage" and current_channels:
        mode, channel = "voltage_clamp", current_channels[0]
    elif dac_kind == "current" and current_channels and not voltage_channels:
        # A current command with only "current" inputs: the amplifier's scaled
        # output is almost certainly Vm with a wrong unit label in the protocol.
        mode, channel = "current_clamp", current_channels[0]
        qc_flags.append("units_mislabelled")
    elif voltage_channels:
        mode, channel = "current_clamp", voltage_channels[0]
    elif current_channels:
        mode, channel = "voltage_clamp", current_channels[0]
    else:
        raise UnsupportedRecording(
            f"{path.name}: no channel with voltage or current units (ADC units {adc_units})"
        )

    response_scale = kinds[channel][1]
    cmd_unit_kind, cmd_scale = (
        _unit_kind(dac_units[channel]) if channel < len(dac_units) else ("unknown", 1.0)
    )
    expected_cmd = "current" if mode == "current_clamp" else "voltage"
    if "units_mislabelled" in qc_flags:
        response_scale = 1.0
    command_ok = cmd_unit_kind == expected_cmd or "units_mislabelled" in qc_flags

    sweeps: list[Sweep] = []
    gap_free = int(getattr(abf, "nOperationMode", 5)) == _GAP_FREE
    for number in range(abf.sweepCount):
        abf.setSweep(number, channel=channel)
        response = np.asarray(abf.sweepY, dtype=np.float64) * response_scale
        command = (
            np.asarray(abf.sweepC, dtype=np.float64) * cmd_scale
            if command_ok and not gap_free
            else None
        )
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
        protocol=_clean(abf.protocol),
        recorded_at=recorded_at,
        sweeps=tuple(sweeps),
        channel_names=tuple(_clean(n) for n in abf.adcNames),
        channel_units=tuple(adc_units),
        qc_flags=tuple(qc_flags),
        metadata={"operation_mode": "gap_free" if gap_free else "episodic"},
    )
