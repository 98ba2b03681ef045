"""The neutral in-memory model of an intracellular (patch-clamp) recording.

Every reader (ABF, NWB, ...) produces an :class:`IcephysRecording`; every
feature extractor consumes one. Arrays are float64 in physical units:
current-clamp responses in mV and commands in pA, voltage-clamp responses in
pA and commands in mV. Time is implicit: sample ``k`` of a sweep is at
``k / sampling_rate_hz`` seconds from the sweep start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np

ClampMode = Literal["current_clamp", "voltage_clamp", "unknown"]


@dataclass(frozen=True)
class Sweep:
    """One sweep: a response trace and the command that produced it.

    Attributes
    ----------
    number
        Sweep number as stored in the source file (0-based for ABF).
    sampling_rate_hz
        Samples per second of both traces.
    clamp_mode
        ``current_clamp`` (response in mV, command in pA) or
        ``voltage_clamp`` (response in pA, command in mV).
    response
        The recorded trace, float64, in ``response_unit``.
    command
        The command waveform, float64, in ``command_unit``; ``None`` where the
        file stores none.
    start_time_s
        Sweep start relative to the start of the recording.
    """

    number: int
    sampling_rate_hz: float
    clamp_mode: ClampMode
    response: np.ndarray
    command: np.ndarray | None
    response_unit: str
    command_unit: str
    start_time_s: float = 0.0

    @property
    def n_samples(self) -> int:
        return int(self.response.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sampling_rate_hz

    def time_s(self) -> np.ndarray:
        """Sample times in seconds from the sweep start."""
        return np.arange(self.n_samples, dtype=np.float64) / self.sampling_rate_hz


@dataclass(frozen=True)
class IcephysRecording:
    """A decoded patch-clamp recording, independent of the source format.

    Attributes
    ----------
    source_format
        ``abf1``, ``abf2`` or ``nwb``.
    format_version
        The file's own format version string (e.g. ``2.6.0.0``).
    protocol
        Acquisition protocol name, where the file records one.
    recorded_at
        Acquisition start, where the file records a valid one.
    sweeps
        The sweeps in acquisition order.
    channel_names, channel_units
        Every channel the file holds, as stored.
    qc_flags
        Reader-level warnings (e.g. ``units_mislabelled``) that later QC
        reports without failing the file.
    command_resolution
        One step of the command's digital-to-analogue converter, in the
        command unit (pA or mV), where the file states its DAC scaling; else
        ``None``. Stimulus amplitudes are rounded with it.
    """

    source_format: str
    format_version: str
    protocol: str
    recorded_at: datetime | None
    sweeps: tuple[Sweep, ...]
    channel_names: tuple[str, ...] = ()
    channel_units: tuple[str, ...] = ()
    qc_flags: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    command_resolution: float | None = None

    @property
    def clamp_mode(self) -> ClampMode:
        modes = {s.clamp_mode for s in self.sweeps}
        return modes.pop() if len(modes) == 1 else "unknown"

    @property
    def sampling_rate_hz(self) -> float:
        return self.sweeps[0].sampling_rate_hz if self.sweeps else 0.0
