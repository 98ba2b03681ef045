"""The block-matrix IIR filter against scipy's sosfilt, the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from transforms.mea.iir import BlockIIR

FS_HZ = 12_500.0
EPS32 = float(np.finfo(np.float32).eps)


def _run(f: BlockIIR, x: np.ndarray, cuts: list[int], state: np.ndarray) -> np.ndarray:
    """Filter ``x`` in calls cut at ``cuts`` (block-aligned), concatenating the outputs."""
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(x)], strict=True):
        rows = -(-(b - a) // f.block_samples) * f.block_samples
        y = np.empty((rows, x.shape[1]), np.float32)
        state = f.apply(x[a:b], state, out=y)
        out.append(y[: b - a])
    return np.vstack(out)


@pytest.mark.parametrize("order", [1, 2, 4])
@pytest.mark.parametrize("block", [8, 32])
def test_block_iir_equals_sosfilt_within_float32_rounding(order: int, block: int) -> None:
    sos = signal.butter(order, [200, 3000], btype="bandpass", fs=FS_HZ, output="sos")
    f = BlockIIR(sos, block_samples=block)
    rng = np.random.default_rng(order * 100 + block)
    x = rng.normal(0.0, 300.0, (5_000, 70)).astype(np.int16)  # ADC counts, 70 channels
    x[1000:1003] = 30_000  # a large step: the transient must match too
    ref = signal.sosfilt(sos, x.astype(np.float64), axis=0)
    y = _run(f, x, [block * 40, block * 97], f.initial_state(np.zeros(x.shape[1])))
    # Each output is a float32 dot product of B + n_state terms with float32-rounded
    # coefficients; the stable filter does not amplify state rounding beyond its L1
    # gain. So |error| <= (B + n_state) * eps32 * L1 * max|x|, with a factor 2 slack.
    impulse = signal.sosfilt(sos, np.r_[1.0, np.zeros(8191)])
    bound = 2 * (block + f.n_state) * EPS32 * np.abs(impulse).sum() * np.abs(x).max()
    err = np.abs(y - ref).max()
    assert err <= bound, (err, bound)
    assert err > 0  # computed in float32, not a copy of the float64 reference


def test_block_iir_is_independent_of_call_cuts_and_lanes() -> None:
    sos = signal.butter(2, [200, 3000], btype="bandpass", fs=FS_HZ, output="sos")
    f = BlockIIR(sos)
    x = np.random.default_rng(3).normal(0.0, 200.0, (4_000, 128)).astype(np.int16)
    zero = f.initial_state(np.zeros(128))
    whole = _run(f, x, [], zero)
    cut = _run(f, x, [32 * 10, 32 * 77], zero)
    np.testing.assert_array_equal(whole, cut)
    left = _run(f, x[:, :64], [], f.initial_state(np.zeros(64)))
    np.testing.assert_array_equal(whole[:, :64], left)


def test_initial_state_is_the_steady_state_of_a_constant_input() -> None:
    sos = signal.butter(2, 300, btype="lowpass", fs=FS_HZ, output="sos")
    f = BlockIIR(sos)
    level = np.full(3, 1234.0)
    x = np.tile(level, (640, 1)).astype(np.float32)
    y = _run(f, x, [], f.initial_state(level))
    np.testing.assert_allclose(y, 1234.0, rtol=1e-5)
