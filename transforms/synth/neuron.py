"""A conductance-based model neuron for demo recordings.

Single compartment with Traub-Miles sodium and delayed-rectifier kinetics as
parameterised for cortical regular-spiking cells (Pospischil et al. 2008), a
slow M-current (spike-frequency adaptation) and an h-current (sag and
rebound). Units: mV, ms, pF, nS, pA. All sweeps of a step protocol are
integrated at once (vectorised across sweeps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from transforms.errors import InvalidArgument


@dataclass(frozen=True)
class CellParams:
    """Passive and active properties of one simulated cell."""

    c_pf: float = 100.0
    g_leak_ns: float = 4.0
    e_leak_mv: float = -70.0
    g_na_ns: float = 5000.0
    g_kdr_ns: float = 600.0
    g_m_ns: float = 8.0
    tau_m_max_ms: float = 600.0
    g_h_ns: float = 3.0
    v_t_mv: float = -56.0
    e_na_mv: float = 50.0
    e_k_mv: float = -90.0
    e_h_mv: float = -30.0
    noise_pa: float = 8.0
    recording_noise_mv: float = 0.08

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class _Stacked:
    """CellParams fields as per-row arrays."""

    def __init__(self, cells: list[CellParams]) -> None:
        for name in CellParams.__dataclass_fields__:
            setattr(self, name, np.array([getattr(c, name) for c in cells], dtype=np.float64))


def _stack(cells: list[CellParams]) -> _Stacked:
    return _Stacked(cells)


def _exprel(x: np.ndarray) -> np.ndarray:
    """x / (exp(x) - 1), finite at x = 0."""
    small = np.abs(x) < 1e-6
    safe = np.where(small, 1.0, x)
    return np.where(small, 1.0 - x / 2.0, safe / np.expm1(safe))


def simulate(
    command_pa: np.ndarray,
    *,
    sampling_rate_hz: float,
    cells: list[CellParams],
    seed: int = 0,
    substeps: int = 1,
) -> np.ndarray:
    """Membrane potential (mV) for each row's command current.

    Parameters
    ----------
    command_pa
        Injected current, shape (n_rows, n_samples), in pA; rows are sweeps,
        possibly of several cells (simulated together: the cost is per step).
    cells
        The cell of each row.
    substeps
        Integration steps per sample (exponential Euler for the gates).
    """
    rng = np.random.default_rng(seed)
    n_sweeps, n_samples = command_pa.shape
    if len(cells) != n_sweeps:
        raise InvalidArgument("one CellParams per command row")
    cell: Any = _stack(cells)
    dt = 1000.0 / sampling_rate_hz / substeps
    v = cell.e_leak_mv.copy()
    vt = cell.v_t_mv
    # Start every gate at its steady state at rest.
    m = np.full(n_sweeps, 0.01)
    h = np.full(n_sweeps, 0.99)
    n = np.full(n_sweeps, 0.01)
    p = np.full(n_sweeps, 0.03)
    q = np.full(n_sweeps, 0.1)
    out = np.empty((n_sweeps, n_samples))
    # Ornstein-Uhlenbeck synaptic-like current noise (tau 5 ms).
    noise = np.zeros(n_sweeps)
    tau_noise = 5.0
    noise_gain = cell.noise_pa * np.sqrt(2 * dt / tau_noise)
    # Settle 300 ms at holding current before the sweep starts.
    settle = int(300.0 / dt)
    for step in range(-settle, n_samples * substeps):
        i_cmd = command_pa[:, max(step, 0) // substeps] if step >= 0 else command_pa[:, 0]
        a_m = 1.28 * _exprel(-(v - vt - 13.0) / 4.0)
        b_m = 1.4 * _exprel((v - vt - 40.0) / 5.0)
        a_h = 0.128 * np.exp(-(v - vt - 17.0) / 18.0)
        b_h = 4.0 / (1.0 + np.exp(-(v - vt - 40.0) / 5.0))
        a_n = 0.16 * _exprel(-(v - vt - 15.0) / 5.0)
        b_n = 0.5 * np.exp(-(v - vt - 10.0) / 40.0)
        p_inf = 1.0 / (1.0 + np.exp(-(v + 35.0) / 10.0))
        tau_p = cell.tau_m_max_ms / (3.3 * np.exp((v + 35.0) / 20.0) + np.exp(-(v + 35.0) / 20.0))
        q_inf = 1.0 / (1.0 + np.exp((v + 82.0) / 7.0))
        tau_q = 40.0 + 120.0 / (np.exp((v + 75.0) / 12.0) + np.exp(-(v + 75.0) / 12.0))
        for x, a, b in ((m, a_m, b_m), (h, a_h, b_h), (n, a_n, b_n)):
            tau = 1.0 / (a + b)
            x += (a * tau - x) * -np.expm1(-dt / tau)
        p += (p_inf - p) * -np.expm1(-dt / tau_p)
        q += (q_inf - q) * -np.expm1(-dt / tau_q)
        noise += -noise * dt / tau_noise + noise_gain * rng.standard_normal(n_sweeps)
        i_ion = (
            cell.g_leak_ns * (v - cell.e_leak_mv)
            + cell.g_na_ns * m**3 * h * (v - cell.e_na_mv)
            + (cell.g_kdr_ns * n**4 + cell.g_m_ns * p) * (v - cell.e_k_mv)
            + cell.g_h_ns * q * (v - cell.e_h_mv)
        )
        v = v + dt * (i_cmd + noise - i_ion) / cell.c_pf
        if step >= 0 and step % substeps == substeps - 1:
            out[:, step // substeps] = v
    out += rng.normal(0.0, 1.0, out.shape) * cell.recording_noise_mv[:, None]
    return out
