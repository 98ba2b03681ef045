"""Write episodic current-clamp ABF1 files with their command epochs.

pyabf's own writer stores only the response, so a reader could never recover
the stimulus. This writer adds what a pClamp episodic protocol stores: ADC
and DAC units, a step epoch table (first level + increment per sweep) and the
acquisition date, at the ABF1 header offsets pyabf reads. One ADC channel
(more with ``extra_inputs``, multiplexed as pClamp stores them), 16-bit
integer samples.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from transforms.errors import InvalidArgument

_BLOCK = 512
_HEADER_BLOCKS = 12  # the 6144-byte extended ABF1 (>= 1.6) header
_ADC_RESOLUTION = 32768
_ADC_RANGE_V = 10.0


@dataclass(frozen=True)
class StepEpoch:
    """One epoch of a step protocol: level (pA) = ``level_pa + delta_pa * sweep``."""

    duration_samples: int
    level_pa: float
    delta_pa: float = 0.0


@dataclass(frozen=True)
class AdcInput:
    """A further ADC channel: its name, unit label and samples (sweeps x samples)."""

    name: str
    unit: str
    data: np.ndarray


def _instrument_scale(values: np.ndarray) -> float:
    """The largest instrument scale (V per unit) that still fits ``values`` in 16 bits."""
    peak = float(np.max(np.abs(values))) or 1.0
    scale = 10.0  # V per unit at the ADC input: 10 V per mV is ~0.3 µV resolution
    while _ADC_RESOLUTION / _ADC_RANGE_V * scale * peak > 32000:
        scale /= 10.0
    return scale


def command_waveform(n_samples: int, n_sweeps: int, epochs: list[StepEpoch]) -> np.ndarray:
    """The command (pA) an ABF1 reader reconstructs from the epoch table.

    Epochs start after the 1/64-sweep pre-epoch hold period, as in pClamp.
    The holding level is the first epoch's level (how ABF1 files are read).
    """
    out = np.zeros((n_sweeps, n_samples))
    holding = epochs[0].level_pa
    for sweep in range(n_sweeps):
        out[sweep, :] = holding
        pos = n_samples // 64
        for ep in epochs:
            out[sweep, pos : pos + ep.duration_samples] = ep.level_pa + ep.delta_pa * sweep
            pos += ep.duration_samples
        out[sweep, pos:] = holding
    return out


def write_abf1(
    path: str | Path,
    sweeps_mv: np.ndarray,
    *,
    sampling_rate_hz: float,
    epochs: list[StepEpoch],
    recorded_at: datetime,
    adc_name: str = "Vm",
    adc_unit: str = "mV",
    extra_inputs: tuple[AdcInput, ...] = (),
) -> Path:
    """Write a current-clamp episodic ABF1 file.

    Parameters
    ----------
    sweeps_mv
        Responses, shape (n_sweeps, n_samples), in mV.
    adc_unit
        The unit label written for the ADC channel (``mV``; another label
        writes the same numbers under it, as a mislabelled rig would).
    extra_inputs
        Further ADC channels (at most 15), each shaped like ``sweeps_mv``.
    epochs
        The step protocol of DAC 0 (pA); at most 10 epochs.
    """
    sweeps_mv = np.asarray(sweeps_mv, dtype=np.float64)
    if sweeps_mv.ndim != 2 or sweeps_mv.shape[1] < 128:
        raise InvalidArgument("sweeps_mv must be 2-D (sweeps x samples) with >= 128 samples")
    if not 1 <= len(epochs) <= 10:
        raise InvalidArgument("1 to 10 epochs")
    n_sweeps, n_samples = sweeps_mv.shape
    inputs = [AdcInput(adc_name, adc_unit, sweeps_mv), *extra_inputs]
    if len(inputs) > 16:
        raise InvalidArgument("at most 16 ADC channels")
    for extra in extra_inputs:
        if np.shape(extra.data) != sweeps_mv.shape:
            raise InvalidArgument(f"input {extra.name!r} must have shape {sweeps_mv.shape}")
    n_ch = len(inputs)
    n_points = n_sweeps * n_samples * n_ch
    scales = [_instrument_scale(np.asarray(x.data, dtype=np.float64)) for x in inputs]

    header = bytearray(_HEADER_BLOCKS * _BLOCK)
    struct.pack_into("4s", header, 0, b"ABF ")
    struct.pack_into("f", header, 4, 1.83)  # fFileVersionNumber
    struct.pack_into("h", header, 8, 5)  # nOperationMode: episodic stimulation
    struct.pack_into("i", header, 10, n_points)  # lActualAcqLength
    struct.pack_into("i", header, 16, n_sweeps)  # lActualEpisodes
    struct.pack_into("i", header, 20, int(recorded_at.strftime("%Y%m%d")))  # lFileStartDate
    seconds = recorded_at.hour * 3600 + recorded_at.minute * 60 + recorded_at.second
    struct.pack_into("i", header, 24, seconds)  # lFileStartTime
    struct.pack_into("f", header, 32, 1.83)  # fHeaderVersionNumber
    struct.pack_into("h", header, 36, 1)  # nFileType: ABF
    struct.pack_into("i", header, 40, _HEADER_BLOCKS)  # lDataSectionPtr (blocks)
    struct.pack_into("h", header, 100, 0)  # nDataFormat: int16
    struct.pack_into("h", header, 120, n_ch)  # nADCNumChannels
    # fADCSampleInterval (µs) between successive samples of the multiplexed stream
    struct.pack_into("f", header, 122, 1e6 / sampling_rate_hz / n_ch)
    struct.pack_into("i", header, 138, n_samples * n_ch)  # lNumSamplesPerEpisode
    struct.pack_into("i", header, 146, n_sweeps)  # lEpisodesPerRun
    struct.pack_into("f", header, 244, _ADC_RANGE_V)
    struct.pack_into("f", header, 248, _ADC_RANGE_V)  # fDACRange
    struct.pack_into("i", header, 252, _ADC_RESOLUTION)
    struct.pack_into("i", header, 256, _ADC_RESOLUTION)  # lDACResolution
    struct.pack_into("h", header, 260, 0)  # nExperimentType: voltage(current)-clamp
    struct.pack_into("16s", header, 294, b"neurocyte demo")
    struct.pack_into("h", header, 366, recorded_at.microsecond // 1000)
    for i in range(16):
        adc = inputs[i] if i < n_ch else inputs[0]
        struct.pack_into("h", header, 378 + 2 * i, i)  # nADCPtoLChannelMap
        struct.pack_into("h", header, 410 + 2 * i, i if i < n_ch else -1)  # nADCSamplingSeq
        struct.pack_into("10s", header, 442 + 10 * i, adc.name.encode()[:10].ljust(10))
        struct.pack_into("8s", header, 602 + 8 * i, adc.unit.encode()[:8].ljust(8))
        struct.pack_into("f", header, 730 + 4 * i, 1.0)  # fADCProgrammableGain
        # fInstrumentScaleFactor
        struct.pack_into("f", header, 922 + 4 * i, scales[i] if i < n_ch else scales[0])
        struct.pack_into("f", header, 1050 + 4 * i, 1.0)  # fSignalGain
    for i in range(4):
        struct.pack_into("10s", header, 1306 + 10 * i, b"Cmd".ljust(10))
        struct.pack_into("8s", header, 1346 + 8 * i, b"pA".ljust(8))
    struct.pack_into("h", header, 1440, 0)  # nActiveDACChannel
    struct.pack_into("2h", header, 2296, 1, 0)  # nWaveformEnable
    struct.pack_into("2h", header, 2300, 1, 0)  # nWaveformSource: epochs
    struct.pack_into("2h", header, 2304, 0, 0)  # nInterEpisodeLevel: back to holding
    for i, ep in enumerate(epochs):
        struct.pack_into("h", header, 2308 + 2 * i, 1)  # nEpochType: step
        struct.pack_into("f", header, 2348 + 4 * i, ep.level_pa)
        struct.pack_into("f", header, 2428 + 4 * i, ep.delta_pa)
        struct.pack_into("i", header, 2508 + 4 * i, ep.duration_samples)
    # (sweeps, samples, channels): each sample's channels side by side, as pClamp multiplexes
    stacked = np.stack(
        [
            np.asarray(x.data, dtype=np.float64) * (_ADC_RESOLUTION / _ADC_RANGE_V * sc)
            for x, sc in zip(inputs, scales, strict=True)
        ],
        axis=-1,
    )
    counts = np.clip(np.rint(stacked), -32768, 32767).astype("<i2")
    path = Path(path)
    with open(path, "wb") as fh:
        fh.write(header)
        fh.write(counts.tobytes())
        pad = (-len(counts.tobytes())) % _BLOCK
        fh.write(b"\0" * pad)
    return path
