"""The compiled second-order-sections filter against scipy's sosfilt, the float64 reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from transforms.mea.detect import DetectionParams
from transforms.mea.iir import SosIIR

FS_HZ = 12_500.0
EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
REPO = Path(__file__).resolve().parents[1]


def _run(f: SosIIR, x: np.ndarray, cuts: list[int], state: np.ndarray) -> np.ndarray:
    """Filter ``x`` in calls cut at ``cuts`` (anywhere), concatenating the outputs."""
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(x)], strict=True):
        y = np.empty((b - a, x.shape[1]), np.float32)
        state = f.apply(x[a:b], state, out=y)
        out.append(y)
    return np.vstack(out)


def _bound(sos: np.ndarray, x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-sample error allowed against the float64 reference: the float32 rounding of
    the output (half an ulp) plus float64 rounding in the sections, which the stable
    filter does not amplify beyond its L1 gain (generous factor on both)."""
    impulse = signal.sosfilt(sos, np.r_[1.0, np.zeros(16383)])
    l1 = float(np.abs(impulse).sum())
    return EPS32 * np.abs(ref) + 1e3 * len(sos) * EPS64 * l1 * float(np.abs(x).max())


@pytest.mark.parametrize("design", ["order1", "order2", "order3", "order4", "kaiser"])
def test_sos_iir_equals_sosfilt_within_float32_rounding(design: str) -> None:
    if design == "kaiser":  # 16 sections: a high-pass and a 31-tap FIR as sections
        sos = DetectionParams(filter_design="iir_kaiser").sos(FS_HZ)
    else:
        order = int(design[-1])
        sos = signal.butter(order, [200, 3000], btype="bandpass", fs=FS_HZ, output="sos")
    f = SosIIR(sos)
    rng = np.random.default_rng(len(sos))
    x = rng.normal(0.0, 300.0, (5_000, 70)).astype(np.int16)  # ADC counts, 70 channels
    x[1000:1003] = 30_000  # a large step: the transient must match too
    ref = signal.sosfilt(sos, x.astype(np.float64), axis=0)
    y = _run(f, x, [1_111, 3_000], f.initial_state(np.zeros(x.shape[1])))
    err = np.abs(y.astype(np.float64) - ref)
    assert np.all(err <= _bound(sos, x, ref)), float(err.max())
    # float inputs give the same numbers as the int16 counts they hold
    for dtype in (np.float32, np.float64):
        same = _run(f, x.astype(dtype), [], f.initial_state(np.zeros(x.shape[1])))
        np.testing.assert_array_equal(same, y)


def test_sos_iir_is_independent_of_call_cuts_and_channel_groups() -> None:
    sos = signal.butter(2, [200, 3000], btype="bandpass", fs=FS_HZ, output="sos")
    f = SosIIR(sos)
    x = np.random.default_rng(3).normal(0.0, 200.0, (4_000, 128)).astype(np.int16)
    zero = f.initial_state(np.zeros(128))
    whole = _run(f, x, [], zero)
    cut = _run(f, x, [1, 333, 2_017, 2_018], zero)  # cuts anywhere, not only whole blocks
    np.testing.assert_array_equal(whole, cut)
    for a, b in ((0, 64), (5, 6), (17, 100), (100, 128)):  # any channel subset
        part = _run(f, x[:, a:b], [700], f.initial_state(np.zeros(b - a)))
        np.testing.assert_array_equal(whole[:, a:b], part)


def test_sos_iir_reads_views_in_place_like_copies() -> None:
    sos = signal.butter(4, [200, 3000], btype="bandpass", fs=FS_HZ, output="sos")
    f = SosIIR(sos)
    x = np.random.default_rng(5).normal(0.0, 200.0, (3_000, 50)).astype(np.int16)
    for view in (x[:, 7:31], x[::-1, 7:31], x[::-1], x[::2, 3:9], x[:, ::3]):
        n_ch = view.shape[1]
        got = _run(f, view, [], f.initial_state(np.zeros(n_ch)))
        copy = _run(f, np.ascontiguousarray(view), [], f.initial_state(np.zeros(n_ch)))
        np.testing.assert_array_equal(got, copy)
    assert x.flags.writeable  # read only: the input is never written


def test_rows_past_the_input_are_the_response_to_zeros() -> None:
    sos = signal.butter(2, [200, 3000], btype="bandpass", fs=FS_HZ, output="sos")
    f = SosIIR(sos)
    x = np.random.default_rng(9).normal(0.0, 50.0, (100, 3)).astype(np.float32)
    out = np.empty((128, 3), np.float32)  # 100 rows rounded up to whole blocks
    state = f.apply(x, f.initial_state(np.zeros(3)), out=out)
    padded = np.vstack([x, np.zeros((28, 3), np.float32)])
    ref = np.empty_like(out)
    ref_state = f.apply(padded, f.initial_state(np.zeros(3)), out=ref)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(state, ref_state)


def test_initial_state_is_the_steady_state_of_a_constant_input() -> None:
    sos = signal.butter(2, 300, btype="lowpass", fs=FS_HZ, output="sos")
    f = SosIIR(sos)
    level = np.full(3, 1234.0)
    x = np.tile(level, (640, 1)).astype(np.float32)
    y = _run(f, x, [], f.initial_state(level))
    np.testing.assert_allclose(y, 1234.0, rtol=1e-6)


def test_compiled_kernels_are_cached_where_numba_cache_dir_points(tmp_path: Path) -> None:
    """A read-only install sets NUMBA_CACHE_DIR: the kernels are cached there, and a
    second process loads them instead of compiling."""
    code = (
        "import numpy as np; from scipy import signal; from transforms.mea.iir import SosIIR; "
        "f = SosIIR(signal.butter(2, [200, 3000], 'bandpass', fs=12500.0, output='sos')); "
        "x = np.ones((64, 8), np.int16); "
        "f.apply(x, f.initial_state(x[0]), out=np.empty((64, 8), np.float32))"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env, timeout=300)
    cached = sorted(p.name for p in tmp_path.rglob("*") if p.suffix in (".nbi", ".nbc"))
    assert any(name.startswith("kernels.sos_rows") for name in cached), cached
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.nbc")}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env, timeout=300)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.nbc")} == before  # loaded


def test_kernel_has_no_fused_multiply_adds() -> None:
    """Without fastmath, LLVM keeps each multiply and add apart (rounded twice), so a CPU
    with or without FMA units, or with wider vectors, computes the same numbers."""
    import re

    import numba

    from transforms.mea import kernels

    fresh = numba.njit(nogil=True)(kernels.sos_rows.py_func)  # uncached: its code is seen
    sos = signal.butter(4, [200, 3000], btype="bandpass", fs=FS_HZ, output="sos")
    for dtype in (np.int16, np.float32):
        src = np.zeros(64 * 8, dtype)
        src.flags.writeable = False
        dst = np.zeros(64 * 8, np.float32)
        fresh(src, 0, 8, 64, sos, np.zeros((8, 8)), np.zeros(8), dst, 0, 8)
    for asm in fresh.inspect_asm().values():
        assert re.search(r"\bv?mul[sp]d\b", asm)  # the multiplies are there, as such
        assert not re.search(r"\bvf(n)?m(add|sub)", asm)


def test_importing_the_detector_does_not_import_numba() -> None:
    """Every ingest imports the detector's parameters (paramset); numba (~0.7 s CPU)
    is imported only by a process that filters."""
    code = (
        "import sys, transforms.pipeline.paramset, transforms.mea.detect; "
        "print('numba' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True, text=True
    )
    assert out.stdout.strip() == "False"


def test_big_endian_and_half_precision_samples_give_the_same_output() -> None:
    sos = signal.butter(2, [200, 3000], btype="bandpass", fs=FS_HZ, output="sos")
    f = SosIIR(sos)
    x = np.random.default_rng(11).normal(0.0, 200.0, (500, 6)).astype(np.int16)
    ref = _run(f, x, [], f.initial_state(np.zeros(6)))
    for other in (x.astype(">i2"), x.astype(np.float16)[:, :]):
        if other.dtype == np.float16:  # float16 holds these counts only to 11 bits
            want = _run(f, other.astype(np.float64), [], f.initial_state(np.zeros(6)))
        else:
            want = ref
        np.testing.assert_array_equal(_run(f, other, [], f.initial_state(np.zeros(6))), want)
