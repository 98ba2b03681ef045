"""Pairwise spike-train synchrony: STTC and the area under the normalised cross-correlation.

Both take sorted spike-time arrays in seconds.

* :func:`sttc` is the spike time tiling coefficient of Cutts & Eglen (2014,
  J Neurosci 34:14288): ``0.5 * ((PA - TB) / (1 - PA*TB) + (PB - TA) / (1 - PB*TA))``
  with ``TA`` the fraction of ``[start_s, end_s]`` lying within ``±dt_s`` of a spike
  of A and ``PA`` the fraction of A's spikes within ``±dt_s`` (inclusive) of a spike
  of B. Conventions: a train without spikes makes the coefficient undefined
  (``nan``); a half-term whose denominator ``1 - P*T`` is 0 (the other train tiles
  the whole interval, so coincidence carries no information) contributes 0, as in
  Cutts & Eglen's code.
* :func:`xcorr_area` is the Axion Neural Metric Tool's "area under normalized
  cross-correlation" as we define it: the cross-correlogram of A and B integrated
  over lags ``-window_s .. +window_s`` (the NMT synchrony window, 20 ms by
  default), divided by ``sqrt(NA * NB)``, the geometric mean of the two
  zero-lag autocorrelations of the binary trains (= their spike counts). It is 1
  for identical trains whose spikes are more than a window apart, 0 for trains
  with no spike pairs within the window. Axion's exact binning is not public;
  this bin-free form is its limit for bins much shorter than the window.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from transforms.errors import SpecError

FloatArray = npt.NDArray[np.float64]


def tiling_fraction(times_s: FloatArray, *, dt_s: float, start_s: float, end_s: float) -> float:
    """Fraction of ``[start_s, end_s]`` within ``±dt_s`` of a spike (STTC's ``T``).

    The union of the windows ``[t - dt_s, t + dt_s]``, clipped to the interval,
    divided by its length. ``times_s`` must be sorted and inside the interval.
    """
    length_s = end_s - start_s
    if length_s <= 0:
        raise SpecError(f"STTC interval must have a positive length, got [{start_s}, {end_s}]")
    if times_s.size == 0:
        return 0.0
    # Consecutive windows overlap when spikes are closer than 2*dt: count the gap once.
    covered = float(np.minimum(np.diff(times_s), 2.0 * dt_s).sum()) + 2.0 * dt_s
    covered -= max(0.0, start_s - (times_s[0] - dt_s))
    covered -= max(0.0, times_s[-1] + dt_s - end_s)
    return min(1.0, covered / length_s)


def proportion_within(a_s: FloatArray, b_s: FloatArray, *, dt_s: float) -> float:
    """Fraction of the spikes of A lying within ``±dt_s`` (inclusive) of a spike of B."""
    if a_s.size == 0:
        return math.nan
    if b_s.size == 0:
        return 0.0
    # First B spike at or after a - dt; A is covered if that spike is <= a + dt.
    i = np.searchsorted(b_s, a_s - dt_s, side="left")
    inside = i < b_s.size
    hit = np.zeros(a_s.size, dtype=bool)
    hit[inside] = b_s[i[inside]] <= a_s[inside] + dt_s
    return float(hit.mean())


def _half_term(p: float, t: float) -> float:
    denominator = 1.0 - p * t
    return 0.0 if denominator == 0.0 else (p - t) / denominator


def sttc(
    a_s: FloatArray,
    b_s: FloatArray,
    *,
    dt_s: float,
    start_s: float,
    end_s: float,
    ta: float | None = None,
    tb: float | None = None,
) -> float:
    """Spike time tiling coefficient of two sorted spike trains (Cutts & Eglen 2014).

    Parameters
    ----------
    a_s, b_s
        Sorted spike times in seconds, inside ``[start_s, end_s]``.
    dt_s
        The synchrony window (each side).
    start_s, end_s
        The recording interval the tiling fractions refer to.
    ta, tb
        Precomputed tiling fractions (for many pairs); computed when ``None``.

    Returns
    -------
    float
        In ``[-1, 1]``; ``nan`` when either train is empty.
    """
    if dt_s <= 0:
        raise SpecError(f"STTC window must be positive, got dt_s={dt_s}")
    if a_s.size == 0 or b_s.size == 0:
        return math.nan
    if ta is None:
        ta = tiling_fraction(a_s, dt_s=dt_s, start_s=start_s, end_s=end_s)
    if tb is None:
        tb = tiling_fraction(b_s, dt_s=dt_s, start_s=start_s, end_s=end_s)
    pa = proportion_within(a_s, b_s, dt_s=dt_s)
    pb = proportion_within(b_s, a_s, dt_s=dt_s)
    return 0.5 * _half_term(pa, tb) + 0.5 * _half_term(pb, ta)


def coincidences(a_s: FloatArray, b_s: FloatArray, *, window_s: float) -> int:
    """Number of spike pairs (a, b) with ``|a - b| <= window_s``."""
    if a_s.size == 0 or b_s.size == 0:
        return 0
    hi = np.searchsorted(b_s, a_s + window_s, side="right")
    lo = np.searchsorted(b_s, a_s - window_s, side="left")
    return int((hi - lo).sum())


def xcorr_area(a_s: FloatArray, b_s: FloatArray, *, window_s: float) -> float:
    """Area under the normalised cross-correlation within ``±window_s`` (module docstring).

    Returns ``nan`` when either train is empty.
    """
    if window_s <= 0:
        raise SpecError(f"synchrony window must be positive, got window_s={window_s}")
    if a_s.size == 0 or b_s.size == 0:
        return math.nan
    return coincidences(a_s, b_s, window_s=window_s) / math.sqrt(a_s.size * b_s.size)
