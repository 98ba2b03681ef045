"""Spike-train features of one sweep (IPFX ``basic_spike_train_features``)."""

from __future__ import annotations

import numpy as np


def train_features(
    threshold_t_s: np.ndarray, *, start_s: float, end_s: float
) -> dict[str, float | None]:
    """Rate, latency, ISI statistics and adaptation index of one sweep.

    Parameters
    ----------
    threshold_t_s
        Threshold times of the sweep's spikes, ascending, in s.
    start_s, end_s
        The analysis window; the rate counts spikes within it.

    Returns
    -------
    dict
        ``avg_rate_hz``, ``latency_s``, ``first_isi_s``, ``mean_isi_s``,
        ``median_isi_s``, ``isi_cv`` (std/mean, 0 for one ISI as in IPFX) and
        ``adapt`` (mean of (ISI[k+1]-ISI[k])/(ISI[k+1]+ISI[k]); needs two ISIs).
    """
    t = np.asarray(threshold_t_s, dtype=np.float64)
    dur = end_s - start_s
    n_in = int(np.count_nonzero((t >= start_s) & (t <= end_s)))
    out: dict[str, float | None] = {
        "avg_rate_hz": n_in / dur if dur > 0 else None,
        "latency_s": None,
        "first_isi_s": None,
        "mean_isi_s": None,
        "median_isi_s": None,
        "isi_cv": None,
        "adapt": None,
    }
    if t.size == 0:
        return out
    out["latency_s"] = float(t[0] - start_s)
    if t.size < 2:
        return out
    isi = np.diff(t)
    mean = float(isi.mean())
    out["first_isi_s"] = float(isi[0])
    out["mean_isi_s"] = mean
    out["median_isi_s"] = float(np.median(isi))
    out["isi_cv"] = float(isi.std() / mean) if mean > 0 else None
    if isi.size >= 2:
        s = isi[1:] + isi[:-1]
        d = np.where(s > 0, (isi[1:] - isi[:-1]) / np.where(s > 0, s, 1.0), 0.0)
        out["adapt"] = float(d.mean())
    return out
