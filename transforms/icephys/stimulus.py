"""Recognise the stimulus of each sweep from its command waveform.

Kinds: ``long_square``, ``short_square``, ``ramp``, ``hold`` (gap-free or a
flat command), ``voltage_clamp`` and ``other``.

The stimulus window follows IPFX's ``get_stim_characteristics``: it starts one
sample after the first change of the command and ends after its last change,
skipping a leading test pulse. Unlike IPFX (which is told whether a test pulse
exists) the test pulse is recognised: a short first pulse (at most
``test_pulse_max_s``) that starts before ``test_pulse_max_start_s`` and is
followed by further command changes.

Multi-epoch commands ("dual" protocols: a step, a rest, a fixed -100 pA pulse,
the step again) are where IPFX goes wrong: it treats first-to-last change as a
single long square, so the "steady state", peak deflection and input
resistance mix the test step with the fixed pulse (on ``171116sh_0018.abf``
every subthreshold sweep reports the same -76.7 mV minimum, and the V-I fit is
degenerate). With ``window="first_epoch"`` (the default) the analysed window of
a square stimulus is its first constant epoch; ``window="ipfx"`` reproduces
IPFX's first-to-last span for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np

from transforms.errors import InvalidArgument
from transforms.recording.icephys import Sweep

StimulusKind = Literal["long_square", "short_square", "ramp", "hold", "voltage_clamp", "other"]
WindowMode = Literal["first_epoch", "ipfx"]


@dataclass(frozen=True)
class StimulusParams:
    """Parameters of stimulus recognition."""

    test_pulse_max_s: float = 0.05
    test_pulse_max_start_s: float = 0.4  # IPFX TEST_PULSE_MAX_TIME
    short_square_max_s: float = 0.02
    long_square_min_s: float = 0.1
    ramp_min_changes: int = 20
    window: WindowMode = "first_epoch"

    def __post_init__(self) -> None:
        if self.window not in ("first_epoch", "ipfx"):
            raise InvalidArgument(
                f"stimulus window mode must be first_epoch or ipfx, not {self.window!r}"
            )

    def as_dict(self) -> dict[str, float | str | int]:
        return dict(asdict(self))


@dataclass(frozen=True)
class Stimulus:
    """What the command of one sweep did.

    ``start_index`` is the first stimulated sample and ``end_index`` the first
    sample after the analysed window (so ``end_s = end_index / rate``); both are
    ``None`` when there is no stimulus. ``amplitude`` is in the command unit
    (pA in current clamp, mV in voltage clamp): the level just after onset for
    squares (IPFX ``_step_stim_amp``) and the final level for ramps.
    """

    kind: StimulusKind
    amplitude: float | None
    start_index: int | None
    end_index: int | None
    n_epochs: int
    full_end_index: int | None = None

    def start_s(self, rate_hz: float) -> float | None:
        return None if self.start_index is None else self.start_index / rate_hz

    def end_s(self, rate_hz: float) -> float | None:
        return None if self.end_index is None else self.end_index / rate_hz


#: Two command levels closer than this (pA or mV) are the same level; far below
#: any digitiser's step and far above float32 rounding of the levels.
_LEVEL_TOL = 1e-3


def _changes(command: np.ndarray) -> np.ndarray:
    """Indices k where command[k + 1] != command[k] (NaN-safe)."""
    # a comparison, not np.diff: no float temporary on 10^5-sample commands
    nz = np.flatnonzero(command[1:] != command[:-1])
    if nz.size and (np.isnan(command[nz]).any() or np.isnan(command[nz + 1]).any()):
        # NaN gaps in the command: treat as 0 pA
        clean = np.nan_to_num(command, nan=0.0)
        nz = np.flatnonzero(clean[1:] != clean[:-1])
    return nz


def _stimulus_changes(
    command: np.ndarray, rate: float, params: StimulusParams
) -> tuple[np.ndarray, float]:
    """Command changes after any leading test pulse, and the holding level."""
    changes = _changes(command)
    level0 = float(command[0]) if np.isfinite(command[0]) else 0.0
    if changes.size >= 3:
        # A test pulse: short first deviation, early, back to the holding level,
        # and more changes follow. (Without the return to holding, the first
        # steps of a ramp would pass for a test pulse and move its onset.)
        first_len_s = (changes[1] - changes[0]) / rate
        after = command[changes[1] + 1]
        back = np.isfinite(after) and abs(float(after) - level0) <= _LEVEL_TOL
        if (
            back
            and first_len_s <= params.test_pulse_max_s
            and (changes[0] + 1) / rate <= params.test_pulse_max_start_s
        ):
            changes = changes[2:]
    return changes, level0


def describe_stimulus(sweep: Sweep, *, params: StimulusParams = StimulusParams()) -> Stimulus:
    """Classify the command of ``sweep`` and locate its stimulus window.

    Parameters
    ----------
    sweep
        The sweep; its ``command`` may be ``None`` (gap-free, unknown units).
    params
        Recognition thresholds and window mode.

    Returns
    -------
    Stimulus
        Kind, amplitude and window of the stimulus.
    """
    rate = sweep.sampling_rate_hz
    command = sweep.command
    if command is None or not (np.isfinite(command[0]) or np.isfinite(command).any()):
        kind: StimulusKind = "voltage_clamp" if sweep.clamp_mode == "voltage_clamp" else "hold"
        return Stimulus(kind, None, None, None, 0)
    changes, level0 = _stimulus_changes(command, rate, params)
    if sweep.clamp_mode == "voltage_clamp":
        if changes.size < 2:
            return Stimulus("voltage_clamp", level0, None, None, 0)
        start, last = int(changes[0] + 1), int(changes[-1])
        epoch_end = int(changes[1] + 1)
        end = epoch_end if params.window == "first_epoch" else last + 1
        return Stimulus(
            "voltage_clamp", float(command[start]), start, end, changes.size // 2, last + 1
        )
    if changes.size < 2:
        return Stimulus("hold", level0, None, None, 0)
    start, last = int(changes[0] + 1), int(changes[-1])
    n_changes_inside = changes.size - 1
    if n_changes_inside >= params.ramp_min_changes:
        stim = np.nan_to_num(command[start : last + 1])
        steps = np.diff(stim)
        if np.all(steps >= 0) or np.all(steps <= 0):
            amp = float(stim[np.argmax(np.abs(stim))])
            return Stimulus("ramp", amp, start, last + 1, 1, last + 1)
        return Stimulus(
            "other",
            float(stim[np.argmax(np.abs(stim))]),
            start,
            last + 1,
            n_changes_inside,
            last + 1,
        )
    epoch_end = int(changes[1] + 1)
    epoch_s = (epoch_end - start) / rate
    amp = float(command[start + 1]) if start + 1 <= last else float(command[start])
    # epochs = level changes inside [start, last] plus the onset from 0 pA
    first_level = command[start] if np.isfinite(command[start]) else 0.0
    n_epochs = changes.size - 2 + int(first_level != 0)
    end = epoch_end if params.window == "first_epoch" else last + 1
    if epoch_s <= params.short_square_max_s:
        kind = "short_square"
        amp = float(np.max(np.nan_to_num(command[start : last + 1])))  # IPFX _short_step_stim_amp
    elif epoch_s >= params.long_square_min_s:
        kind = "long_square"
    else:
        kind = "other"
    return Stimulus(kind, amp, start, end, max(n_epochs, 1), last + 1)


#: Decimal places of a stimulus amplitude when the file states no DAC scaling.
#: 1e-3 pA (or mV) lies far below any patch-clamp amplifier's command step
#: (>= 0.01 pA, typically 0.1-1 pA in current clamp) and above the error of a
#: float32-stored level (2e-4 at 2000 pA), so it removes only storage noise
#: (-50.00000074505806 -> -50.0; NWB's -1799.999997 -> -1800.0).
DEFAULT_AMPLITUDE_DECIMALS = 3


def amplitude_decimals(resolution: float | None) -> int:
    """Decimal places that express a command of this DAC step.

    The decade at or below one DAC step: the digitiser cannot output a finer
    difference, and a decimal grid no coarser than the step keeps every level
    the protocol could have set (0.122 pA step -> 0.1 pA; 0.0061 mV -> 0.001 mV).
    The level itself is not snapped to DAC steps: protocols state decimal levels
    (-50 pA), which the DAC only approximates.
    """
    if resolution is None or not math.isfinite(resolution) or resolution <= 0:
        return DEFAULT_AMPLITUDE_DECIMALS
    return max(-math.floor(math.log10(resolution)), 0)


def rounded(stim: Stimulus, *, decimals: int) -> Stimulus:
    """``stim`` with its amplitude rounded to ``decimals`` places (``-0.0`` as ``0.0``)."""
    if stim.amplitude is None or not math.isfinite(stim.amplitude):
        return stim
    return replace(stim, amplitude=round(stim.amplitude, decimals) + 0.0)


#: An epoch of a square command: first sample, first sample after it, level.
Epoch = tuple[int, int, float]


def stepped_epochs(sweep: Sweep, *, params: StimulusParams = StimulusParams()) -> list[Epoch]:
    """The constant epochs of a square command that leave the holding level.

    After any test pulse, in time order; a sweep without a command has none.
    """
    command = sweep.command
    if command is None:
        return []
    changes, level0 = _stimulus_changes(command, sweep.sampling_rate_hz, params)
    starts, ends = changes[:-1] + 1, changes[1:] + 1
    levels = np.nan_to_num(command[starts])
    keep = np.abs(levels - level0) > _LEVEL_TOL
    return [
        (int(a), int(b), float(v))
        for a, b, v in zip(starts[keep], ends[keep], levels[keep], strict=True)
    ]


def _on_epoch(sweep: Sweep, stim: Stimulus, epoch: Epoch, params: StimulusParams) -> Stimulus:
    start, end, level = epoch
    length_s = (end - start) / sweep.sampling_rate_hz
    kind: StimulusKind = "other"
    if length_s <= params.short_square_max_s:
        kind = "short_square"
    elif length_s >= params.long_square_min_s:
        kind = "long_square"
    return replace(stim, kind=kind, amplitude=level, start_index=start, end_index=end)


def skip_fixed_prepulse(
    sweeps: Sequence[Sweep],
    stims: Sequence[Stimulus],
    *,
    params: StimulusParams = StimulusParams(),
) -> list[Stimulus]:
    """Move a series' stimulus window off a fixed pre-pulse onto the test step.

    Some protocols open every sweep with the same pulse (e.g. -100 pA for
    300 ms, to measure input resistance) and step the test current later
    (``FICurve_Hyperpolarizing``: pulse, rest, step; Clampex ``IC1``: pulse
    straight into the step). The first epoch is then the pulse, not the test.
    The rule needs the series: when at least two current-clamp sweeps have
    two or more stepped epochs, their *first* epochs are all the same (window
    and level) and their second epochs differ in level, the first is a fixed
    pre-pulse and the window moves to the second. Sweeps whose only stepped
    epoch is that pre-pulse (a 0 pA test step) get the series' test window at
    their own level there. "Dual" protocols, whose fixed pulse comes after
    the step, keep their first epoch (it is the one that varies), and with
    ``window="ipfx"`` nothing moves (IPFX's first-to-last span).

    Returns
    -------
    list
        One stimulus per sweep: ``stims`` with the windows moved where the rule holds.
    """
    out = list(stims)
    if params.window != "first_epoch":
        return out
    epochs: dict[int, list[Epoch]] = {}
    for k, (sweep, stim) in enumerate(zip(sweeps, stims, strict=True)):
        if sweep.clamp_mode == "current_clamp" and stim.kind in (
            "long_square",
            "short_square",
            "other",
        ):
            epochs[k] = stepped_epochs(sweep, params=params)
    multi = [k for k, e in epochs.items() if len(e) >= 2]
    if len(multi) < 2:
        return out
    firsts = {(e[0][0], e[0][1], round(e[0][2], 3)) for e in (epochs[k] for k in multi)}
    seconds = {round(epochs[k][1][2], 3) for k in multi}
    if len(firsts) != 1 or len(seconds) < 2:
        return out
    pre = firsts.pop()
    windows: dict[tuple[int, int], int] = {}
    for k in multi:
        test = epochs[k][1]
        out[k] = _on_epoch(sweeps[k], stims[k], test, params)
        windows[(test[0], test[1])] = windows.get((test[0], test[1]), 0) + 1
    (t0, t1), _ = max(windows.items(), key=lambda item: item[1])
    for k, e in epochs.items():
        if len(e) == 1 and (e[0][0], e[0][1], round(e[0][2], 3)) == pre:
            command = sweeps[k].command
            assert command is not None  # it has a stepped epoch
            level = float(np.nan_to_num(command[t0]))
            out[k] = _on_epoch(sweeps[k], stims[k], (t0, t1, level), params)
    return out
