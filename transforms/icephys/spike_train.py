"""Spike-train features of sweeps (IPFX ``basic_spike_train_features``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The features, in the order of the returned mappings.
TRAIN_KEYS = (
    "avg_rate_hz",
    "latency_s",
    "first_isi_s",
    "mean_isi_s",
    "median_isi_s",
    "isi_cv",
    "adapt",
)


def train_rows(
    threshold_t_s: Sequence[np.ndarray], *, start_s: float, end_s: float
) -> dict[str, np.ndarray]:
    """Rate, latency, ISI statistics and adaptation index of sweeps sharing a window.

    Parameters
    ----------
    threshold_t_s
        Per sweep, the threshold times of its spikes, ascending, in s.
    start_s, end_s
        The analysis window; the rate counts spikes within it.

    Returns
    -------
    dict
        One float array per name in :data:`TRAIN_KEYS`, a value per sweep, NaN
        where undefined: ``avg_rate_hz``, ``latency_s`` (needs a spike),
        ``first_isi_s``, ``mean_isi_s``, ``median_isi_s``, ``isi_cv`` (std/mean,
        0 for one ISI as in IPFX; these need two spikes) and ``adapt`` (mean of
        (ISI[k+1]-ISI[k])/(ISI[k+1]+ISI[k]); needs three).
    """
    n = len(threshold_t_s)
    counts = np.fromiter((t.size for t in threshold_t_s), dtype=np.int64, count=n)
    t = np.concatenate(threshold_t_s).astype(np.float64, copy=False) if n else np.zeros(0)
    out = {name: np.full(n, np.nan) for name in TRAIN_KEYS}
    dur = end_s - start_s
    row = np.repeat(np.arange(n), counts)
    if dur > 0:
        inside = (t >= start_s) & (t <= end_s)
        out["avg_rate_hz"] = np.bincount(row, weights=inside, minlength=n) / dur
    has_spike = counts > 0
    out["latency_s"][has_spike] = t[(np.cumsum(counts) - counts)[has_spike]] - start_s

    # ISIs, each labelled with its sweep; sweeps are contiguous and ascending
    same = row[1:] == row[:-1]
    isi = np.diff(t)[same]
    irow = row[1:][same]
    m = np.maximum(counts - 1, 0)
    first = np.cumsum(m) - m
    has_isi = m > 0
    mh = m[has_isi]
    out["first_isi_s"][has_isi] = isi[first[has_isi]]
    mean_all = np.bincount(irow, weights=isi, minlength=n) / np.maximum(m, 1)
    mean = mean_all[has_isi]
    dev = isi - mean_all[irow]
    std = np.sqrt(np.bincount(irow, weights=dev * dev, minlength=n)[has_isi] / mh)
    out["mean_isi_s"][has_isi] = mean
    with np.errstate(divide="ignore", invalid="ignore"):
        out["isi_cv"][has_isi] = np.where(mean > 0, std / mean, np.nan)
    ranked = isi[np.lexsort((isi, irow))]  # each sweep's ISIs sorted, sweeps in order
    lo, hi = first[has_isi] + (mh - 1) // 2, first[has_isi] + mh // 2
    out["median_isi_s"][has_isi] = (ranked[lo] + ranked[hi]) / 2.0

    pair = irow[1:] == irow[:-1]
    later, earlier = isi[1:][pair], isi[:-1][pair]
    total = later + earlier
    ratio = np.where(total > 0, (later - earlier) / np.where(total > 0, total, 1.0), 0.0)
    two = m > 1
    out["adapt"][two] = np.bincount(irow[1:][pair], weights=ratio, minlength=n)[two] / (m[two] - 1)
    return out


def train_features(
    threshold_t_s: np.ndarray, *, start_s: float, end_s: float
) -> dict[str, float | None]:
    """:func:`train_rows` of one sweep, with ``None`` for undefined features.

    Parameters
    ----------
    threshold_t_s
        Threshold times of the sweep's spikes, ascending, in s.
    start_s, end_s
        The analysis window; the rate counts spikes within it.
    """
    rows = train_rows([np.asarray(threshold_t_s)], start_s=start_s, end_s=end_s)
    return {name: (None if np.isnan(x := float(rows[name][0])) else x) for name in TRAIN_KEYS}
