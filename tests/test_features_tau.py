"""The single-exponential fit behind membrane tau, against scipy's curve_fit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import curve_fit, minimize_scalar

from transforms.icephys import subthreshold as sub

RATE_HZ = 20_000.0


def _model(x: np.ndarray, y0: float, a: float, tau_s: float) -> np.ndarray:
    return y0 + a * np.exp(-x / tau_s)


@pytest.mark.parametrize("tau_ms", [2.0, 8.0, 20.0, 45.0, 120.0])
@pytest.mark.parametrize("noise_mv", [0.0, 0.05, 0.5])
def test_fit_exponential_is_the_least_squares_fit(tau_ms: float, noise_mv: float) -> None:
    rng = np.random.default_rng(int(tau_ms * 10 + noise_mv * 100))
    n = int(0.06 * RATE_HZ)  # a 60 ms charging curve, as the cell analysis fits
    x = np.arange(n) / RATE_HZ
    y = _model(x, -78.0, 9.0, tau_ms * 1e-3) + rng.normal(0.0, noise_mv, n)
    tau, a, y0, rmse = sub.fit_exponential(y, rate_hz=RATE_HZ)
    # an independent solver, started from the truth
    p, _ = curve_fit(_model, x, y, p0=(-78.0, 9.0, tau_ms * 1e-3), xtol=1e-14, ftol=1e-14)
    np.testing.assert_allclose([y0, a, tau], p, rtol=1e-6, atol=1e-9)
    resid = y - _model(x, y0, a, tau)
    assert rmse == pytest.approx(np.sqrt(np.mean(resid**2)), rel=1e-9, abs=1e-12)
    # and no better SSE exists nearby (curve_fit's optimum is not lower)
    sse_ref = float(np.sum((y - _model(x, *p)) ** 2))
    assert rmse**2 * n <= sse_ref * (1 + 1e-9) + 1e-18


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
