"""Subthreshold features of a current-clamp sweep (IPFX ``subthresh_features``).

All functions take sample indices, not times: ``start``/``end`` are the first
stimulated sample and the first sample after the window, which is what IPFX's
``find_time_index`` yields for the stimulus start and end times.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar


def mean_between(v: np.ndarray, i0: int, i1: int) -> float:
    """Mean of ``v[i0:i1]`` with ``i0`` clamped at 0; NaN if empty."""
    i0 = max(int(i0), 0)
    seg = v[i0 : max(int(i1), i0)]
    if not seg.size:
        return float("nan")
    m = float(seg.mean())
    if np.isfinite(m):
        return m
    return float(np.nanmean(seg)) if np.isfinite(seg).any() else float("nan")


def baseline_mv(v: np.ndarray, start: int, *, rate_hz: float, interval_s: float) -> float:
    """Mean Vm over ``interval_s`` before ``start`` (clamped at the sweep start).

    IPFX asserts when the interval begins before the sweep; here the interval
    is shortened instead, which is what a stimulus 50 ms into a sweep needs.
    """
    return mean_between(v, start - round(interval_s * rate_hz), start)


def deflection(
    v: np.ndarray, command: np.ndarray | None, start: int, end: int, *, kind: str | None = None
) -> tuple[float, int]:
    """Peak deflection in ``v[start:end]``: min for negative current, else max.

    As IPFX's ``voltage_deflection``, the sign comes from the command halfway
    through the window.
    """
    if kind is None:
        half = (start + end) // 2
        level = 0.0 if command is None else float(np.nan_to_num(command[half]))
        kind = "max" if level >= 0 else "min"
    seg = v[start:end]
    if not np.isfinite(seg).any():
        return float("nan"), start
    k = int(np.nanargmax(seg) if kind == "max" else np.nanargmin(seg)) + start
    return float(v[k]), k


def sag(
    v: np.ndarray, start: int, end: int, *, rate_hz: float, peak_width_s: float, baseline_s: float
) -> tuple[float, float]:
    """IPFX sag: (V_peak - V_steady) / (V_peak - V_baseline), and V_steady in mV.

    V_peak is the mean over ``peak_width_s`` around the minimum, V_steady the
    mean over the last ``baseline_s`` of the window and V_baseline the mean
    over ``baseline_s`` before it.
    """
    _, k = deflection(v, None, start, end, kind="min")
    half = peak_width_s / 2.0 * rate_hz
    v_peak = mean_between(v, round(k - half), round(k + half))
    v_base = baseline_mv(v, start, rate_hz=rate_hz, interval_s=baseline_s)
    v_steady = mean_between(v, end - round(baseline_s * rate_hz), end)
    denom = v_peak - v_base
    value = (v_peak - v_steady) / denom if denom != 0 else float("nan")
    return float(value), v_steady


def fit_exponential(y: np.ndarray, *, rate_hz: float) -> tuple[float, float, float, float]:
    """Least-squares fit of ``y0 + a * exp(-x / tau)`` (x in s from the first sample).

    Variable projection: for a given rate the model is linear in ``(y0, a)``,
    so only the rate is searched, within a factor e**3 of the closed-form
    integral-equation estimate. Gauss-Newton steps on the log rate find the
    minimum in a handful of evaluations; where they do not converge inside
    that bracket, a bounded scalar minimisation over it decides. Returns
    ``(tau_s, a, y0, rmse)``; NaNs if the data do not decay exponentially.
    """
    n = y.size
    if n < 4 or not np.isfinite(y).all():
        return (float("nan"),) * 4  # type: ignore[return-value]
    x = np.arange(n, dtype=np.float64) / rate_hz
    k0 = _rate_estimate(x, y, rate_hz)
    lo, hi = np.log(k0) - 3.0, np.log(k0) + 3.0
    y_mean = float(y.sum()) / n  # (ndarray.mean costs more than the sum here)
    yc = y - y_mean  # centred: no cancellation between large sums
    syy = float(yc @ yc)

    log_k = _gauss_newton_log_rate(x, yc, syy, float(np.log(k0)), lo=lo, hi=hi)
    if log_k is None:
        res = minimize_scalar(
            _projected_sse,
            bounds=(lo, hi),
            args=(x, yc, syy),
            method="bounded",
            options={"xatol": 1e-6},
        )
        log_k = float(res.x)
    k = float(np.exp(log_k))
    e = np.exp(-k * x)
    e_mean = float(e.sum()) / n
    ec = e - e_mean
    var_e = float(ec @ ec)
    a = float(ec @ yc) / var_e if var_e > 0 else 0.0
    y0 = y_mean - a * e_mean
    r = yc - a * ec
    rmse = float(np.sqrt(r @ r / n))
    return 1.0 / k, a, y0, rmse


def _projected_sse(log_k: float, x: np.ndarray, yc: np.ndarray, syy: float) -> float:
    """SSE of the best ``(a, y0)`` for a log rate, from the 2x2 normal equations."""
    e = np.exp(-np.exp(log_k) * x)
    se, see, sey = float(e.sum()), float(e @ e), float(e @ yc)
    var_e = see - se * se / x.size
    if var_e <= 0:
        return syy
    return max(syy - sey * sey / var_e, 0.0)


def _rate_estimate(x: np.ndarray, y: np.ndarray, rate_hz: float) -> float:
    """Decay rate (1/s) from the integral equation ``y - y[0] = A x - k S(x)``.

    ``S`` is the running integral of ``y - y[0]`` (trapezoids), which keeps
    its column far from collinear with ``x``; the 2x2 least-squares system of
    the centred columns is solved in closed form from one Gram matrix.
    Non-decaying data give the rate of one decay over the whole fit.
    """
    n = x.size
    b = np.empty((4, n))
    b[0] = 1.0
    b[1] = x
    d = np.subtract(y, y[0], out=b[3])
    b[2, 0] = 0.0
    np.cumsum((d[1:] + d[:-1]) * (0.5 / rate_hz), out=b[2, 1:])
    g = (b @ b.T).tolist()
    m = [t / n for t in g[0]]  # column means; below, centred cross-products
    sxx, sxs, sss = g[1][1] - g[0][1] * m[1], g[1][2] - g[0][1] * m[2], g[2][2] - g[0][2] * m[2]
    sxd, ssd = g[1][3] - g[0][1] * m[3], g[2][3] - g[0][2] * m[3]
    det = sxx * sss - sxs * sxs
    fallback = 1.0 / max(float(x[-1]), 1.0 / rate_hz)
    if not det > 0:
        return fallback
    coef_s = (sxx * ssd - sxs * sxd) / det
    return -coef_s if coef_s < 0 else fallback


def _gauss_newton_log_rate(
    x: np.ndarray, yc: np.ndarray, syy: float, log_k: float, *, lo: float, hi: float
) -> float | None:
    """The least-squares log rate by Gauss-Newton on the projected residual.

    With ``(a, y0)`` eliminated (variable projection), each step regresses the
    residual on the model's derivative with respect to ``log k`` (``-a k x e``),
    made orthogonal to the linear terms; a step that does not lower the SSE is
    halved. Every quantity is a cross-product of ``1, e, x e, y``: one 4x4 Gram
    matrix per evaluation. Returns ``None`` if the iteration leaves
    ``[lo, hi]`` or does not converge, so that the caller's bracketed search
    decides.
    """
    n = x.size
    b = np.empty((4, n))
    b[0] = 1.0
    b[3] = yc  # centred: its sum is 0; syy = yc . yc
    tol = 1e-13 * syy  # SSE differences below this are rounding

    def evaluate(u: float) -> tuple[float, float] | None:
        """SSE at log rate ``u`` and the Gauss-Newton step from there."""
        k = float(np.exp(u))
        np.multiply(x, -k, out=b[1])
        np.exp(b[1], out=b[1])
        np.multiply(x, b[1], out=b[2])
        g = (b @ b.T).tolist()
        se, sw, see, swe, sww, sey, swy = (
            g[0][1], g[0][2], g[1][1], g[1][2], g[2][2], g[1][3], g[2][3]
        )  # fmt: skip
        var_e = see - se * se / n
        if not var_e > 0:
            return None
        a = sey / var_e
        cov_we = swe - sw * se / n
        jj = (sww - sw * sw / n) - cov_we * cov_we / var_e  # |x e| without (1, e)
        if not (jj > 0 and a != 0):
            return None
        w_r = swy - a * cov_we  # (x e) . residual
        return syy - sey * a, w_r / (-a * k * jj)

    cur = evaluate(log_k)
    for _ in range(40):
        if cur is None:
            return None
        sse, step = cur
        step = max(min(step, 1.0), -1.0)  # at most a factor e per step
        if abs(step) < 1e-9:
            log_k += step
            return log_k if lo <= log_k <= hi else None
        for _ in range(30):
            nxt = evaluate(log_k + step)
            if nxt is not None and nxt[0] <= sse + tol:
                break
            step *= 0.5
        else:
            return None
        log_k += step
        if not lo <= log_k <= hi:
            return None
        cur = nxt
    return None


def time_constant(
    v: np.ndarray,
    start: int,
    end: int,
    *,
    rate_hz: float,
    max_fit_end: int | None,
    frac: float,
    baseline_s: float,
    min_snr: float,
    rmse_max_mv: float,
) -> tuple[float, float]:
    """Membrane time constant (s) of a hyperpolarising step and the fit's R².

    IPFX ``time_constant``: fit from where Vm has gone ``frac`` of the way to
    the peak deflection until the peak (capped at ``max_fit_end``); NaN when
    the deflection is under ``min_snr`` times the baseline noise or the fit's
    RMSE exceeds ``rmse_max_mv``.
    """
    v_peak, k = deflection(v, None, start, end, kind="min")
    if max_fit_end is not None and max_fit_end < k:
        k = max_fit_end
        v_peak = float(v[k])
    v_base = baseline_mv(v, start, rate_hz=rate_hz, interval_s=baseline_s)
    noise_seg = v[max(start - round(baseline_s * rate_hz), 0) : start]
    noise = float(np.std(noise_seg)) if noise_seg.size else 0.0
    signal = abs(v_base - v_peak)
    snr = np.inf if noise == 0 else signal / noise
    if not snr >= min_snr:
        return float("nan"), float("nan")
    hits = np.flatnonzero(v[start:] <= frac * (v_peak - v_base) + v_base)
    if not hits.size:
        return float("nan"), float("nan")
    fs = start + int(hits[0])
    y = v[fs:k]
    tau, _a, _y0, rmse = fit_exponential(y, rate_hz=rate_hz)
    if not np.isfinite(rmse) or rmse > rmse_max_mv:
        return float("nan"), float("nan")
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - (rmse**2 * y.size) / ss_tot if ss_tot > 0 else float("nan")
    return tau, r2


def input_resistance_mohm(
    v_peaks: np.ndarray, i_at_peak: np.ndarray, *, baseline_v: float | None
) -> float:
    """Slope of the subthreshold V-I relation in MΩ (IPFX ``input_resistance``).

    With one sweep only, its own baseline (at 0 pA) is the second point.
    """
    v = np.asarray(v_peaks, dtype=np.float64)
    i = np.asarray(i_at_peak, dtype=np.float64)
    if v.size == 1 and baseline_v is not None:
        v = np.append(v, baseline_v)
        i = np.append(i, 0.0)
    if v.size < 2 or np.ptp(i) == 0:
        return float("nan")
    slope = np.polyfit(i, v, 1)[0]
    return float(slope * 1e3)  # mV/pA = GΩ -> MΩ


# --- the same features for a block of sweeps (rows) sharing one window -----------


def mean_rows(v: np.ndarray, i0: int, i1: int) -> np.ndarray:
    """:func:`mean_between` of every row of ``v`` (shape ``(rows, samples)``)."""
    i0 = max(int(i0), 0)
    seg = v[:, i0 : max(int(i1), i0)]
    if not seg.shape[1]:
        return np.full(v.shape[0], np.nan)
    m = seg.mean(axis=1)
    bad = ~np.isfinite(m)
    if bad.any():  # NaN gaps: fall back to the finite samples, as mean_between does
        m[bad] = [mean_between(row, 0, row.size) for row in seg[bad]]
    return m


def mean_rows_var(v: np.ndarray, i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
    """:func:`mean_between` of row ``r`` over ``[i0[r], i1[r])``, for every row."""
    n_rows, n = v.shape
    lo = np.clip(i0, 0, n)
    hi = np.clip(np.maximum(i1, lo), 0, n)
    width = hi - lo
    w_max = int(width.max()) if width.size else 0
    if w_max == 0:
        return np.full(n_rows, np.nan)
    step = np.arange(w_max)
    inside = step[None, :] < width[:, None]
    x = v[np.arange(n_rows)[:, None], np.minimum(lo[:, None] + step[None, :], n - 1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(inside, x, 0.0).sum(axis=1) / width
    bad = ~np.isfinite(m) & (width > 0)
    for r in np.flatnonzero(bad):  # NaN gaps: the slow, exact path
        m[r] = mean_between(v[r], int(lo[r]), int(hi[r]))
    return m


def arg_rows(win: np.ndarray, *, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise NaN-ignoring argmax (``largest``) or argmin of ``win``.

    Returns the indices (0 for rows without a finite sample) and a mask of the
    rows that have a finite sample.
    """
    n_rows = win.shape[0]
    if not win.shape[1]:
        return np.zeros(n_rows, dtype=np.int64), np.zeros(n_rows, dtype=bool)
    # one call per row: argmax(axis=1) of a sliced block copies it whole first
    pick = np.ndarray.argmax if largest else np.ndarray.argmin
    k = np.fromiter((pick(row) for row in win), dtype=np.int64, count=n_rows)
    has = np.ones(n_rows, dtype=bool)
    nan_rows = np.flatnonzero(np.isnan(win[np.arange(n_rows), k]))  # argmax stops at NaN
    for r in nan_rows:
        row = win[r]
        fin = np.isfinite(row)
        if not fin.any():
            k[r], has[r] = 0, False
            continue
        k[r] = np.nanargmax(row) if largest else np.nanargmin(row)
    return k, has


def sag_rows(
    v: np.ndarray,
    k_min: np.ndarray,
    start: int,
    end: int,
    *,
    rate_hz: float,
    peak_width_s: float,
    baseline_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sag` of every row of ``v``, given each row's minimum index in the window."""
    half = peak_width_s / 2.0 * rate_hz
    # np.rint rounds half to even, as Python's round() in sag()
    lo = np.rint(k_min - half).astype(np.int64)
    hi = np.rint(k_min + half).astype(np.int64)
    v_peak = mean_rows_var(v, lo, hi)
    n_base = round(baseline_s * rate_hz)
    v_base = mean_rows(v, start - n_base, start)
    v_steady = mean_rows(v, end - n_base, end)
    denom = v_peak - v_base
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(denom != 0, (v_peak - v_steady) / denom, np.nan)
    return value, v_steady
