"""Action-potential detection and per-spike features with IPFX's definitions.

Definitions follow ``ipfx.spike_detector`` / ``ipfx.spike_features`` (IPFX
2.1): putative spikes are upward crossings of ``dv_cutoff`` (20 mV/ms) by the
Bessel-filtered dV/dt; the peak is the voltage maximum up to the next putative
spike; spikes whose dV/dt never went below zero in between are merged; peaks
below ``min_peak`` (-30 mV) or less than ``min_height`` (2 mV) above threshold
are rejected; the threshold is refined back from the upstroke to the last
sample where dV/dt was at most ``thresh_frac`` (5 %) of the sweep's mean
upstroke; the last spike is "clipped" when Vm does not come back within
``clip_tol_mv`` of its threshold before the window ends; troughs, the fast
trough (end of the repolarisation, dV/dt back to 1 % of the downstroke), ADP
and slow trough and the width at half height (from the fast trough) follow
IPFX's ``analyze_trough_details`` and ``find_widths``.

The implementation is independent of IPFX's and vectorised: every sweep of a
block is a row of one 2-D array, and each feature is found for all spikes of
all rows with a few segment reductions (:mod:`._segments`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from transforms.icephys._segments import first_where, last_where, seg_argext, seg_min


@dataclass(frozen=True)
class SpikeParams:
    """Spike detection parameters (IPFX ``SpikeFeatureExtractor`` defaults)."""

    dv_cutoff_mv_per_ms: float = 20.0
    min_height_mv: float = 2.0
    min_peak_mv: float = -30.0
    thresh_frac: float = 0.05
    max_interval_s: float = 0.005
    clip_tol_mv: float = 1.0
    filter_khz: float = 10.0
    heavy_filter_khz: float = 1.0
    term_frac: float = 0.01
    adp_thresh_mv_per_ms: float = 0.5
    adp_tol_mv: float = 0.5
    flat_interval_s: float = 0.002
    adp_max_delta_t_s: float = 0.005
    adp_max_delta_v_mv: float = 10.0

    def as_dict(self) -> dict[str, float | str | int]:
        return dict(asdict(self))


#: Integer-index fields of a detected spike set; -1 marks "undefined".
INDEX_FIELDS = (
    "threshold",
    "peak",
    "upstroke",
    "trough",
    "downstroke",
    "fast_trough",
    "adp",
    "slow_trough",
    "width_start",
    "width_end",
)


@dataclass
class SpikeBlock:
    """Spikes of a block of sweeps; indices are flat (``row * L + local``).

    Spikes are in row order, then in time (the detection relies on it too).
    """

    row: np.ndarray
    idx: dict[str, np.ndarray]
    clipped: np.ndarray
    isi_type: np.ndarray  # 0 unknown, 1 direct, 2 detour

    @property
    def size(self) -> int:
        return int(self.row.size)


def _empty_block() -> SpikeBlock:
    z = np.zeros(0, dtype=np.int64)
    return SpikeBlock(z, {k: z for k in INDEX_FIELDS}, np.zeros(0, dtype=bool), z)


def _same_row_next(row: np.ndarray) -> np.ndarray:
    """True where the next element belongs to the same row."""
    return np.r_[row[1:] == row[:-1], False]


def detect_block(
    v: np.ndarray,
    dvdt: np.ndarray,
    *,
    win_start: int,
    win_end: int,
    sampling_rate_hz: float,
    heavy_dvdt: Callable[[np.ndarray], np.ndarray],
    params: SpikeParams = SpikeParams(),
) -> SpikeBlock:
    """Detect spikes and their feature indices in every row of a block.

    Parameters
    ----------
    v
        Raw voltage, shape ``(rows, L)``, mV.
    dvdt
        Filtered dV/dt, shape ``(rows, L)`` (last column unused), mV/ms.
    win_start, win_end
        Analysis window in row-local samples: IPFX's ``start_index`` and
        ``end_index`` (the sample at the window's end time).
    sampling_rate_hz
        Samples per second.
    heavy_dvdt
        Returns the 1 kHz-filtered dV/dt for the given rows (same shape rules).
    params
        Detection parameters.
    """
    n_rows, width = v.shape
    vf = v.ravel()
    df = dvdt.ravel()
    rate = sampling_rate_hz
    base = np.arange(n_rows, dtype=np.int64) * width

    # 1. Putative spikes: upward crossings of the dV/dt cutoff in the window.
    above = dvdt[:, win_start:win_end] >= params.dv_cutoff_mv_per_ms
    rr, cc = np.nonzero(~above[:, :-1] & above[:, 1:])
    if rr.size == 0:
        return _empty_block()
    put = base[rr] + win_start + cc
    same = rr[1:] == rr[:-1]
    # keep a crossing only if dV/dt went below zero since the previous one
    went_neg = seg_min(df, put[:-1], put[1:]) < 0
    keep = np.r_[True, ~same | went_neg]
    put, rr = put[keep], rr[keep]

    # 2. Peaks: voltage maximum up to the next putative spike (or window end).
    nxt = np.where(_same_row_next(rr), np.r_[put[1:], 0], base[rr] + win_end)
    peaks = seg_argext(vf, put, nxt, largest=True)

    # 3. Merge spikes whose dV/dt did not turn negative between peak and next spike.
    same_next = _same_row_next(rr)
    ok_pair = np.ones(put.size, dtype=bool)
    if put.size > 1:
        ok_pair[:-1] = ~same_next[:-1] | (seg_min(df, peaks[:-1], put[1:]) < 0)
    keep_peak = ok_pair
    keep_spike = np.r_[True, ok_pair[:-1]]
    spikes, peaks = put[keep_spike], peaks[keep_peak]
    rr_s = rr[keep_spike]
    good = (vf[peaks] >= params.min_peak_mv) & (vf[peaks] - vf[spikes] >= params.min_height_mv)
    spikes, peaks, row = spikes[good], peaks[good], rr_s[good]
    if spikes.size == 0:
        return _empty_block()

    # 4. Upstroke and threshold refinement to thresh_frac of the mean upstroke.
    up = seg_argext(df, spikes, peaks, largest=True)
    thr = _refine_thresholds(df, up, row, base, params.thresh_frac)

    # 5. Overlapping spikes and threshold-peak pairs too far apart.
    thr, peaks, up, row = _check_pairs(vf, df, thr, peaks, up, row, base, rate, params)
    if thr.size == 0:
        return _empty_block()

    # 6. Clipping of the last spike of each row.
    last = ~_same_row_next(row)
    clipped = np.zeros(thr.size, dtype=bool)
    li = np.flatnonzero(last)
    tail_min = seg_min(vf, peaks[li], base[row[li]] + win_end + 1)
    clipped[li] = ~(tail_min <= vf[thr[li]] + params.clip_tol_mv)

    # 7. Upstroke, troughs, downstrokes.
    up = seg_argext(df, thr, peaks, largest=True)
    same_next = _same_row_next(row)
    nxt_thr = np.where(same_next, np.r_[thr[1:], 0], base[row] + win_end)
    trough = seg_argext(vf, peaks, nxt_thr, largest=False)
    trough[clipped & ~same_next] = -1
    down = np.full(thr.size, -1, dtype=np.int64)
    has_tr = trough >= 0
    down[has_tr] = seg_argext(df, peaks[has_tr], trough[has_tr], largest=False)

    # 8. Trough details (fast trough, ADP, slow trough) for unclipped spikes.
    fast, adp, slow, isi_type, clipped = _trough_details(
        vf, df, thr, peaks, row, clipped, base, win_end, rate, heavy_dvdt, n_rows, width, params
    )

    # 9. Width at half height between the fast trough and the peak.
    w_start, w_end = _widths(vf, thr, peaks, fast, clipped)

    idx = {
        "threshold": thr,
        "peak": peaks,
        "upstroke": up,
        "trough": trough,
        "downstroke": down,
        "fast_trough": fast,
        "adp": adp,
        "slow_trough": slow,
        "width_start": w_start,
        "width_end": w_end,
    }
    return SpikeBlock(row=row, idx=idx, clipped=clipped, isi_type=isi_type)


def _refine_thresholds(
    df: np.ndarray, up: np.ndarray, row: np.ndarray, base: np.ndarray, thresh_frac: float
) -> np.ndarray:
    n_rows = base.size
    sums = np.bincount(row, weights=df[up], minlength=n_rows)
    counts = np.bincount(row, minlength=n_rows)
    target = (sums / np.maximum(counts, 1) * thresh_frac)[row]
    first = np.r_[True, row[1:] != row[:-1]]
    # IPFX searches back to the previous upstroke, or to the sweep start.
    prev = np.where(first, base[row] - 1, np.r_[0, up[:-1]])
    found = last_where(df, prev, up, np.less_equal, thresholds=target)
    lower = np.where(first, base[row], prev)
    return np.where(found >= 0, found, lower)


def _check_pairs(
    vf: np.ndarray,
    df: np.ndarray,
    thr: np.ndarray,
    peaks: np.ndarray,
    up: np.ndarray,
    row: np.ndarray,
    base: np.ndarray,
    rate: float,
    params: SpikeParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    same = row[1:] == row[:-1]
    overlap = np.flatnonzero(same & (thr[1:] <= peaks[:-1] + 1))
    if overlap.size:
        ks = np.ones(thr.size, dtype=bool)
        ks[overlap + 1] = False
        kp = np.ones(thr.size, dtype=bool)
        kp[overlap] = False
        # thresholds/rows follow the spike mask, peaks/upstrokes the peak mask
        thr, row = thr[ks], row[ks]
        peaks, up = peaks[kp], up[kp]
    max_n = params.max_interval_s * rate
    too_long = np.flatnonzero((peaks - thr) >= max_n - 1e-9)
    if too_long.size == 0:
        return thr, peaks, up, row
    thr, peaks = thr.copy(), peaks.copy()
    n_rows = base.size
    sums = np.bincount(row, weights=df[up], minlength=n_rows)
    counts = np.bincount(row, minlength=n_rows)
    target_row = sums / np.maximum(counts, 1) * params.thresh_frac
    drop = []
    win = round(max_n)
    for i in too_long:
        target = target_row[row[i]]
        t0 = max(int(peaks[i]) - win, int(base[row[i]]))
        seg = df[t0 + 1 : up[i] + 1][::-1]
        below = np.flatnonzero(seg <= target)
        if below.size:
            thr[i] = up[i] - below[0]
            continue
        t1 = min(int(thr[i]) + 2 * win, int(base[row[i]]) + vf.size // base.size)
        new_peak = int(np.argmax(vf[thr[i] : t1])) + int(thr[i])
        nxt_ok = i == thr.size - 1 or row[i + 1] != row[i] or new_peak < thr[i + 1]
        if new_peak - thr[i] < max_n and nxt_ok:
            peaks[i] = new_peak
        else:
            drop.append(i)
    if drop:
        keep = np.ones(thr.size, dtype=bool)
        keep[drop] = False
        thr, peaks, up, row = thr[keep], peaks[keep], up[keep], row[keep]
    return thr, peaks, up, row


def _trough_details(
    vf: np.ndarray,
    df: np.ndarray,
    thr: np.ndarray,
    peaks: np.ndarray,
    row: np.ndarray,
    clipped: np.ndarray,
    base: np.ndarray,
    win_end: int,
    rate: float,
    heavy_dvdt: Callable[[np.ndarray], np.ndarray],
    n_rows: int,
    width: int,
    params: SpikeParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = thr.size
    fast = np.full(n, -1, dtype=np.int64)
    adp = np.full(n, -1, dtype=np.int64)
    slow = np.full(n, -1, dtype=np.int64)
    isi_type = np.zeros(n, dtype=np.int64)
    clipped = clipped.copy()
    valid = np.flatnonzero(~clipped)
    if valid.size == 0:
        return fast, adp, slow, isi_type, clipped
    vrow = row[valid]
    same_next = np.r_[vrow[1:] == vrow[:-1], False]
    nxt = np.where(same_next, np.r_[thr[valid][1:], 0], base[vrow] + win_end)
    pk = peaks[valid]
    ds = seg_argext(df, pk, nxt, largest=False)
    target = params.term_frac * df[ds]
    term = first_where(df, ds, nxt, np.greater_equal, thresholds=target)
    no_term = term < 0
    clipped[valid[no_term]] = True
    ok = ~no_term
    vi, term, nxt = valid[ok], term[ok], nxt[ok]
    fast[vi] = term

    # ADP: heavy-filtered dV/dt back above adp_thresh soon after the fast trough.
    rows_needed = np.unique(row[vi])
    heavy = np.full(n_rows * width, np.nan)
    if rows_needed.size:
        hv = heavy_dvdt(rows_needed)
        heavy.reshape(n_rows, width)[rows_needed] = hv
    cross = first_where(
        heavy,
        term,
        nxt,
        np.greater_equal,
        thresholds=np.full(term.size, params.adp_thresh_mv_per_ms),
    )
    soon = (cross >= 0) & ((cross - term) / rate < params.flat_interval_s)
    zr = np.full(term.size, -1, dtype=np.int64)
    if soon.any():
        zr[soon] = first_where(
            heavy, cross[soon], nxt[soon], np.less_equal, thresholds=np.zeros(int(soon.sum()))
        )
    has_zr = zr >= 0
    adp_local = np.full(term.size, -1, dtype=np.int64)
    slow_local = np.full(term.size, -1, dtype=np.int64)
    detour = np.zeros(term.size, dtype=bool)
    if has_zr.any():
        z = zr[has_zr]
        mi = seg_argext(vf, z, nxt[has_zr], largest=False)
        t_ = term[has_zr]
        good = (
            (mi >= 0)
            & (vf[z] - vf[np.maximum(mi, 0)] >= params.adp_tol_mv)
            & (vf[z] - vf[t_] <= params.adp_max_delta_v_mv)
            & ((z - t_) / rate <= params.adp_max_delta_t_s)
        )
        hz = np.flatnonzero(has_zr)[good]
        adp_local[hz] = z[good]
        slow_local[hz] = mi[good]
        detour[hz] = True
    rest = np.flatnonzero(adp_local < 0)
    if rest.size:
        mi = seg_argext(vf, term[rest], nxt[rest], largest=False)
        dropped = (mi >= 0) & (vf[term[rest]] - vf[np.maximum(mi, 0)] >= params.adp_tol_mv)
        slow_local[rest[dropped]] = mi[dropped]
        detour[rest[dropped]] = True
    adp[vi] = adp_local
    slow[vi] = slow_local
    isi_type[vi] = np.where(detour, 2, 1)
    # IPFX discards ADP and slow trough of the last spike of a train (unreliable).
    last = ~np.r_[row[1:] == row[:-1], False]
    adp[last] = -1
    slow[last] = -1
    return fast, adp, slow, isi_type, clipped


def _widths(
    vf: np.ndarray, thr: np.ndarray, peaks: np.ndarray, fast: np.ndarray, clipped: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n = thr.size
    w_start = np.full(n, -1, dtype=np.int64)
    w_end = np.full(n, -1, dtype=np.int64)
    use = np.flatnonzero((fast >= 0) & ~clipped)
    if use.size == 0:
        return w_start, w_end
    pk, th, ft = peaks[use], thr[use], fast[use]
    level = (vf[pk] - vf[ft]) / 2.0 + vf[ft]
    low = level < vf[th]
    # bursts: deep trough but small spike -> half of threshold-to-peak instead
    level = np.where(low, (vf[pk] - vf[th]) / 2.0 + vf[th], level)
    w_start[use] = last_where(vf, th, pk, np.less_equal, thresholds=level)
    w_end[use] = first_where(vf, pk, ft, np.less_equal, thresholds=level)
    bad = (w_start < 0) | (w_end < 0)
    w_start[bad] = -1
    w_end[bad] = -1
    return w_start, w_end
