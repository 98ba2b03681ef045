"""Cell features of a current ramp (IPFX ``RampAnalysis``, IPFX 2.1.2).

IPFX's ``extract_cell_ramp_features`` detects spikes from the ramp onset to
the end of each sweep (``end=None``: the spike train runs to ``t[-1]``, not to
the ramp's end), with the default detection parameters, and summarises the
cell by :func:`~transforms.icephys.first_spike.mean_first_spike` over the
spiking sweeps; ``feature_record`` names the results ``<feature>_ramp``. Here
they are ``ramp_<feature>_<unit>``, e.g. ``threshold_i_ramp`` is
``ramp_threshold_i_pa``: the ramp current at the first spike's threshold,
averaged over the spiking sweeps.

Departures from stock IPFX, both where IPFX's own code is inconsistent:

* IPFX takes the ramp onset from the first sweep it is given with
  ``test_pulse=True``, which drops the first two command changes even when
  there is no test pulse (a ramp's first two steps); the onset here is each
  sweep's own, recognised by :mod:`.stimulus` (test pulse only when the
  command returns to holding), which equals IPFX with ``test_pulse=False``.
* A sweep with a flat command is not a ramp sweep and is never handed in
  (IPFX, given one first, would detect from t = 0 in every sweep).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from transforms.icephys.first_spike import FIRST_SPIKE_FEATURES, AnalysedSweep, mean_first_spike

PREFIX: Final = "ramp"
#: Cell-feature columns this analysis fills.
COLUMNS: Final = tuple(f"{PREFIX}_{suffix}" for _, suffix, _ in FIRST_SPIKE_FEATURES)


def ramp_cell_features(sweeps: Sequence[AnalysedSweep]) -> dict[str, float | None]:
    """The ramp cell features of ``sweeps`` (the QC-passing ramp sweeps).

    Parameters
    ----------
    sweeps
        Ramp sweeps in acquisition order, with their detected spikes.

    Returns
    -------
    dict
        One value per name in :data:`COLUMNS`; all ``None`` when no sweep spikes.
    """
    mean = mean_first_spike(sweeps)
    return {f"{PREFIX}_{suffix}": mean[name] for name, suffix, _ in FIRST_SPIKE_FEATURES}
