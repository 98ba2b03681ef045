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

from transforms.errors import InvalidArgument

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def tiling_fraction(times_s: FloatArray, *, dt_s: float, start_s: float, end_s: float) -> float:
    """Fraction of ``[start_s, end_s]`` within ``±dt_s`` of a spike (STTC's ``T``).

    The union of the windows ``[t - dt_s, t + dt_s]``, clipped to the interval,
    divided by its length. ``times_s`` must be sorted and inside the interval.
    """
    length_s = end_s - start_s
    if length_s <= 0:
        raise InvalidArgument(
            f"STTC interval must have a positive length, got [{start_s}, {end_s}]"
        )
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
        raise InvalidArgument(f"STTC window must be positive, got dt_s={dt_s}")
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
        raise InvalidArgument(f"synchrony window must be positive, got window_s={window_s}")
    if a_s.size == 0 or b_s.size == 0:
        return math.nan
    return coincidences(a_s, b_s, window_s=window_s) / math.sqrt(a_s.size * b_s.size)


def tiling_fractions(
    times_s: FloatArray,
    owner: IntArray,
    *,
    n_trains: int,
    dt_s: float,
    start_s: float,
    end_s: float,
) -> FloatArray:
    """:func:`tiling_fraction` of every train of a combined train, at once.

    ``times_s`` sorted within each owner (a combined train sorted by time is).
    """
    length_s = end_s - start_s
    if length_s <= 0:
        raise InvalidArgument(
            f"STTC interval must have a positive length, got [{start_s}, {end_s}]"
        )
    order = np.argsort(owner, kind="stable")
    t, o = times_s[order], owner[order]
    counts = np.bincount(o, minlength=n_trains)
    same = o[1:] == o[:-1]
    gaps = np.bincount(
        o[1:][same], weights=np.minimum(np.diff(t)[same], 2.0 * dt_s), minlength=n_trains
    )
    covered = gaps + 2.0 * dt_s * (counts > 0)
    ends = np.cumsum(counts)
    has = counts > 0
    first = np.full(n_trains, np.nan)
    last = np.full(n_trains, np.nan)
    first[has] = t[ends[has] - counts[has]]
    last[has] = t[ends[has] - 1]
    covered[has] -= np.maximum(0.0, start_s - (first[has] - dt_s))
    covered[has] -= np.maximum(0.0, last[has] + dt_s - end_s)
    return np.minimum(1.0, covered / length_s)


def pairwise_synchrony(
    times_s: FloatArray,
    owner: IntArray,
    *,
    n_trains: int,
    dt_s: float,
    window_s: float,
    start_s: float,
    end_s: float,
    chunk_spikes: int = 2048,
) -> tuple[FloatArray, FloatArray]:
    """STTC and cross-correlation area of every pair of trains in a combined train.

    Equal to :func:`sttc` and :func:`xcorr_area` called on every pair, in
    ``O(n_spikes * n_trains)`` instead of ``O(n_trains**2 * n log n)``: for each
    spike, the spikes of every train inside its window are read off cumulative
    per-train counts of the combined train at the window's two edges.

    Parameters
    ----------
    times_s
        Spike times of all trains, sorted ascending, inside ``[start_s, end_s]``.
    owner
        The train (``0 .. n_trains-1``) of each spike.
    n_trains
        Number of trains.
    dt_s, window_s
        STTC window and cross-correlation window (each side).
    start_s, end_s
        The interval of STTC's tiling fractions.
    chunk_spikes
        Spikes handled at once: memory is ``O(chunk_spikes * n_trains)``.

    Returns
    -------
    sttc, xcorr_area
        ``(n_trains, n_trains)`` matrices; ``nan`` on the diagonal and for pairs
        with an empty train.
    """
    if dt_s <= 0 or window_s <= 0:
        raise InvalidArgument(f"synchrony windows must be positive, got {dt_s}, {window_s}")
    if times_s.shape != owner.shape:
        raise InvalidArgument("pairwise_synchrony: times_s and owner differ in length")
    if owner.size and (owner.min() < 0 or owner.max() >= n_trains):
        raise InvalidArgument(f"pairwise_synchrony: owner outside 0..{n_trains - 1}")
    n = n_trains
    counts = np.bincount(owner, minlength=n).astype(np.float64)
    coinc = np.zeros((n, n), dtype=np.int64)  # pairs (a of i, b of j) with |a - b| <= window_s
    hits = np.zeros((n, n), dtype=np.int64)  # spikes of i with a spike of j within dt_s

    # The same comparisons as searchsorted in coincidences() / proportion_within().
    def edges(w: float) -> tuple[IntArray, IntArray]:
        return (
            np.searchsorted(times_s, times_s - w, side="left"),
            np.searchsorted(times_s, times_s + w, side="right"),
        )

    x_lo, x_hi = edges(window_s)
    s_lo, s_hi = (x_lo, x_hi) if dt_s == window_s else edges(dt_s)
    for k0 in range(0, times_s.size, chunk_spikes):
        k1 = min(times_s.size, k0 + chunk_spikes)
        base = min(x_lo[k0], s_lo[k0])
        top = max(x_hi[k1 - 1], s_hi[k1 - 1])
        # cum[r, j]: spikes of train j among combined spikes base .. base + r - 1
        cum = np.zeros((top - base + 1, n), dtype=np.int32)
        cum[np.arange(1, top - base + 1), owner[base:top]] = 1
        np.cumsum(cum, axis=0, out=cum)
        # this chunk's spikes grouped by train, so that per-train sums are reduceat's
        own = owner[k0:k1]
        by_train = np.argsort(own, kind="stable") + k0
        present = np.bincount(own, minlength=n) > 0
        starts = np.searchsorted(own[by_train - k0], np.flatnonzero(present))
        within = cum[x_hi[by_train] - base] - cum[x_lo[by_train] - base]
        coinc[present] += np.add.reduceat(within, starts, axis=0, dtype=np.int64)
        if dt_s != window_s:  # the default windows are equal: one count serves both
            within = cum[s_hi[by_train] - base] - cum[s_lo[by_train] - base]
        hits[present] += np.add.reduceat(within > 0, starts, axis=0, dtype=np.int64)
    tiles = tiling_fractions(times_s, owner, n_trains=n, dt_s=dt_s, start_s=start_s, end_s=end_s)
    with np.errstate(invalid="ignore", divide="ignore"):
        area = coinc / np.sqrt(np.outer(counts, counts))
        p = hits / counts[:, None]  # p[i, j]: PA with A = i, B = j
        t_other = tiles[None, :]
        den = 1.0 - p * t_other
        half = np.where(den == 0.0, 0.0, (p - t_other) / np.where(den == 0.0, 1.0, den))
    coeff = 0.5 * half + 0.5 * half.T
    empty = counts == 0
    for m in (coeff, area):
        m[empty, :] = np.nan
        m[:, empty] = np.nan
        np.fill_diagonal(m, np.nan)
    return coeff, area
