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
    so only the rate is searched (bounded scalar minimisation, started from
    the closed-form integral-equation estimate). Returns ``(tau_s, a, y0, rmse)``;
    NaNs if the data do not decay exponentially.
    """
    n = y.size
    if n < 4 or not np.isfinite(y).all():
        return (float("nan"),) * 4  # type: ignore[return-value]
    x = np.arange(n, dtype=np.float64) / rate_hz
    # integral-equation estimate: y - y[0] = A x + B S(x) with S the running integral
    s = np.concatenate(([0.0], np.cumsum((y[1:] + y[:-1]) * 0.5 / rate_hz)))
    m = np.column_stack([x, s, np.ones(n)])
    coef = np.linalg.lstsq(m, y, rcond=None)[0]
    k0 = -coef[1] if coef[1] < 0 else 1.0 / max(x[-1], 1.0 / rate_hz)

    def sse(log_k: float) -> float:
        e = np.exp(-np.exp(log_k) * x)
        a_mat = np.column_stack([e, np.ones(n)])
        r = y - a_mat @ np.linalg.lstsq(a_mat, y, rcond=None)[0]
        return float(r @ r)

    lo, hi = np.log(k0) - 3.0, np.log(k0) + 3.0
    res = minimize_scalar(sse, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    k = float(np.exp(res.x))
    e = np.exp(-k * x)
    a_mat = np.column_stack([e, np.ones(n)])
    a, y0 = np.linalg.lstsq(a_mat, y, rcond=None)[0]
    rmse = float(np.sqrt(res.fun / n))
    return 1.0 / k, float(a), float(y0), rmse


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
