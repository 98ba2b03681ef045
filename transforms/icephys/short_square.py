"""Cell features of short (ms) current pulses (IPFX ``ShortSquareAnalysis``, 2.1.2).

Definitions, as IPFX's ``ShortSquareAnalysis.analyze`` and ``feature_record``:

* a sweep spikes when its rate is above zero, clipped spikes excluded
  (``exclude_clipped=True``);
* ``stimulus_amplitude`` is the *most common* amplitude among the spiking
  sweeps (ties: the lowest), not the lowest spiking amplitude; the amplitude
  of a sweep is IPFX's ``_short_step_stim_amp``, the command maximum;
* the mean first-spike features (:func:`~.first_spike.mean_first_spike`) run
  over *every* sweep handed in that has a spike, not only those at
  ``stimulus_amplitude``;
* ``threshold_i_short_square`` is overwritten by ``stimulus_amplitude``, so
  this module stores it once, as ``short_square_stim_amp_pa``, and has no
  separate threshold current.

IPFX raises when no sweep spikes; here the features are then ``None``.
Spike detection uses the project's detector over the sweep from the pulse
onset (IPFX searches the whole sweep and estimates ``dv_cutoff`` and
``thresh_frac`` from the first ms after onset, floored at 0.1); on the shared
short-square file both give the same spikes (see the agreement test).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Final

from transforms.icephys.first_spike import FIRST_SPIKE_FEATURES, AnalysedSweep, mean_first_spike

PREFIX: Final = "short_square"
#: Cell-feature columns this analysis fills.
COLUMNS: Final = (
    f"{PREFIX}_stim_amp_pa",
    f"{PREFIX}_n_common_amp_sweeps",
    *(f"{PREFIX}_{suffix}" for name, suffix, _ in FIRST_SPIKE_FEATURES if name != "threshold_i"),
)


def stimulus_amplitude(sweeps: Sequence[AnalysedSweep]) -> float | None:
    """IPFX's ``stimulus_amplitude``: the most common amplitude of the spiking sweeps."""
    amps = Counter(s.stim_amp_pa for s in sweeps if s.n_unclipped > 0 and s.stim_amp_pa is not None)
    if not amps:
        return None
    top = max(amps.values())
    return min(a for a, n in amps.items() if n == top)


def short_square_cell_features(
    sweeps: Sequence[AnalysedSweep],
) -> dict[str, float | int | None]:
    """The short-square cell features of ``sweeps`` (the QC-passing short-square sweeps).

    Returns
    -------
    dict
        One value per name in :data:`COLUMNS`; all ``None`` when no sweep spikes.
    """
    amp = stimulus_amplitude(sweeps)
    out: dict[str, float | int | None] = dict.fromkeys(COLUMNS)
    if amp is None:
        return out
    mean = mean_first_spike(sweeps)
    for name, suffix, _ in FIRST_SPIKE_FEATURES:
        if name != "threshold_i":
            out[f"{PREFIX}_{suffix}"] = mean[name]
    out[f"{PREFIX}_stim_amp_pa"] = amp
    out[f"{PREFIX}_n_common_amp_sweeps"] = sum(
        1 for s in sweeps if s.n_unclipped > 0 and s.stim_amp_pa == amp
    )
    return out
