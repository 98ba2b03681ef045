"""MEA metrics: hand-computed spike trains, STTC edge cases, the real sample end to end."""

from __future__ import annotations

import csv
import gzip
import json
import math
import time
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.conftest import MEA_DIR
from transforms.errors import InvalidArgument
from transforms.formats.axis_spikelist import read_spike_list
from transforms.formats.platemap import read_plate_map
from transforms.mea.metrics import MetricParams, compute_metrics
from transforms.mea.synchrony import (
    coincidences,
    pairwise_synchrony,
    proportion_within,
    sttc,
    tiling_fraction,
    tiling_fractions,
    xcorr_area,
)
from transforms.recording.plate import LAYOUTS

L24 = LAYOUTS[24]
SPIKES = MEA_DIR / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"
EXPLOG = MEA_DIR / "exampleRecording_1012016_plate1_expLog.csv"


def _table(trains: dict[str, list[float]]) -> pa.Table:
    rows = sorted((t, e) for e, ts in trains.items() for t in ts)
    return pa.table(
        {
            "electrode": pa.array([e for _, e in rows], pa.string()),
            "well": pa.array([e.split("_")[0] for _, e in rows], pa.string()),
            "time_s": pa.array([t for t, _ in rows], pa.float64()),
            "amplitude_uv": pa.array([None] * len(rows), pa.float32()),
        }
    )


def _row(table: pa.Table, key: str, value: str) -> dict:
    return table.filter(pc.equal(table[key], value)).to_pylist()[0]


# --- per-electrode rates, ISI CV, activity -------------------------------------


def test_rates_isi_cv_and_activity() -> None:
    spikes = _table({"A1_11": [1.0, 2.0, 4.0], "A1_21": [5.0], "B2_44": [0.5, 1.0]})
    m = compute_metrics(spikes, layout=L24, duration_s=10.0)
    em = m.electrode_metrics
    assert em.num_rows == 24 * 16  # every electrode, silent ones included
    a = _row(em, "electrode", "A1_11")
    assert a["spike_count"] == 3
    assert a["mean_firing_rate_hz"] == pytest.approx(0.3)
    # ISIs 1 and 2 s: mean 1.5, population std 0.5.
    assert a["isi_cv"] == pytest.approx(1 / 3)
    assert a["active"] is True  # 18 spikes/min
    b = _row(em, "electrode", "A1_21")
    assert b["isi_cv"] is None  # no ISI at all
    assert _row(em, "electrode", "B2_44")["isi_cv"] is None  # a single ISI has no spread
    silent = _row(em, "electrode", "A1_44")
    assert silent["spike_count"] == 0 and silent["active"] is False
    assert silent["mean_burst_duration_s"] is None and silent["burst_percentage"] is None
    assert a["well"] == "A1"


def test_activity_threshold_is_five_spikes_per_minute() -> None:
    spikes = _table({"A1_11": [1, 2, 3, 4, 5.0], "A1_12": [1, 2, 3, 4.0]})
    em = compute_metrics(spikes, layout=L24, duration_s=60.0).electrode_metrics
    assert _row(em, "electrode", "A1_11")["active"] is True  # exactly 5/min
    assert _row(em, "electrode", "A1_12")["active"] is False  # 4/min


# --- single-electrode bursts ---------------------------------------------------

BURSTY = [1.00, 1.05, 1.10, 1.15, 1.20]  # 5 spikes, burst 1 (0.2 s)
BURSTY += [2.0]  # isolated
BURSTY += [3.00, 3.02, 3.04, 3.06, 3.08, 3.10]  # 6 spikes, burst 2 (0.1 s)
BURSTY += [5.00, 5.01, 5.02, 5.03]  # only 4 spikes: no burst
BURSTY += [5.20]  # 170 ms after the previous spike


def test_isi_threshold_bursts_by_hand() -> None:
    m = compute_metrics(_table({"C3_22": BURSTY}), layout=L24, duration_s=10.0)
    e = _row(m.electrode_metrics, "electrode", "C3_22")
    assert e["spike_count"] == 17
    assert e["burst_count"] == 2
    assert e["burst_frequency_hz"] == pytest.approx(0.2)
    assert e["mean_burst_duration_s"] == pytest.approx((0.2 + 0.1) / 2)
    assert e["mean_spikes_per_burst"] == pytest.approx(5.5)
    assert e["mean_ibi_s"] == pytest.approx(3.0 - 1.2)
    assert e["burst_percentage"] == pytest.approx(100 * 11 / 17)
    bursts = m.bursts.to_pylist()
    assert [(b["electrode"], b["well"], b["n_spikes"]) for b in bursts] == [
        ("C3_22", "C3", 5),
        ("C3_22", "C3", 6),
    ]
    assert bursts[0]["start_s"] == 1.0 and bursts[0]["end_s"] == 1.2
    assert bursts[1]["duration_s"] == pytest.approx(0.1)


def test_burst_isi_boundary_is_inclusive() -> None:
    at_limit = [0.0, 0.1, 0.2, 0.3, 0.4]  # float diffs straddle 0.1 by ~1e-17
    over = [5.0, 5.1001, 5.2002, 5.3003, 5.4004]
    m = compute_metrics(_table({"A1_11": at_limit, "A1_12": over}), layout=L24, duration_s=6.0)
    em = m.electrode_metrics
    assert _row(em, "electrode", "A1_11")["burst_count"] == 1
    assert _row(em, "electrode", "A1_12")["burst_count"] == 0
    assert _row(em, "electrode", "A1_12")["mean_ibi_s"] is None


def test_bursts_do_not_cross_electrodes() -> None:
    # Interleaved trains: 3 spikes each, 6 combined within 10 ms.
    m = compute_metrics(
        _table({"A1_11": [1.0, 1.002, 1.004], "A1_12": [1.001, 1.003, 1.005]}),
        layout=L24,
        duration_s=2.0,
        params=MetricParams(burst_min_spikes=4),
    )
    assert m.bursts.num_rows == 0
    # The same six times on one electrode do make a burst.
    merged = [1.0, 1.001, 1.002, 1.003, 1.004, 1.005]
    m = compute_metrics(
        _table({"A1_11": merged}),
        layout=L24,
        duration_s=2.0,
        params=MetricParams(burst_min_spikes=4),
    )
    assert m.bursts["n_spikes"].to_pylist() == [6]


def test_params_are_stored_and_used() -> None:
    params = MetricParams(burst_min_spikes=4, min_rate_spm=30.0)
    m = compute_metrics(_table({"C3_22": BURSTY}), layout=L24, duration_s=10.0, params=params)
    assert _row(m.electrode_metrics, "electrode", "C3_22")["burst_count"] == 3
    assert _row(m.electrode_metrics, "electrode", "C3_22")["active"] is True  # 102/min
    for table in (m.electrode_metrics, m.bursts, m.well_metrics, m.network_bursts):
        assert "params_json" in table.column_names
    stored = json.loads(m.bursts["params_json"][0].as_py())
    assert stored == params.as_dict()
    assert stored["burst_min_spikes"] == 4 and stored["burst_max_isi_s"] == 0.1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"burst_min_spikes": 1},
        {"burst_max_isi_s": 0.0},
        {"nb_min_electrode_fraction": 1.5},
        {"sttc_dt_s": -0.02},
        {"min_rate_spm": math.nan},
    ],
)
def test_bad_params(kwargs: dict) -> None:
    with pytest.raises(InvalidArgument):
        MetricParams(**kwargs)


# --- network bursts ------------------------------------------------------------


def _network_trains() -> dict[str, list[float]]:
    """Four active electrodes of well A1 fire together three times.

    Electrode k fires at t0 + 0.02 i + 0.005 k (i < 15): the combined train has 60
    spikes 5 ms apart, from t0 to t0 + 0.295 s.
    """
    names = ["A1_11", "A1_12", "A1_13", "A1_14"]
    trains: dict[str, list[float]] = defaultdict(list)
    for t0 in (10.0, 20.0, 35.0):
        for k, name in enumerate(names):
            trains[name] += [t0 + 0.02 * i + 0.005 * k for i in range(15)]
    trains["A1_11"] += [50.0, 55.0]  # background spikes outside network bursts
    # A lone 55-spike run on one electrode: 1 of 4 active electrodes < 35 %.
    trains["A1_11"] += [40.0 + 0.001 * i for i in range(55)]
    # An inactive electrode (2 spikes/min) firing inside a network burst.
    trains["A1_44"] = [10.1025, 20.1025]
    return trains


def test_network_bursts_by_hand() -> None:
    m = compute_metrics(_table(_network_trains()), layout=L24, duration_s=60.0)
    w = _row(m.well_metrics, "well", "A1")
    assert w["n_active_electrodes"] == 4
    assert w["nb_count"] == 3
    assert w["nb_frequency_hz"] == pytest.approx(3 / 60)
    assert w["nb_mean_duration_s"] == pytest.approx(0.295)
    assert w["nb_mean_spikes"] == pytest.approx(60)
    assert w["nb_mean_electrodes"] == pytest.approx(4)
    # Active electrodes hold 45*4 + 2 + 55 = 237 spikes, 180 in network bursts.
    assert w["nb_percentage"] == pytest.approx(100 * 180 / 237)
    ibis = np.array([20.0 - 10.295, 35.0 - 20.295])  # mean 12.205, std 2.5
    assert w["nb_ibi_cv"] == pytest.approx(2.5 / 12.205)
    nbs = m.network_bursts.to_pylist()
    assert [(n["well"], n["n_spikes"], n["n_electrodes"]) for n in nbs] == [("A1", 60, 4)] * 3
    assert [n["start_s"] for n in nbs] == pytest.approx([10.0, 20.0, 35.0])
    assert nbs[0]["end_s"] == pytest.approx(10.295)
    assert ibis.std() / ibis.mean() == pytest.approx(2.5 / 12.205)
    # Mean rate over all 16 electrodes vs over the 4 active ones.
    assert w["mean_firing_rate_hz"] == pytest.approx((237 + 2) / (16 * 60))
    assert w["weighted_mean_firing_rate_hz"] == pytest.approx(237 / (4 * 60))


def test_network_burst_participation_threshold() -> None:
    params = MetricParams(nb_min_electrode_fraction=1.0)  # all 4 must take part
    trains = _network_trains()
    trains["A1_21"] = [s + 0.5 for s in range(1, 60, 2)]  # 5th active electrode, never in
    m = compute_metrics(_table(trains), layout=L24, duration_s=60.0, params=params)
    assert _row(m.well_metrics, "well", "A1")["nb_count"] == 0
    m = compute_metrics(_table(trains), layout=L24, duration_s=60.0)  # 35 % of 5 -> 2
    assert _row(m.well_metrics, "well", "A1")["nb_count"] == 3


# --- well rows, QC flags, validation --------------------------------------------


def test_every_well_gets_a_row_and_flags() -> None:
    trains = {"A1_11": [0.1 * i for i in range(1, 10)], "B1_11": [0.5]}
    trains["D6_44"] = [i / 2000 for i in range(1, 2001)]  # 2000 Hz for 1 s
    m = compute_metrics(_table(trains), layout=L24, duration_s=1.0)
    wm = m.well_metrics
    assert wm["well"].to_pylist() == list(L24.wells)
    silent = _row(wm, "well", "C3")
    assert silent["qc_flags"] == "no_spikes;no_active_electrodes"
    assert silent["mean_firing_rate_hz"] == 0.0 and silent["weighted_mean_firing_rate_hz"] == 0.0
    assert silent["nb_count"] == 0 and silent["nb_percentage"] == 0.0
    assert silent["nb_mean_duration_s"] is None and silent["sttc"] is None
    assert _row(wm, "well", "D6")["qc_flags"] == "rate_above_max"
    assert _row(m.electrode_metrics, "electrode", "D6_44")["qc_flags"] == "rate_above_max"
    assert _row(wm, "well", "A1")["qc_flags"] == ""
    assert _row(wm, "well", "A1")["sttc"] is None  # one active electrode: no pair


@pytest.mark.parametrize(
    ("trains", "duration", "message"),
    [
        ({"A1_55": [1.0]}, 10.0, "'A1_55' does not exist on a CytoView MEA 24"),
        ({"A1_11": [11.0]}, 10.0, "outside the analysed duration"),
        ({"A1_11": [-1.0]}, 10.0, "outside the analysed duration"),
        ({"A1_11": [1.0]}, 0.0, "duration_s must be a positive number"),
        ({"A1_11": [1.0]}, math.inf, "duration_s must be a positive number"),
    ],
)
def test_invalid_input(trains, duration, message) -> None:
    with pytest.raises(InvalidArgument, match=message):
        compute_metrics(_table(trains), layout=L24, duration_s=duration)


def test_missing_column() -> None:
    with pytest.raises(InvalidArgument, match="time_s"):
        compute_metrics(pa.table({"electrode": ["A1_11"]}), layout=L24, duration_s=1.0)


def test_no_spikes_at_all() -> None:
    m = compute_metrics(_table({}), layout=L24, duration_s=5.0)
    assert m.bursts.num_rows == 0 and m.network_bursts.num_rows == 0
    assert pc.all(pc.equal(m.well_metrics["n_active_electrodes"], 0)).as_py()


# --- synchrony: STTC (Cutts & Eglen 2014) and cross-correlation area ------------


def _a(*x: float) -> np.ndarray:
    return np.array(x, dtype=np.float64)


def test_sttc_hand_case() -> None:
    # TA = TB = 2 * 1 s / 10 s = 0.2; PA = PB = 1/2 -> 0.3 / 0.9.
    a, b = _a(1.0, 5.0), _a(1.25, 8.0)
    assert tiling_fraction(a, dt_s=0.5, start_s=0.0, end_s=10.0) == pytest.approx(0.2)
    assert proportion_within(a, b, dt_s=0.5) == 0.5
    assert sttc(a, b, dt_s=0.5, start_s=0.0, end_s=10.0) == pytest.approx(1 / 3)
    assert sttc(b, a, dt_s=0.5, start_s=0.0, end_s=10.0) == pytest.approx(1 / 3)


def test_sttc_identical_and_anticorrelated() -> None:
    a = _a(1.0, 5.0)
    assert sttc(a, a, dt_s=0.5, start_s=0.0, end_s=10.0) == pytest.approx(1.0)
    # Alternating trains never within 0.25 s: PA = PB = 0, TA = 0.25, TB = 0.2.
    odd, even = _a(1, 3, 5, 7, 9), _a(2, 4, 6, 8)
    assert sttc(odd, even, dt_s=0.25, start_s=0.0, end_s=10.0) == pytest.approx(-0.225)


def test_sttc_edge_cases() -> None:
    assert math.isnan(sttc(_a(), _a(1.0), dt_s=0.5, start_s=0.0, end_s=10.0))
    assert math.isnan(sttc(_a(1.0), _a(), dt_s=0.5, start_s=0.0, end_s=10.0))
    # B = [5] with dt 5 tiles all of [0, 10] (TB = 1): PA*TB = 1 -> that term is 0.
    # TA: [-3, 7] clipped to [0, 7] = 0.7; PB = 1 -> second term 1; STTC 0.5.
    assert tiling_fraction(_a(5.0), dt_s=5.0, start_s=0.0, end_s=10.0) == 1.0
    assert sttc(_a(2.0), _a(5.0), dt_s=5.0, start_s=0.0, end_s=10.0) == pytest.approx(0.5)
    # Inclusive window: exactly dt apart counts (binary-exact values).
    assert proportion_within(_a(1.0), _a(1.5), dt_s=0.5) == 1.0
    assert proportion_within(_a(1.0), _a(1.5), dt_s=0.25) == 0.0
    with pytest.raises(InvalidArgument):
        sttc(_a(1.0), _a(1.0), dt_s=0.0, start_s=0.0, end_s=10.0)


def test_tiling_fraction_clipping_and_overlap() -> None:
    # [0, 0.6] + [9.45, 10] = 1.15 of 10 s.
    got = tiling_fraction(_a(0.1, 9.95), dt_s=0.5, start_s=0.0, end_s=10.0)
    assert got == pytest.approx(0.115)
    # Overlapping windows [0.5, 1.5] and [1, 2] count once: 1.5 s.
    assert tiling_fraction(_a(1.0, 1.5), dt_s=0.5, start_s=0.0, end_s=10.0) == pytest.approx(0.15)
    assert tiling_fraction(_a(), dt_s=0.5, start_s=0.0, end_s=10.0) == 0.0


def test_xcorr_area_hand_case() -> None:
    a, b = _a(1.0, 2.0, 3.0), _a(1.01, 2.5, 3.015)
    assert coincidences(a, b, window_s=0.02) == 2
    assert xcorr_area(a, b, window_s=0.02) == pytest.approx(2 / 3)
    assert xcorr_area(a, a, window_s=0.02) == pytest.approx(1.0)
    assert math.isnan(xcorr_area(a, _a(), window_s=0.02))


@pytest.mark.parametrize(("dt_s", "window_s"), [(0.02, 0.02), (0.005, 0.05)])
def test_pairwise_synchrony_equals_every_pair(dt_s: float, window_s: float) -> None:
    # Spikes on a 12.5 kHz sample grid, so that pairs exactly one window apart occur
    # and the inclusive edges are exercised; bursty trains give crowded windows.
    rng = np.random.default_rng(3)
    trains = []
    for i in range(11):
        n = 0 if i == 4 else int(rng.integers(1, 400))  # train 4 is empty
        t = rng.uniform(0.0, 20.0, n)
        if i % 3 == 0:  # a shared burst
            t = np.r_[t, 5.0 + rng.integers(0, 250, 60) / 12500.0]
        trains.append(np.unique(np.round(t * 12500.0) / 12500.0))
    times = np.concatenate(trains)
    owner = np.concatenate([np.full(len(t), i) for i, t in enumerate(trains)])
    order = np.argsort(times, kind="stable")
    coeff, area = pairwise_synchrony(
        times[order],
        owner[order],
        n_trains=len(trains),
        dt_s=dt_s,
        window_s=window_s,
        start_s=0.0,
        end_s=20.0,
        chunk_spikes=97,  # many chunks, windows straddling their borders
    )
    edge_pairs = 0
    for i, a in enumerate(trains):
        for j, b in enumerate(trains):
            if i == j:
                assert math.isnan(coeff[i, j]) and math.isnan(area[i, j])
                continue
            want_s = sttc(a, b, dt_s=dt_s, start_s=0.0, end_s=20.0)
            want_x = xcorr_area(a, b, window_s=window_s)
            assert coeff[i, j] == pytest.approx(want_s, rel=1e-12, abs=1e-12, nan_ok=True)
            assert area[i, j] == pytest.approx(want_x, rel=1e-12, nan_ok=True)
            edge_pairs += coincidences(a, b, window_s=window_s) - coincidences(
                a, b, window_s=window_s - 1e-9
            )
    assert edge_pairs > 0  # some pairs sit exactly on the window edge
    tiles = tiling_fractions(
        times[order], owner[order], n_trains=len(trains), dt_s=dt_s, start_s=0.0, end_s=20.0
    )
    want = [tiling_fraction(t, dt_s=dt_s, start_s=0.0, end_s=20.0) for t in trains]
    np.testing.assert_allclose(tiles, want, rtol=1e-12, atol=0)
    with pytest.raises(InvalidArgument):
        pairwise_synchrony(times, owner, n_trains=3, dt_s=0.02, window_s=0.02, start_s=0, end_s=20)


def test_well_synchrony_from_compute_metrics() -> None:
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = [1.01, 2.01, 3.5, 4.5, 5.5]
    m = compute_metrics(_table({"B2_11": a, "B2_22": b}), layout=L24, duration_s=10.0)
    w = _row(m.well_metrics, "well", "B2")
    # TA = TB = 5 * 0.04 / 10 = 0.02; PA = PB = 2/5.
    assert w["sttc"] == pytest.approx((0.4 - 0.02) / (1 - 0.4 * 0.02))
    assert w["sync_xcorr_area"] == pytest.approx(2 / 5)


# --- the real sample end to end -------------------------------------------------


def test_sample_end_to_end() -> None:
    sl = read_spike_list(SPIKES)
    pm = read_plate_map(EXPLOG, layout=sl.layout)
    assert sl.truncated
    duration_s = sl.analysis_duration_s  # the covered 57.7 s, not the declared 1082 s
    m = compute_metrics(sl.spikes, layout=sl.layout, duration_s=duration_s)

    # Independent tally with the csv module.
    with gzip.open(SPIKES, "rt", newline="") as fh:
        rows = [r for r in list(csv.reader(fh))[1:] if len(r) > 2 and r[2].strip()]
    per_electrode = Counter(r[3] for r in rows)
    last = max(float(r[2]) for r in rows)
    assert duration_s == pytest.approx(last)
    em = m.electrode_metrics
    for name in ("D3_21", "B2_11", "E7_34"):
        got = _row(em, "electrode", name)
        assert got["spike_count"] == per_electrode[name]
        assert got["mean_firing_rate_hz"] == pytest.approx(per_electrode[name] / last)
    n_active = Counter(e.split("_")[0] for e, n in per_electrode.items() if n / last * 60 >= 5.0)
    wm = m.well_metrics
    assert wm.num_rows == 48
    for well in sl.layout.wells:
        assert _row(wm, "well", well)["n_active_electrodes"] == n_active.get(well, 0)
    assert pc.sum(wm["spike_count"]).as_py() == len(rows)

    # Join with the plate map: every well has a condition.
    conditions = pm.to_table().select(["well", "condition", "timepoint"])
    joined = wm.join(conditions, "well")
    assert joined.num_rows == 48
    assert set(joined["condition"].to_pylist()) == {"unassigned", "untreated", "treatX", "treatY"}
    # The blank-treatment wells of the log are exactly the wells without a spike.
    blank = set(joined.filter(pc.equal(joined["condition"], "unassigned"))["well"].to_pylist())
    silent = set(wm.filter(pc.equal(wm["spike_count"], 0))["well"].to_pylist())
    assert blank <= silent
    # Silent wells (rows A and F in this plate) are flagged, never dropped.
    a1 = _row(wm, "well", "A1")
    assert a1["n_active_electrodes"] == 0 and "no_active_electrodes" in a1["qc_flags"].split(";")
    # Sanity of the figures: synchrony in range, percentages within [0, 100].
    sttc_vals = [v for v in wm["sttc"].to_pylist() if v is not None]
    assert sttc_vals and all(-1.0 <= v <= 1.0 for v in sttc_vals)
    pct = pc.drop_null(em["burst_percentage"]).to_numpy()
    assert pct.min() >= 0.0 and pct.max() <= 100.0


def test_speed_768_electrodes_one_million_spikes() -> None:
    layout = LAYOUTS[48]
    rng = np.random.default_rng(7)
    n, duration_s = 1_000_000, 600.0
    electrode_idx = rng.integers(0, layout.n_channels, n)
    t = np.sort(rng.uniform(0.0, duration_s, n))
    names = np.array(layout.electrodes, dtype=object)[electrode_idx]
    spikes = pa.table(
        {
            "electrode": pa.array(names, pa.string()),
            "well": pa.array(np.array(layout.wells)[electrode_idx // 16], pa.string()),
            "time_s": pa.array(t, pa.float64()),
            "amplitude_uv": pa.nulls(n, pa.float32()),
        }
    )
    t0 = time.perf_counter()
    m = compute_metrics(spikes, layout=layout, duration_s=duration_s)
    elapsed = time.perf_counter() - t0
    assert pc.sum(m.electrode_metrics["spike_count"]).as_py() == n
    assert elapsed < 15.0, f"compute_metrics took {elapsed:.1f} s"
