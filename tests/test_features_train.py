"""Spike-train features of many sweeps at once, against the definitions in plain Python."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from transforms.icephys.spike_train import TRAIN_KEYS, train_features, train_rows

START_S, END_S = 0.1, 1.1


def _reference(t: list[float]) -> dict[str, float]:
    """IPFX basic_spike_train_features, written out per sweep."""
    nan = math.nan
    out = dict.fromkeys(TRAIN_KEYS, nan)
    out["avg_rate_hz"] = sum(START_S <= x <= END_S for x in t) / (END_S - START_S)
    if t:
        out["latency_s"] = t[0] - START_S
    isi = [b - a for a, b in itertools.pairwise(t)]
    if isi:
        mean = statistics.fmean(isi)
        out.update(
            first_isi_s=isi[0],
            mean_isi_s=mean,
            median_isi_s=statistics.median(isi),
            isi_cv=statistics.pstdev(isi) / mean,
        )
    if len(isi) >= 2:
        out["adapt"] = statistics.fmean((b - a) / (b + a) for a, b in itertools.pairwise(isi))
    return out


def test_train_rows_matches_the_per_sweep_definitions() -> None:
    rng = np.random.default_rng(3)
    sweeps = [np.zeros(0), np.array([0.35]), np.array([0.2, 0.26]), np.array([0.05, 0.2, 0.9, 1.3])]
    for n in (3, 7, 8, 9, 40):  # odd and even ISI counts; past numpy's 8-element blocks
        sweeps.append(np.sort(rng.uniform(START_S, END_S, n)))
    sweeps.append(np.zeros(0))  # an empty last sweep
    got = train_rows(sweeps, start_s=START_S, end_s=END_S)
    for r, t in enumerate(sweeps):
        want = _reference(t.tolist())
        for name in TRAIN_KEYS:
            assert got[name][r] == pytest.approx(want[name], rel=1e-12, abs=1e-15, nan_ok=True), (
                r,
                name,
            )


def test_train_features_is_one_row_with_none_for_undefined() -> None:
    one = train_features(np.array([0.4]), start_s=START_S, end_s=END_S)
    assert one["avg_rate_hz"] == pytest.approx(1.0)
    assert one["latency_s"] == pytest.approx(0.3)
    assert one["first_isi_s"] is None and one["adapt"] is None
    empty = train_rows([], start_s=START_S, end_s=END_S)
    assert all(v.size == 0 for v in empty.values())
    # a zero-length window has no rate
    assert train_features(np.array([0.4]), start_s=0.4, end_s=0.4)["avg_rate_hz"] is None
