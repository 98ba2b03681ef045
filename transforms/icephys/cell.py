"""Cell-level features from a long-square series (IPFX ``LongSquareAnalysis``).

Definitions: rheobase is the smallest positive amplitude of a spiking sweep;
the f-I slope is a least-squares line through (amplitude, rate) of all spiking
sweeps; the hero sweep is the first spiking sweep with amplitude in
(rheobase + 39, rheobase + 61) pA, else the spiking sweep closest to
rheobase + 39 pA; sag comes from the subthreshold sweep whose peak deflection
is closest to -100 mV; input resistance and tau from subthreshold sweeps with
``subthresh_min_amp_pa < amplitude < 0``, tau fitted up to the median time of
their peak deflections and averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LongSquareSweep:
    """What the cell analysis needs from one QC-passing long-square sweep."""

    sweep_number: int
    v: np.ndarray
    start: int
    end: int
    rate_hz: float
    amp_pa: float
    avg_rate_hz: float
    v_baseline_mv: float
    peak_deflect_mv: float
    sag: float
    i_at_min_pa: float
    v_min_mv: float
    t_min_index: int


def rheobase_index(sweeps: Sequence[LongSquareSweep]) -> int | None:
    """Position in ``sweeps`` of the rheobase sweep, or None."""
    best: int | None = None
    for k, s in enumerate(sweeps):
        if s.avg_rate_hz > 0 and s.amp_pa > 0 and (best is None or s.amp_pa < sweeps[best].amp_pa):
            best = k
    return best


def hero_index(
    sweeps: Sequence[LongSquareSweep],
    rheobase_pa: float,
    *,
    min_offset_pa: float,
    max_offset_pa: float,
) -> int | None:
    """Position of the hero sweep (see module docstring), or None."""
    spiking = sorted((s.amp_pa, k) for k, s in enumerate(sweeps) if s.avg_rate_hz > 0)
    if not spiking:
        return None
    lo, hi = rheobase_pa + min_offset_pa, rheobase_pa + max_offset_pa
    for amp, k in spiking:
        if lo < amp < hi:
            return k
    return min(spiking, key=lambda ak: abs(lo - ak[0]))[1]


def fi_slope_hz_per_pa(sweeps: Sequence[LongSquareSweep]) -> float | None:
    amps = np.array([s.amp_pa for s in sweeps if s.avg_rate_hz > 0])
    rates = np.array([s.avg_rate_hz for s in sweeps if s.avg_rate_hz > 0])
    if amps.size < 2 or np.ptp(amps) == 0:
        return None
    return float(np.polyfit(amps, rates, 1)[0])
