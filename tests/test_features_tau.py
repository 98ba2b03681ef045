"""The single-exponential fit behind membrane tau, against scipy's curve_fit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import curve_fit, minimize_scalar

from transforms.icephys import subthreshold as sub

RATE_HZ = 20_000.0


def _model(x: np.ndarray, y0: float, a: float, tau_s: float) -> np.ndarray:
    return y0 + a * np.exp(-x / tau_s)


def _sse(x: np.ndarray, y: np.ndarray, params: tuple[float, float, float]) -> float:
    r = y - _model(x, *params)
    return float(r @ r)


def _parameter_tolerance(
    x: np.ndarray, params: tuple[float, float, float], sse_slack: float
) -> np.ndarray:
    """How far (y0, a, tau) may move while the SSE rises by at most ``sse_slack``.

    Near the optimum SSE(p) - SSE* ~ dp' H dp with H = J'J (Gauss-Newton), so a
    parameter vector within ``sse_slack`` of the optimum lies within
    sqrt(sse_slack * inv(H)_ii) of it in each coordinate: the tolerance follows the
    fit's conditioning (a 120 ms tau seen through a 60 ms window is poorly
    determined), not the digits two solvers happen to share on one CPU.
    """
    _y0, a, tau = params
    e = np.exp(-x / tau)
    jac = np.column_stack([np.ones_like(x), e, a * x / tau**2 * e])
    cov = np.linalg.inv(jac.T @ jac)
    return np.sqrt(sse_slack * np.diag(cov))


@pytest.mark.parametrize("tau_ms", [2.0, 8.0, 20.0, 45.0, 120.0])
@pytest.mark.parametrize("noise_mv", [0.0, 0.05, 0.5])
def test_fit_exponential_is_the_least_squares_fit(tau_ms: float, noise_mv: float) -> None:
    rng = np.random.default_rng(int(tau_ms * 10 + noise_mv * 100))
    n = int(0.06 * RATE_HZ)  # a 60 ms charging curve, as the cell analysis fits
    x = np.arange(n) / RATE_HZ
    y = _model(x, -78.0, 9.0, tau_ms * 1e-3) + rng.normal(0.0, noise_mv, n)
    tau, a, y0, rmse = sub.fit_exponential(y, rate_hz=RATE_HZ)
    ours = (y0, a, tau)
    resid = y - _model(x, *ours)
    assert rmse == pytest.approx(np.sqrt(np.mean(resid**2)), rel=1e-9, abs=1e-12)
    # an independent solver, started from the truth
    p, _ = curve_fit(_model, x, y, p0=(-78.0, 9.0, tau_ms * 1e-3), xtol=1e-14, ftol=1e-14)
    sse_ours, sse_ref = _sse(x, y, ours), _sse(x, y, tuple(p))
    # What is guaranteed: no lower SSE exists than ours (up to rounding of the sums:
    # 1e-9 relative, plus residuals of 1e-9 mV where the fit is exact) ...
    floor = n * 1e-18
    assert sse_ours <= sse_ref * (1 + 1e-9) + floor
    # ... so both optima lie in the same SSE basin, and their parameters differ by
    # no more than that SSE difference allows, given the fit's conditioning.
    slack = abs(sse_ours - sse_ref) + 1e-9 * sse_ref + floor
    tol = _parameter_tolerance(x, ours, slack)
    diff = np.abs(np.asarray(ours) - p)
    assert (diff <= 4 * tol + 1e-12 * np.abs(p)).all(), (diff, tol)


def test_fit_exponential_without_decay_takes_the_bracketed_search() -> None:
    """A straight line has no finite least-squares rate: Gauss-Newton runs to the
    bracket's low edge and the bounded search decides, as documented."""
    n = 800
    x = np.arange(n) / RATE_HZ
    y = -70.0 - 50.0 * x  # mV, a slow drift
    yc = y - y.sum() / n  # centred as fit_exponential centres it
    syy = float(yc @ yc)
    assert sub._gauss_newton_log_rate(x, yc, syy, np.log(10.0), lo=0.0, hi=6.0) is None
    tau, _a, _y0, rmse = sub.fit_exponential(y, rate_hz=RATE_HZ)
    k0 = sub._rate_estimate(x, y, RATE_HZ)
    ref = minimize_scalar(
        sub._projected_sse,
        bounds=(np.log(k0) - 3.0, np.log(k0) + 3.0),
        args=(x, yc, syy),
        method="bounded",
        options={"xatol": 1e-6},
    )
    assert tau == 1.0 / np.exp(ref.x)
    assert rmse < 0.01  # mV, on a 2 mV drift: a line is the small-rate limit


def test_fit_exponential_refuses_short_or_non_finite() -> None:
    assert np.isnan(sub.fit_exponential(np.ones(3), rate_hz=RATE_HZ)).all()
    y = np.linspace(-60, -70, 100)
    y[10] = np.nan
    assert np.isnan(sub.fit_exponential(y, rate_hz=RATE_HZ)).all()
