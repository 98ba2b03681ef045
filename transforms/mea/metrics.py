"""Axion Neural Metric Tool-style activity, burst, network-burst and synchrony metrics.

Input is the project's MEA spike table (``electrode``, ``well``, ``time_s``,
``amplitude_uv``); output is four tables, each carrying the parameters it was
computed with as a ``params_json`` column:

``electrode_metrics`` (one row per electrode of the layout, silent ones included)
    ``spike_count``; ``mean_firing_rate_hz`` = spikes / ``duration_s``; ``isi_cv`` =
    population std / mean of the ISIs (null with fewer than 2 ISIs); ``active`` =
    rate >= ``min_rate_spm`` spikes/min; ISI-threshold bursts (runs of >=
    ``burst_min_spikes`` spikes with every ISI <= ``burst_max_isi_s``):
    ``burst_count``, ``burst_frequency_hz`` (bursts / duration),
    ``mean_burst_duration_s`` (first to last spike), ``mean_spikes_per_burst``,
    ``mean_ibi_s`` (last spike of a burst to first spike of the next; null with
    fewer than 2 bursts), ``burst_percentage`` (100 * spikes in bursts / spikes).
``bursts``
    ``electrode, well, start_s, end_s, duration_s, n_spikes``.
``well_metrics`` (one row per well of the layout)
    ``mean_firing_rate_hz`` (spikes of the well / (electrodes per well * duration),
    silent electrodes included); ``weighted_mean_firing_rate_hz`` (mean rate of the
    active electrodes, 0 without any); ``n_active_electrodes``; network bursts,
    found by the ISI-threshold rule (``nb_max_isi_s``, ``nb_min_spikes``) on the
    combined spike train of the well's *active* electrodes and kept when at least
    ``nb_min_electrode_fraction`` of the active electrodes (and at least one)
    contribute a spike: ``nb_count``, ``nb_frequency_hz``, ``nb_mean_duration_s``,
    ``nb_mean_spikes``, ``nb_mean_electrodes``, ``nb_percentage`` (100 * spikes in
    network bursts / spikes of the active electrodes), ``nb_ibi_cv`` (population
    CV of the intervals between network bursts, null with fewer than 2);
    synchrony as the mean over pairs of active electrodes of
    :func:`~transforms.mea.synchrony.xcorr_area` (``sync_xcorr_area``, window
    ``sync_window_s``) and of :func:`~transforms.mea.synchrony.sttc` (``sttc``,
    ``sttc_dt_s``), null with fewer than 2 active electrodes.
``network_bursts``
    ``well, start_s, end_s, duration_s, n_spikes, n_electrodes``.

Counts, rates and percentages of an empty set are 0; means and CVs of an empty
set are null (never a made-up 0). ``qc_flags`` lists problems, ``;``-separated
(empty when clean, as ``reader_qc_flags`` elsewhere in the lake):
``no_spikes``, ``no_active_electrodes``, ``rate_above_max`` (a sustained rate
above ``max_rate_hz``, impossible for a single neuron's refractory period).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from transforms.errors import InvalidArgument
from transforms.mea.bursts import isi_threshold_runs
from transforms.mea.synchrony import pairwise_synchrony
from transforms.recording.plate import PlateLayout

NO_SPIKES: Final = "no_spikes"
NO_ACTIVE_ELECTRODES: Final = "no_active_electrodes"
RATE_ABOVE_MAX: Final = "rate_above_max"

#: A spike may sit this far past ``duration_s`` (sample rounding) and still count.
_END_SLACK_S: Final = 1e-6

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class MetricParams:
    """Parameters of :func:`compute_metrics` (defaults: Axion Neural Metric Tool).

    Attributes
    ----------
    min_rate_spm
        An electrode is active at this many spikes per minute or more.
    burst_max_isi_s, burst_min_spikes
        Single-electrode ISI-threshold bursts.
    nb_max_isi_s, nb_min_spikes, nb_min_electrode_fraction
        Network bursts on a well's combined train of active electrodes.
    sync_window_s
        Half-width of the cross-correlation synchrony window.
    sttc_dt_s
        STTC coincidence window (each side).
    max_rate_hz
        Rates above this are flagged as impossible.
    """

    min_rate_spm: float = 5.0
    burst_max_isi_s: float = 0.100
    burst_min_spikes: int = 5
    nb_max_isi_s: float = 0.100
    nb_min_spikes: int = 50
    nb_min_electrode_fraction: float = 0.35
    sync_window_s: float = 0.020
    sttc_dt_s: float = 0.020
    max_rate_hz: float = 1000.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InvalidArgument(
                    f"MetricParams.{f.name} must be a finite number >= 0, got {value!r}"
                )
        if self.burst_min_spikes < 2 or self.nb_min_spikes < 2:
            raise InvalidArgument("MetricParams: bursts need at least 2 spikes")
        if not 0.0 <= self.nb_min_electrode_fraction <= 1.0:
            raise InvalidArgument("MetricParams.nb_min_electrode_fraction must be within [0, 1]")
        for name in ("burst_max_isi_s", "nb_max_isi_s", "sync_window_s", "sttc_dt_s"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"MetricParams.{name} must be positive")

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


@dataclass(frozen=True)
class MeaMetrics:
    """The four result tables of :func:`compute_metrics` and what produced them."""

    electrode_metrics: pa.Table
    bursts: pa.Table
    well_metrics: pa.Table
    network_bursts: pa.Table
    params: MetricParams
    duration_s: float


def _div(num: npt.ArrayLike, den: npt.ArrayLike) -> FloatArray:
    """Elementwise num / den, nan where den is 0 (the mean of nothing)."""
    n = np.asarray(num, dtype=np.float64)
    d = np.asarray(den, dtype=np.float64)
    out = np.full(n.shape, np.nan)
    ok = d > 0
    out[ok] = n[ok] / d[ok]
    return out


def _group_cv(values: FloatArray, owner: IntArray, n_groups: int) -> FloatArray:
    """Population coefficient of variation per group; nan with fewer than 2 values."""
    n = np.bincount(owner, minlength=n_groups).astype(np.float64)
    mean = _div(np.bincount(owner, weights=values, minlength=n_groups), n)
    dev = values - mean[owner]
    var = _div(np.bincount(owner, weights=dev * dev, minlength=n_groups), n)
    cv = _div(np.sqrt(np.nan_to_num(var)), np.nan_to_num(mean))
    cv[n < 2] = np.nan
    return cv


def _nullable(values: FloatArray) -> pa.Array:
    return pa.array(values, type=pa.float64(), from_pandas=True)  # nan -> null


def _validated_arrays(
    spikes: pa.Table, layout: PlateLayout, duration_s: float
) -> tuple[IntArray, FloatArray]:
    missing = {"electrode", "time_s"} - set(spikes.column_names)
    if missing:
        raise InvalidArgument(f"spike table lacks column(s) {sorted(missing)}")
    if not (isinstance(duration_s, int | float) and math.isfinite(duration_s) and duration_s > 0):
        raise InvalidArgument(f"duration_s must be a positive number, got {duration_s!r}")
    time_col = spikes["time_s"]
    if time_col.null_count:
        raise InvalidArgument("spike table has null time_s values")
    t = pc.cast(time_col, pa.float64()).to_numpy()
    electrode = pc.cast(spikes["electrode"], pa.string())
    idx = pc.index_in(electrode, value_set=pa.array(layout.electrodes, pa.string()))
    if idx.null_count:
        bad = electrode.filter(pc.is_null(idx))[0].as_py()
        raise InvalidArgument(
            f"spike table: electrode {bad!r} does not exist on a {layout.name} plate"
        )
    if t.size and not np.isfinite(t).all():
        raise InvalidArgument("spike table has non-finite time_s values")
    if t.size and (t.min() < 0 or t.max() > duration_s + _END_SLACK_S):
        raise InvalidArgument(
            f"spike times span [{t.min():.6f}, {t.max():.6f}] s, outside the analysed "
            f"duration [0, {duration_s}] s"
        )
    return idx.to_numpy().astype(np.int64), t


def compute_metrics(
    spikes: pa.Table,
    *,
    layout: PlateLayout,
    duration_s: float,
    params: MetricParams = MetricParams(),  # frozen, so sharing it is safe
) -> MeaMetrics:
    """Compute electrode, burst, well and network-burst metrics of one plate recording.

    Parameters
    ----------
    spikes
        The MEA spike table (``electrode`` and ``time_s`` are used).
    layout
        The plate; every electrode and well of it gets a row.
    duration_s
        The time span the spikes cover, from 0: all rates divide by it. For a
        truncated AxIS export use the covered span
        (:attr:`~transforms.readers.axis_spikelist.SpikeList.analysis_duration_s`),
        not the declared recording length.
    params
        See :class:`MetricParams`.

    Returns
    -------
    MeaMetrics

    Raises
    ------
    InvalidArgument
        If a column is missing, an electrode is not on the plate, a time is null,
        negative or after ``duration_s``, or ``duration_s`` is not positive.
    """
    e_raw, t_raw = _validated_arrays(spikes, layout, duration_s)
    order = np.lexsort((t_raw, e_raw))
    e, t = e_raw[order], t_raw[order]
    # A 10 M-spike plate's per-spike arrays are 80 MB each: drop each as soon as
    # it is used up, so the worker's budget holds fewer of them at once.
    del e_raw, t_raw, order
    n_e, n_w, epw = layout.n_channels, layout.n_wells, layout.electrodes_per_well
    well_of_e = np.arange(n_e) // epw  # layout.electrodes is ordered well by well
    electrodes = np.array(layout.electrodes, dtype=object)
    wells = np.array(layout.wells, dtype=object)
    params_json = params.to_json()

    # --- per electrode: rate, ISI CV, activity ---------------------------------
    counts = np.bincount(e, minlength=n_e)
    rate_hz = counts / duration_s
    same = e[1:] == e[:-1]
    isi_cv = _group_cv(np.diff(t)[same], e[1:][same], n_e)
    active = (rate_hz * 60.0 >= params.min_rate_spm) & (counts > 0)

    # --- single-electrode bursts ------------------------------------------------
    runs = isi_threshold_runs(
        t, e, max_isi_s=params.burst_max_isi_s, min_spikes=params.burst_min_spikes
    )
    b_start, b_end, b_e = t[runs.first], t[runs.last], runs.group
    b_dur = b_end - b_start
    b_count = np.bincount(b_e, minlength=n_e).astype(np.float64)
    in_burst = np.bincount(b_e, weights=runs.n_spikes, minlength=n_e)
    next_same = b_e[1:] == b_e[:-1]
    ibi_sum = np.bincount(
        b_e[1:][next_same], weights=(b_start[1:] - b_end[:-1])[next_same], minlength=n_e
    )
    mean_ibi = _div(ibi_sum, b_count - 1.0)
    e_flags = [RATE_ABOVE_MAX if r > params.max_rate_hz else "" for r in rate_hz]

    electrode_metrics = pa.table(
        {
            "well": pa.array(wells[well_of_e], pa.string()),
            "electrode": pa.array(electrodes, pa.string()),
            "spike_count": pa.array(counts, pa.int64()),
            "mean_firing_rate_hz": pa.array(rate_hz, pa.float64()),
            "isi_cv": _nullable(isi_cv),
            "active": pa.array(active, pa.bool_()),
            "burst_count": pa.array(b_count.astype(np.int64), pa.int64()),
            "burst_frequency_hz": pa.array(b_count / duration_s, pa.float64()),
            "mean_burst_duration_s": _nullable(
                _div(np.bincount(b_e, weights=b_dur, minlength=n_e), b_count)
            ),
            "mean_spikes_per_burst": _nullable(_div(in_burst, b_count)),
            "mean_ibi_s": _nullable(mean_ibi),
            "burst_percentage": _nullable(_div(100.0 * in_burst, counts.astype(np.float64))),
            "duration_s": pa.array(np.full(n_e, float(duration_s)), pa.float64()),
            "qc_flags": pa.array(e_flags, pa.string()),
            "params_json": pa.array([params_json] * n_e, pa.string()),
        }
    )
    bursts = pa.table(
        {
            "electrode": pa.array(electrodes[b_e], pa.string()),
            "well": pa.array(wells[well_of_e[b_e]], pa.string()),
            "start_s": pa.array(b_start, pa.float64()),
            "end_s": pa.array(b_end, pa.float64()),
            "duration_s": pa.array(b_dur, pa.float64()),
            "n_spikes": pa.array(runs.n_spikes, pa.int64()),
            "params_json": pa.array([params_json] * len(b_e), pa.string()),
        }
    )

    # --- network bursts on each well's combined train of active electrodes ------
    n_active = np.bincount(well_of_e, weights=active, minlength=n_w).astype(np.int64)
    from_active = active[e]
    ae, at = e[from_active], t[from_active]
    del e, t, same, runs  # the per-electrode trains are done with
    aw = well_of_e[ae]
    combined = np.lexsort((at, aw))
    ae = ae[combined]  # one at a time: never two copies of all three
    at = at[combined]
    aw = aw[combined]
    del combined, from_active
    nb = isi_threshold_runs(at, aw, max_isi_s=params.nb_max_isi_s, min_spikes=params.nb_min_spikes)
    in_run = nb.spike_run >= 0
    pairs = np.unique(nb.spike_run[in_run] * n_e + ae[in_run])
    nb_elec = np.bincount(pairs // n_e, minlength=nb.group.size)
    # Participation is counted against the well's active electrodes, at least one.
    need = np.maximum(1, np.ceil(params.nb_min_electrode_fraction * n_active - 1e-9))
    keep = nb_elec >= need[nb.group]
    nb_w, nb_n, nb_elec = nb.group[keep], nb.n_spikes[keep], nb_elec[keep]
    nb_start, nb_end = at[nb.first[keep]], at[nb.last[keep]]
    nb_dur = nb_end - nb_start
    nb_count = np.bincount(nb_w, minlength=n_w).astype(np.float64)
    nb_spikes = np.bincount(nb_w, weights=nb_n, minlength=n_w)
    active_spikes = np.bincount(aw, minlength=n_w).astype(np.float64)
    nb_next = nb_w[1:] == nb_w[:-1]
    nb_ibi_cv = _group_cv((nb_start[1:] - nb_end[:-1])[nb_next], nb_w[1:][nb_next], n_w)

    # --- synchrony over pairs of active electrodes ------------------------------
    sync_area = np.full(n_w, np.nan)
    sync_sttc = np.full(n_w, np.nan)
    well_bounds = np.searchsorted(aw, np.arange(n_w + 1))
    for well_i in np.flatnonzero(n_active >= 2):
        lo, hi = well_bounds[well_i], well_bounds[well_i + 1]
        members = np.flatnonzero(active[well_i * epw : (well_i + 1) * epw]) + well_i * epw
        coeff, area = pairwise_synchrony(
            at[lo:hi],
            np.searchsorted(members, ae[lo:hi]),  # rank among the well's active electrodes
            n_trains=len(members),
            dt_s=params.sttc_dt_s,
            window_s=params.sync_window_s,
            start_s=0.0,
            end_s=duration_s,
        )
        upper = np.triu_indices(len(members), k=1)
        sync_area[well_i] = float(np.mean(area[upper]))
        sync_sttc[well_i] = float(np.mean(coeff[upper]))

    # --- per well ---------------------------------------------------------------
    well_counts = np.bincount(well_of_e, weights=counts, minlength=n_w)
    active_rate_sum = np.bincount(well_of_e, weights=rate_hz * active, minlength=n_w)
    weighted = np.nan_to_num(_div(active_rate_sum, n_active.astype(np.float64)))
    too_fast = np.bincount(well_of_e, weights=rate_hz > params.max_rate_hz, minlength=n_w) > 0
    w_flags: list[str] = []
    for w in range(n_w):
        flags = []
        if well_counts[w] == 0:
            flags.append(NO_SPIKES)
        if n_active[w] == 0:
            flags.append(NO_ACTIVE_ELECTRODES)
        if too_fast[w]:
            flags.append(RATE_ABOVE_MAX)
        w_flags.append(";".join(flags))

    well_metrics = pa.table(
        {
            "well": pa.array(wells, pa.string()),
            "n_electrodes": pa.array(np.full(n_w, epw), pa.int64()),
            "spike_count": pa.array(well_counts.astype(np.int64), pa.int64()),
            "n_active_electrodes": pa.array(n_active, pa.int64()),
            "mean_firing_rate_hz": pa.array(well_counts / (epw * duration_s), pa.float64()),
            "weighted_mean_firing_rate_hz": pa.array(weighted, pa.float64()),
            "nb_count": pa.array(nb_count.astype(np.int64), pa.int64()),
            "nb_frequency_hz": pa.array(nb_count / duration_s, pa.float64()),
            "nb_mean_duration_s": _nullable(
                _div(np.bincount(nb_w, weights=nb_dur, minlength=n_w), nb_count)
            ),
            "nb_mean_spikes": _nullable(_div(nb_spikes, nb_count)),
            "nb_mean_electrodes": _nullable(
                _div(np.bincount(nb_w, weights=nb_elec, minlength=n_w), nb_count)
            ),
            "nb_percentage": pa.array(
                np.nan_to_num(_div(100.0 * nb_spikes, active_spikes)), pa.float64()
            ),
            "nb_ibi_cv": _nullable(nb_ibi_cv),
            "sync_xcorr_area": _nullable(sync_area),
            "sttc": _nullable(sync_sttc),
            "duration_s": pa.array(np.full(n_w, float(duration_s)), pa.float64()),
            "qc_flags": pa.array(w_flags, pa.string()),
            "params_json": pa.array([params_json] * n_w, pa.string()),
        }
    )
    network_bursts = pa.table(
        {
            "well": pa.array(wells[nb_w], pa.string()),
            "start_s": pa.array(nb_start, pa.float64()),
            "end_s": pa.array(nb_end, pa.float64()),
            "duration_s": pa.array(nb_dur, pa.float64()),
            "n_spikes": pa.array(nb_n, pa.int64()),
            "n_electrodes": pa.array(nb_elec, pa.int64()),
            "params_json": pa.array([params_json] * len(nb_w), pa.string()),
        }
    )
    return MeaMetrics(
        electrode_metrics=electrode_metrics,
        bursts=bursts,
        well_metrics=well_metrics,
        network_bursts=network_bursts,
        params=params,
        duration_s=float(duration_s),
    )
