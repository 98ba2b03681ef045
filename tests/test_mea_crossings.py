"""The compiled threshold-crossing finder against the plain numpy rule it replaced."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.mea.kernels import crossings


def _numpy_crossings(
    y: np.ndarray, threshold: np.ndarray, sign: float, both: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Rows past the threshold whose previous row is not, sorted by (channel, row)."""
    if both:
        above = np.abs(y) > threshold
    elif sign > 0:
        above = y > threshold
    else:
        above = y < -threshold
    row, ch = np.nonzero(above[1:] & ~above[:-1])
    order = np.lexsort((row, ch))
    return ch[order], row[order] + 1


@pytest.mark.parametrize(("sign", "both"), [(-1.0, False), (1.0, False), (1.0, True)])
def test_crossings_equal_the_numpy_rule(sign: float, both: bool) -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(0.0, 1.0, (3_000, 77)).astype(np.float32)
    threshold = rng.uniform(1.5, 3.0, 77).astype(np.float32)
    threshold[5] = np.inf  # a flat channel: never crosses
    y[100:103, 9] = -threshold[9]  # exactly at the threshold: not past it
    y[200:203, 9] = threshold[9]
    y[300, 11] = np.nan  # a NaN is never past the threshold
    y[301, 11] = -10.0
    y[302, 11] = 10.0
    cap = 1 << 16
    rows, chs = np.empty(cap, np.int64), np.empty(cap, np.int64)
    n = crossings(y, threshold, np.float32(sign), both, rows, chs)
    assert n > 100
    order = np.argsort(chs[:n], kind="stable")
    ch_ref, row_ref = _numpy_crossings(y, threshold, sign, both)
    np.testing.assert_array_equal(chs[:n][order], ch_ref)
    np.testing.assert_array_equal(rows[:n][order], row_ref)
    # too small a buffer is reported, not overrun
    small_rows, small_chs = np.zeros(n - 1, np.int64), np.zeros(n - 1, np.int64)
    assert crossings(y, threshold, np.float32(sign), both, small_rows, small_chs) == -1
