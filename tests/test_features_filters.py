"""The IPFX filter (zero-phase 4-pole Bessel) and the slope bound that lets
subthreshold sweeps skip it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from transforms.icephys.filters import bessel_cutoff_khz, dvdt_mv_per_ms, lowpass, slope_gain

RATES_HZ = [10_000.0, 20_000.0, 50_000.0, 200_000.0]


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_lowpass_is_scipy_filtfilt_bit_for_bit(rate_hz: float) -> None:
    cutoff = bessel_cutoff_khz(rate_hz)
    v = np.random.default_rng(0).normal(-65.0, 3.0, (3, 4000))
    b, a = signal.bessel(4, cutoff * 1e3 / (rate_hz / 2.0), "low")
    np.testing.assert_array_equal(
        lowpass(v, sampling_rate_hz=rate_hz, cutoff_khz=cutoff), signal.filtfilt(b, a, v, axis=-1)
    )


def _worst_case_trace(rate_hz: float, cutoff_khz: float, n: int) -> np.ndarray:
    """A trace whose slopes follow the sign of the two-pass kernel around its middle,
    the input that makes the filtered slope there as large as the kernel's L1 norm."""
    b, a = signal.bessel(4, cutoff_khz * 1e3 / (rate_hz / 2.0), "low")
    impulse = np.zeros(4096)
    impulse[0] = 1.0
    h = signal.lfilter(b, a, impulse)
    g = np.correlate(h, h, mode="full")[4096 - 200 : 4096 + 199]  # lags -199..199
    slope = np.zeros(n - 1)
    mid = n // 2
    slope[mid - 199 : mid + 200] = np.sign(g)
    return np.r_[0.0, np.cumsum(slope)] / (rate_hz * 1e-3)  # 1 mV/ms steps


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_slope_gain_bounds_the_filtered_slope_and_is_tight(rate_hz: float) -> None:
    cutoff = bessel_cutoff_khz(rate_hz)
    settle = 200
    gain = slope_gain(cutoff, rate_hz, settled_samples=settle)
    rng = np.random.default_rng(1)
    traces = [
        rng.normal(-70.0, 0.5, 6000),  # noise
        np.where(np.arange(6000) % 700 < 350, -80.0, -40.0),  # square steps
        np.cumsum(rng.choice([-1.0, 1.0], 6000)),  # random walk
        _worst_case_trace(rate_hz, cutoff, 6000),
    ]
    ratios = []
    for v in traces:
        raw = np.abs(np.diff(v)).max() * rate_hz * 1e-3
        filt = dvdt_mv_per_ms(v, sampling_rate_hz=rate_hz, cutoff_khz=cutoff)
        ratios.append(np.abs(filt[: v.size - settle]).max() / raw)
    assert max(ratios) <= gain
    assert ratios[-1] >= gain / 1.02  # the worst case reaches the bound (margin 1 %)
    # an un-decayed response (cutoff far below the sampling rate) gives no bound
    assert slope_gain(0.001, 200_000.0, settled_samples=settle) == float("inf")


def test_slope_gain_is_a_lookup_for_every_settled_length() -> None:
    """The kernel's norms are computed once per design: a new sweep length (every
    distinct file has its own) costs a table lookup, not a 2**14-sample correlation
    (0.9 s per call before)."""
    from itertools import pairwise

    from transforms.icephys.filters import _kernel_norms

    before = _kernel_norms.cache_info().misses
    gains = [slope_gain(7.77, 19_999.0, settled_samples=s) for s in range(0, 20_000, 7)]
    assert _kernel_norms.cache_info().misses == before + 1
    assert all(a >= b for a, b in pairwise(gains))  # the backward-start tail shrinks
    assert gains[-1] == slope_gain(7.77, 19_999.0, settled_samples=10**9)
