"""Vectorised segment searches against plain per-segment loops.

Segments are drawn short (hits inside the probe window) and long (hits far past
it, or none), with NaN runs, so both the probe and the exact fallback are used.
"""

from __future__ import annotations

import numpy as np
import pytest

from transforms.icephys._segments import _PROBE, first_where, last_where, seg_argext, seg_min


def _data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, 20_000).round(1)  # rounding makes ties common
    x[rng.integers(0, x.size, 40)] = np.nan
    x[5_000:5_300] = np.nan  # a whole segment can be NaN
    starts = rng.integers(0, x.size - 1, 300)
    lengths = np.where(
        rng.random(300) < 0.5, rng.integers(0, _PROBE, 300), rng.integers(0, 4 * _PROBE * 8, 300)
    )
    ends = np.minimum(starts + lengths, x.size)
    starts[:3], ends[:3] = [5_000, 5_010, 7], [5_300, 5_200, 7]  # all-NaN, all-NaN, empty
    return x, starts, ends


def _naive_argext(x: np.ndarray, s: int, e: int, *, largest: bool) -> int:
    seg = x[s:e]
    if not np.isfinite(seg).any():
        return -1
    return s + int(np.nanargmax(seg) if largest else np.nanargmin(seg))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("largest", [True, False])
def test_seg_argext_is_the_first_nan_ignoring_extreme(seed: int, largest: bool) -> None:
    x, starts, ends = _data(seed)
    got = seg_argext(x, starts, ends, largest=largest)
    want = [_naive_argext(x, s, e, largest=largest) for s, e in zip(starts, ends, strict=True)]
    np.testing.assert_array_equal(got, want)
    # the far fallback is exercised, not only the probe
    assert ((got - starts) >= _PROBE).sum() > 10


@pytest.mark.parametrize("seed", range(4))
def test_seg_min_ignores_nan_and_empty_is_inf(seed: int) -> None:
    x, starts, ends = _data(seed)
    got = seg_min(x, starts, ends)
    want = [
        np.inf if e <= s else (np.nanmin(x[s:e]) if np.isfinite(x[s:e]).any() else np.nan)
        for s, e in zip(starts, ends, strict=True)
    ]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", range(4))
def test_first_and_last_where_match_a_scan(seed: int) -> None:
    x, starts, ends = _data(seed)
    thr = np.random.default_rng(seed + 100).normal(2.0, 0.5, starts.size)
    got = first_where(x, starts, ends, np.greater_equal, thresholds=thr)
    want = []
    for s, e, t in zip(starts, ends, thr, strict=True):
        hit = np.flatnonzero(x[s:e] >= t)
        want.append(s + int(hit[0]) if hit.size else -1)
    np.testing.assert_array_equal(got, want)
    assert ((got - starts) >= _PROBE).sum() > 10

    # last_where: the largest j in (low, high] with the condition
    lows, highs = starts - 1, ends - 1
    got_b = last_where(x, lows, highs, np.greater_equal, thresholds=thr)
    want_b = []
    for lo, hi, t in zip(lows, highs, thr, strict=True):
        hit = np.flatnonzero(x[lo + 1 : hi + 1] >= t)
        want_b.append(lo + 1 + int(hit[-1]) if hit.size else -1)
    np.testing.assert_array_equal(got_b, want_b)
    assert ((highs - got_b)[got_b >= 0] >= _PROBE).sum() > 10

    # without thresholds: a one-argument condition
    got_n = first_where(x, starts, ends, np.isnan)
    want_n = []
    for s, e in zip(starts, ends, strict=True):
        hit = np.flatnonzero(np.isnan(x[s:e]))
        want_n.append(s + int(hit[0]) if hit.size else -1)
    np.testing.assert_array_equal(got_n, want_n)
