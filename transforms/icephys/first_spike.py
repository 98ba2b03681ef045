"""What IPFX's ramp and short-square analyses average: each sweep's first spike.

``RampAnalysis`` and ``ShortSquareAnalysis`` (IPFX 2.1.2,
``stimulus_protocol_analysis.py``) summarise a cell by ``mean_spike_0``: for
each of twelve spike features, the ``nanmean`` over the analysed sweeps that
have at least one spike of that sweep's *first* spike's value. ``threshold_i``
is the command current at the threshold sample (``i[threshold_index]``), which
on a ramp is the ramp current at threshold. Times are seconds from the sweep
start, as IPFX reports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: IPFX's ``mean_spike_0`` features -> (column suffix with unit, spike-table column).
#: ``threshold_i`` has no spike-table column: it is read off the command.
FIRST_SPIKE_FEATURES: tuple[tuple[str, str, str | None], ...] = (
    ("upstroke_downstroke_ratio", "upstroke_downstroke_ratio", "upstroke_downstroke_ratio"),
    ("peak_v", "peak_v_mv", "peak_v_mv"),
    ("peak_t", "peak_t_s", "peak_t_s"),
    ("trough_v", "trough_v_mv", "trough_v_mv"),
    ("trough_t", "trough_t_s", "trough_t_s"),
    ("fast_trough_v", "fast_trough_v_mv", "fast_trough_v_mv"),
    ("fast_trough_t", "fast_trough_t_s", "fast_trough_t_s"),
    ("slow_trough_v", "slow_trough_v_mv", "slow_trough_v_mv"),
    ("slow_trough_t", "slow_trough_t_s", "slow_trough_t_s"),
    ("threshold_v", "threshold_v_mv", "threshold_v_mv"),
    ("threshold_i", "threshold_i_pa", None),
    ("threshold_t", "threshold_t_s", "threshold_t_s"),
)


@dataclass(frozen=True)
class AnalysedSweep:
    """One current-clamp sweep handed to a ramp or short-square analysis.

    Attributes
    ----------
    sweep_number
        As stored in the source file.
    rate_hz
        Sampling rate.
    command
        Command current in pA (``None`` if the file stores none).
    stim_amp_pa
        The sweep's stimulus amplitude (short squares: IPFX's ``stim_amp``).
    spikes
        The sweep's rows of the spike table, as arrays by column name, in time order.
    """

    sweep_number: int
    rate_hz: float
    command: np.ndarray | None
    stim_amp_pa: float | None
    spikes: Mapping[str, np.ndarray]

    @property
    def n_spikes(self) -> int:
        t = self.spikes.get("threshold_t_s")
        return 0 if t is None else int(t.size)

    @property
    def n_unclipped(self) -> int:
        """Spikes that count in IPFX's spike-train features with ``exclude_clipped``."""
        if not self.n_spikes:
            return 0
        return int(np.count_nonzero(~np.asarray(self.spikes["clipped"], dtype=bool)))

    def first_spike(self) -> dict[str, float]:
        """IPFX's name -> value of the first spike (NaN where undefined)."""
        out: dict[str, float] = {}
        for ipfx_name, _, column in FIRST_SPIKE_FEATURES:
            if column is not None:
                out[ipfx_name] = float(self.spikes[column][0])
        out["threshold_i"] = self._command_at(float(self.spikes["threshold_t_s"][0]))
        return out

    def _command_at(self, t_s: float) -> float:
        if self.command is None or not np.isfinite(t_s):
            return float("nan")
        k = round(t_s * self.rate_hz)  # spike times are sample index / rate
        return float(self.command[k]) if 0 <= k < self.command.size else float("nan")


def mean_first_spike(sweeps: Sequence[AnalysedSweep]) -> dict[str, float | None]:
    """IPFX's ``mean_spike_0`` over the sweeps that have a spike.

    Returns
    -------
    dict
        IPFX feature name -> nanmean of the first spikes' values, ``None`` where
        no sweep has a spike or every value is NaN.
    """
    firsts = [s.first_spike() for s in sweeps if s.n_spikes]
    out: dict[str, float | None] = {}
    for ipfx_name, _, _ in FIRST_SPIKE_FEATURES:
        values = np.array([f[ipfx_name] for f in firsts], dtype=np.float64)
        finite = values[np.isfinite(values)]
        out[ipfx_name] = float(finite.mean()) if finite.size else None
    return out
