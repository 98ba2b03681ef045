"""ISI-threshold burst detection, vectorised over many spike trains at once.

A burst is a run of consecutive spikes of one train whose inter-spike intervals
are all at most ``max_isi_s``, holding at least ``min_spikes`` spikes (the Axion
Neural Metric Tool's "ISI threshold" detector; network bursts use the same rule on
a well's combined train).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from transforms.errors import InvalidArgument

#: Spike times are quantised to the sampling period (80 µs at 12.5 kHz); a 1 ns
#: slack makes an ISI of exactly ``max_isi_s`` count despite float rounding.
ISI_SLACK_S = 1e-9


@dataclass(frozen=True)
class Runs:
    """Bursts found in grouped spike trains; all arrays have one entry per burst.

    Attributes
    ----------
    group
        The train (electrode or well index) of each burst.
    first, last
        Indices (inclusive) of the burst's first and last spike in the input.
    n_spikes
        Spikes in the burst.
    spike_run
        For every input spike, the index of its burst, or -1 outside bursts.
    """

    group: npt.NDArray[np.int64]
    first: npt.NDArray[np.int64]
    last: npt.NDArray[np.int64]
    n_spikes: npt.NDArray[np.int64]
    spike_run: npt.NDArray[np.int64]


def isi_threshold_runs(
    times_s: npt.NDArray[np.float64],
    groups: npt.NDArray[np.int64],
    *,
    max_isi_s: float,
    min_spikes: int,
) -> Runs:
    """Find ISI-threshold bursts in spike trains laid end to end.

    Parameters
    ----------
    times_s
        Spike times, sorted by (group, time).
    groups
        The train of each spike (non-decreasing).
    max_isi_s
        Largest ISI inside a burst (inclusive).
    min_spikes
        Fewest spikes a burst may have.

    Returns
    -------
    Runs
        Bursts in (group, time) order.
    """
    if max_isi_s <= 0 or min_spikes < 2:
        raise InvalidArgument(
            f"burst detection needs max_isi_s > 0 and min_spikes >= 2, "
            f"got {max_isi_s} and {min_spikes}"
        )
    n = times_s.size
    empty = np.zeros(0, dtype=np.int64)
    if n == 0:
        return Runs(empty, empty, empty, empty, np.full(0, -1, dtype=np.int64))
    linked = (groups[1:] == groups[:-1]) & (np.diff(times_s) <= max_isi_s + ISI_SLACK_S)
    starts = np.flatnonzero(np.concatenate(([True], ~linked)))
    ends = np.concatenate((starts[1:] - 1, [n - 1]))
    sizes = ends - starts + 1
    keep = sizes >= min_spikes
    run_of_spike = np.cumsum(np.concatenate(([1], ~linked))) - 1
    new_index = np.where(keep, np.cumsum(keep) - 1, -1)
    return Runs(
        group=groups[starts[keep]].astype(np.int64),
        first=starts[keep].astype(np.int64),
        last=ends[keep].astype(np.int64),
        n_spikes=sizes[keep].astype(np.int64),
        spike_run=new_index[run_of_spike].astype(np.int64),
    )
