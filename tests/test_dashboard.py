"""The Neurocyte page's queries and JSON API against a catalog built by real ingest.

The lake holds demo patch-clamp cells (WT/KO at P14/P21, plus the demo's gain-error
file that QC quarantines), a real pyABF sample and a synthetic 12-well MEA plate
with known spikes. Expected values come from independent sources: the demo
protocol, pyabf reading the raw file, the plate's ground truth, numpy.
"""

from __future__ import annotations

import importlib
import io
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from tests.conftest import ABF_DIR, REPO_ROOT
from transforms.errors import SpecError
from transforms.serve import pages as dashboard

#: the plugin imports Airflow: its DB is prepared first (tests/conftest.airflow_db)
pytestmark = pytest.mark.usefixtures("airflow_db")

DEMO_LEVELS_PA = [-110.0 + 30.0 * k for k in range(12)]
REAL_ABF = "171116sh_0018.abf"


@dataclass(frozen=True)
class SampleLake:
    root: Path
    lake: Path
    landing: Path
    outcomes: dict[str, Any]
    plate: Any


def build_sample_lake(root: Path, *, plate_wells: int = 12, plate_s: float = 4.0) -> SampleLake:
    """Ingest demo ABFs, one real ABF and a synthetic MEA plate into ``root/lake``."""
    from transforms.pipeline import ingest_paths
    from transforms.synth.demo import generate_demo
    from transforms.synth.plate import generate_plate

    landing, lake = root / "landing", root / "lake"
    generate_demo(landing, cells_per_group=1)
    dest = landing / "labA" / "WT" / "P14" / REAL_ABF
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ABF_DIR / REAL_ABF, dest)
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    outcomes = {o.file_name: o for o in summary.outcomes}
    plate = generate_plate(
        root / "plate", n_wells=plate_wells, duration_s=plate_s, seed=5, write_spk=False
    )
    mea = ingest_paths(
        [plate.raw_path],
        lake=str(lake),
        lab="labM",
        timepoint="DIV14",
        plate_map=plate.plate_map_path,
    )
    outcomes.update({o.file_name: o for o in mea.outcomes})
    return SampleLake(root, lake, landing, outcomes, plate)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleLake:
    return build_sample_lake(tmp_path_factory.mktemp("dash"))


@pytest.fixture()
def con(sample: SampleLake):
    c = dashboard.open_catalog(str(sample.lake))
    assert c is not None
    yield c
    c.close()


def test_sample_lake_is_as_expected(sample: SampleLake) -> None:
    status = {name: o.status for name, o in sample.outcomes.items()}
    assert status["WT-P14-c01-gain-error.abf"] == "quarantined", status
    assert status[REAL_ABF] == "published", sample.outcomes[REAL_ABF].reason
    assert status["synth.raw"] == "published", sample.outcomes["synth.raw"].reason
    assert sum(s == "published" for s in status.values()) == 6


def test_overview_counts_files_per_partition_and_status(sample: SampleLake, con) -> None:
    out = dashboard.overview(con)
    assert out["available"]
    expected: dict[str, int] = {}
    for o in sample.outcomes.values():
        expected[o.status] = expected.get(o.status, 0) + 1
    assert out["totals"] == expected
    by_key = {
        (r["lab"], r["condition"], r["timepoint"], r["status"]): r["n_files"] for r in out["status"]
    }
    assert by_key[("demo-lab", "WT", "P14", "quarantined")] == 1
    assert by_key[("demo-lab", "KO", "P21", "published")] == 1
    rec = {(r["lab"], r["condition"], r["timepoint"]): r for r in out["recordings"]}
    assert rec[("labA", "WT", "P14")]["n_cells"] == 1
    # the plate's wells are counted under their own (plate-map) condition
    conds = sorted(set(sample.plate.condition.values()))
    assert sum(rec[("labM", c, "DIV14")]["n_wells"] for c in conds) == 12
    assert all(rec[("labM", c, "DIV14")]["n_plates"] == 1 for c in conds)
    json.dumps(out, allow_nan=False)


def test_problems_link_the_failed_expectations_page(sample: SampleLake, con) -> None:
    out = dashboard.problems(con, lake=str(sample.lake))
    files = {f["file_name"]: f for f in out["files"]}
    assert set(files) == {
        n for n, o in sample.outcomes.items() if o.status in ("quarantined", "failed")
    }
    bad = files["WT-P14-c01-gain-error.abf"]
    assert bad["status"] == "quarantined" and "v_baseline_mv" in bad["reason"]
    docs = {d["table"]: d for d in bad["docs"]}
    assert docs["icephys_sweeps"]["success"] is False
    assert docs["icephys_recordings"]["success"] is True
    assert "expect_column_values_to_be_between" in docs["icephys_sweeps"]["failed_expectations"]
    page = sample.lake / "qc" / "docs" / docs["icephys_sweeps"]["path"]
    html = page.read_text(encoding="utf-8")
    assert "v_baseline_mv" in html and "Unsuccessful" in html


def test_fi_curves_follow_the_demo_protocol(sample: SampleLake, con) -> None:
    out = dashboard.fi_curves(con)
    curves = {c["cell_id"]: c for c in out["curves"]}
    demo = {k: v for k, v in curves.items() if v["lab"] == "demo-lab"}
    assert sorted(demo) == ["KO-P14-c01", "KO-P21-c01", "WT-P14-c01", "WT-P21-c01"]
    for c in demo.values():
        assert c["stim_amp_pa"] == pytest.approx(DEMO_LEVELS_PA)
        assert c["spike_count"][0] == 0  # hyperpolarising step
        assert c["spike_count"][-1] > 0
    # the demo's KO cells are hyperexcitable: more spikes at the top step
    for tp in ("P14", "P21"):
        assert demo[f"KO-{tp}-c01"]["spike_count"][-1] > demo[f"WT-{tp}-c01"]["spike_count"][-1]
    one = dashboard.fi_curves(con, file_id=demo["WT-P14-c01"]["file_id"])
    assert [c["cell_id"] for c in one["curves"]] == ["WT-P14-c01"]


def test_sweep_trace_is_read_from_the_raw_file(sample: SampleLake, con) -> None:
    import pyabf

    cell = next(c for c in dashboard.cells(con)["cells"] if c["cell_id"] == "KO-P21-c01")
    picks = dashboard.example_sweep_numbers(con, cell["file_id"])
    assert [p["role"] for p in picks] == ["most hyperpolarising", "rheobase", "most spikes"]
    assert picks[0]["stim_amp_pa"] == pytest.approx(-110.0)
    sweep = picks[-1]["sweep_number"]
    trace = dashboard.sweep_trace(con, cell["file_id"], sweep, lake=str(sample.lake))
    abf = pyabf.ABF(str(sample.landing / "demo-lab" / "KO" / "P21" / "KO-P21-c01.abf"))
    abf.setSweep(sweep)
    assert trace["n_samples"] == len(abf.sweepY)
    assert len(trace["y"]) <= dashboard.TRACE_MAX_POINTS
    # the min/max envelope keeps the extremes exactly
    assert max(trace["y"]) == pytest.approx(float(abf.sweepY.max()), abs=1e-3)
    assert min(trace["y"]) == pytest.approx(float(abf.sweepY.min()), abs=1e-3)
    spikes = trace["spikes"]
    assert spikes["available"] and len(spikes["peak_t_s"]) == picks[-1]["spike_count"] > 0
    for t, v in zip(spikes["peak_t_s"], spikes["peak_v_mv"], strict=True):
        k = round(t * abf.sampleRate)
        assert abs(float(abf.sweepY[k]) - v) < 2.0  # the peak is where the trace peaks
    assert trace["verification"] == "fingerprint"  # unchanged since staged


def test_raster_and_heatmap_match_the_plate_ground_truth(sample: SampleLake, con) -> None:
    plates = dashboard.plates(con)["plates"]
    assert len(plates) == 1 and plates[0]["n_wells"] == 12
    fid = plates[0]["file_id"]
    heat = dashboard.well_heatmap(con, fid)
    assert heat["rows"] == ["A", "B", "C"] and heat["cols"] == [1, 2, 3, 4]
    plate = sample.plate
    for i, r in enumerate(heat["rows"]):
        for j, c in enumerate(heat["cols"]):
            well = f"{r}{c}"
            assert heat["conditions"][i][j] == plate.condition[well]
            truth = [t for e, t in plate.spike_times_s.items() if e.startswith(well + "_")]
            if plate.well_kind[well] == "silent":
                assert heat["z"][i][j] == pytest.approx(0.0, abs=0.05)
            else:
                assert heat["z"][i][j] > 0
            assert sum(len(t) for t in truth) == 0 or heat["z"][i][j] > 0
    busy = max(
        (w for w in plate.condition if plate.well_kind[w] != "silent"),
        key=lambda w: sum(len(t) for e, t in plate.spike_times_s.items() if e.startswith(w + "_")),
    )
    ras = dashboard.raster(con, fid, well=busy)
    n_true = sum(len(t) for e, t in plate.spike_times_s.items() if e.startswith(busy + "_"))
    assert ras["n_spikes"] == pytest.approx(n_true, rel=0.05)
    assert all(e.startswith(busy + "_") for e in ras["electrodes"])
    assert len(ras["time_s"]) == len(ras["electrode_index"]) == len(ras["count"])


def test_raster_decimates_the_whole_recording_never_the_first_spikes(sample: SampleLake, con):
    fid = dashboard.plates(con)["plates"][0]["file_id"]
    full = dashboard.raster(con, fid)
    (total, last, duration), *_ = con.execute(
        "SELECT count(*), max(s.time_s), any_value(r.duration_s) FROM mea_spikes s "
        "JOIN mea_recordings r USING (file_id, well) WHERE file_id = ?",
        [fid],
    ).fetchall()
    assert full["n_spikes"] == total and not full["decimated"]
    assert full["count"] == [1] * total
    cap = 3 * len(full["electrodes"])
    assert total > cap
    small = dashboard.raster(con, fid, max_marks=cap)
    assert small["decimated"] and small["n_marks"] <= cap
    # every spike is accounted for, and the marks span the whole recording
    assert sum(small["count"]) == small["n_spikes"] == total
    assert small["stop_s"] == pytest.approx(duration)
    assert max(small["time_s"]) > last - 2 * small["bin_s"]
    assert min(small["time_s"]) < min(full["time_s"]) + 2 * small["bin_s"]
    # per electrode, the binned counts are the spikes of that electrode
    per_e: dict[str, int] = {}
    for i, n in zip(small["electrode_index"], small["count"], strict=True):
        per_e[small["electrodes"][i]] = per_e.get(small["electrodes"][i], 0) + n
    truth = dict(
        con.execute(
            "SELECT electrode, count(*) FROM mea_spikes WHERE file_id = ? GROUP BY 1", [fid]
        ).fetchall()
    )
    assert per_e == truth
    # a window holds only its spikes
    win = dashboard.raster(con, fid, start_s=1.0, stop_s=2.0)
    assert all(1.0 <= t <= 2.0 for t in win["time_s"])
    (in_win,) = con.execute(
        "SELECT count(*) FROM mea_spikes WHERE file_id = ? AND time_s BETWEEN 1 AND 2", [fid]
    ).fetchone()
    assert win["n_spikes"] == in_win
    # electrodes in plate order: A1's before A2's before B1's
    wells = list(full["wells"])
    assert wells == sorted(wells, key=lambda w: (w[0], int(w[1:])))


def test_trajectory_is_mean_and_sd_by_condition_and_timepoint(con) -> None:
    keys = {m["key"] for m in dashboard.metrics(con)["metrics"]}
    assert {"max_avg_rate_hz", "rheobase_pa", "mean_firing_rate_hz"} <= keys
    out = dashboard.trajectory(con, "max_avg_rate_hz")
    per_cell: dict[tuple[str, str], list[float]] = {}
    for c in dashboard.fi_curves(con)["curves"]:
        rates = [r for r in c["avg_rate_hz"] if r is not None]
        per_cell.setdefault((c["condition"], c["timepoint"]), []).append(max(rates))
    assert out["timepoints"] == ["P14", "P21"]
    for s in out["series"]:
        for tp, mean, sd, n in zip(s["timepoint"], s["mean"], s["sd"], s["n"], strict=True):
            values = np.array(per_cell[(s["condition"], tp)])
            assert n == len(values)
            assert mean == pytest.approx(values.mean())
            if n > 1:
                assert sd == pytest.approx(values.std(ddof=1))
            else:
                assert sd is None
    wells = dashboard.trajectory(con, "mean_firing_rate_hz")
    assert wells["timepoints"] == ["DIV14"] and sum(s["n"][0] for s in wells["series"]) == 12
    for s in out["series"] + wells["series"]:
        for n, sd, sem, pts in zip(s["n"], s["sd"], s["sem"], s["points"], strict=True):
            assert len(pts) == n
            assert sem is None if sd is None else sem == pytest.approx(sd / np.sqrt(n))
    with pytest.raises(SpecError, match="unknown metric"):
        dashboard.trajectory(con, "rheobase_pa; DROP VIEW ingest_log")


def test_group_view_has_the_numbers_of_well_metrics_by_condition(con) -> None:
    """The chart's numbers are the SQL view's: n, mean and SD per lab x condition x
    timepoint (WMFR over wells with an active electrode, as the view defines it)."""
    rows = con.execute(
        "SELECT lab, condition, timepoint, n_wells, n_active_wells, wmfr_hz_mean, wmfr_hz_sd, "
        "mfr_hz_mean, nb_frequency_hz_mean, sttc_mean FROM well_metrics_by_condition"
    ).fetchall()
    assert rows
    # the sample plate has silent wells, so the active-well rule matters
    assert any(r[3] > r[4] for r in rows)
    checks = {
        "weighted_mean_firing_rate_hz": (5, 6, 4),
        "mean_firing_rate_hz": (7, None, 3),
        "nb_frequency_hz": (8, None, 4),
    }
    for lab in {r[0] for r in rows}:
        for metric, (mean_i, sd_i, n_i) in checks.items():
            view = dashboard.trajectory(con, metric, lab=lab)
            got = {
                (s["condition"], tp): (mean, sd, n)
                for s in view["series"]
                for tp, mean, sd, n in zip(s["timepoint"], s["mean"], s["sd"], s["n"], strict=True)
            }
            for r in rows:
                if r[0] != lab or r[n_i] == 0:
                    continue
                mean, sd, n = got[(r[1], r[2])]
                assert n == r[n_i], (metric, r)
                assert mean == pytest.approx(r[mean_i], rel=1e-9, abs=1e-12), (metric, r)
                if sd_i is not None and r[sd_i] is not None:
                    assert sd == pytest.approx(r[sd_i], rel=1e-9, abs=1e-12), (metric, r)


def test_fi_curves_carry_sweep_qc_as_sql_has_it(con) -> None:
    out = dashboard.fi_curves(con)
    sql = {
        (f, sw): (ok, why)
        for f, sw, ok, why in con.execute(
            "SELECT file_id, sweep_number, qc_pass, qc_reasons FROM icephys_sweeps "
            "WHERE stimulus_kind = 'long_square' AND stim_amp_pa IS NOT NULL"
        ).fetchall()
    }
    got = {
        (c["file_id"], sw): (ok, why)
        for c in out["curves"]
        for sw, ok, why in zip(c["sweep_number"], c["qc_pass"], c["qc_reasons"], strict=True)
    }
    assert got == sql


def test_missing_views_say_no_data_instead_of_failing() -> None:
    con = duckdb.connect()  # a real, empty DuckDB catalog
    try:
        assert dashboard.overview(con)["available"] is False
        assert dashboard.problems(con)["files"] == []
        assert dashboard.fi_curves(con)["curves"] == []
        assert dashboard.plates(con)["available"] is False
        fid = "0" * 64
        assert dashboard.raster(con, fid)["time_s"] == []
        assert dashboard.well_heatmap(con, fid)["z"] == []
        assert dashboard.metrics(con)["metrics"] == []
        t = dashboard.trajectory(con, "rheobase_pa")
        assert t["available"] is False and "icephys_cell_features" in t["message"]
    finally:
        con.close()


def test_timepoints_sort_naturally() -> None:
    assert sorted(["P21", "P7", "P14"], key=dashboard.timepoint_key) == ["P7", "P14", "P21"]
    assert sorted(["DIV14", "DIV3", "baseline"], key=dashboard.timepoint_key) == [
        "DIV3",
        "DIV14",
        "baseline",
    ]


# --------------------------------------------------------------------------- the API


def _plugin_module():
    plugins = str(REPO_ROOT / "plugins")
    if plugins not in sys.path:
        sys.path.insert(0, plugins)
    return importlib.import_module("neurocyte_plugin")


@pytest.fixture(scope="module")
def client(sample: SampleLake):
    from fastapi.testclient import TestClient

    app = _plugin_module().create_app(str(sample.lake), require_auth=False)
    with TestClient(app) as c:
        yield c


def test_api_endpoints_return_the_query_results(sample: SampleLake, client) -> None:
    overview = client.get("/api/overview").json()
    assert overview["lake"] == str(sample.lake.resolve())
    assert overview["totals"]["quarantined"] == 1
    problems = client.get("/api/problems").json()
    bad = next(f for f in problems["files"] if f["file_name"] == "WT-P14-c01-gain-error.abf")
    page = next(d["path"] for d in bad["docs"] if d["table"] == "icephys_sweeps")
    docs = client.get(f"/qc-docs/{page}")
    assert docs.status_code == 200 and "v_baseline_mv" in docs.text
    assert client.get("/qc-docs/index.html").status_code == 200
    assert client.get("/qc-docs/%2e%2e/catalog.duckdb").status_code == 404
    cells = client.get("/api/cells").json()["cells"]
    fid = next(c["file_id"] for c in cells if c["cell_id"] == "WT-P21-c01")
    sweeps = client.get(f"/api/cells/{fid}/sweeps").json()
    assert sweeps["sweeps"][0]["role"] == "most hyperpolarising"
    assert all(len(s["t_s"]) == len(s["y"]) > 100 for s in sweeps["sweeps"])
    plate = client.get("/api/plates").json()["plates"][0]["file_id"]
    heat = client.get(f"/api/plates/{plate}/heatmap").json()
    assert len(heat["z"]) == 3
    assert client.get(f"/api/plates/{plate}/raster", params={"well": "A1"}).status_code == 200
    traj = client.get("/api/trajectory/rheobase_pa").json()
    assert {s["condition"] for s in traj["series"]} == {"WT", "KO"}
    html = client.get("/")
    assert html.status_code == 200 and "vendor/plotly.min.js" in html.text
    js = client.get("/vendor/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/..%2Fneurocyte_plugin.py").status_code == 404


def test_api_errors_are_clear(client) -> None:
    r = client.get("/api/trajectory/nope")
    assert r.status_code == 400 and "unknown metric" in r.json()["detail"]
    r = client.get("/api/plates/not-a-sha/heatmap")
    assert r.status_code == 400 and "file_id" in r.json()["detail"]
    r = client.get(f"/api/raw/{'a' * 64}", params={"start_s": 0, "stop_s": 1})
    assert r.status_code == 404 and "no published recording" in r.json()["detail"]


def test_api_raw_window_as_npy_and_json(sample: SampleLake, client) -> None:
    from transforms.serve.raw import fetch_snippet

    plate = client.get("/api/plates").json()["plates"][0]["file_id"]
    params = {"well": "B2", "start_s": 1.0, "stop_s": 3.0, "format": "npy"}
    r = client.get(f"/api/raw/{plate}", params=params)
    assert r.status_code == 200
    data = np.load(io.BytesIO(r.content))
    meta = json.loads(r.headers["X-Neurocyte-Snippet"])
    expected = fetch_snippet(plate, lake=str(sample.lake), well="B2", start_s=1.0, stop_s=3.0)
    np.testing.assert_array_equal(data, expected.data)
    assert data.shape == (25000, 64) and meta["channels"][0].startswith("B2_")
    assert "source_path" not in meta
    j = client.get(f"/api/raw/{plate}", params={**params, "format": "json", "max_points": 500})
    traces = j.json()["traces"]
    assert len(traces) == 64 and all(len(t["y"]) <= 500 for t in traces)
    assert max(traces[0]["y"]) == pytest.approx(float(expected.data[:, 0].max()))


def test_api_requires_an_airflow_user_when_guarded(sample: SampleLake) -> None:
    from fastapi.testclient import TestClient

    app = _plugin_module().create_app(str(sample.lake))
    with TestClient(app) as c:
        assert c.get("/api/overview").status_code == 401
        assert c.get("/qc-docs/index.html").status_code == 401
        assert c.get("/").status_code == 200  # the HTML shell holds no data


def test_page_reads_the_catalog_publishing_wrote(tmp_path: Path, monkeypatch) -> None:
    """With NEUROCYTE_CATALOG set, the page and the plugin open the catalog that
    publishing wrote there, not a missing or stale <lake>/catalog.duckdb."""
    from fastapi.testclient import TestClient

    from transforms import spec
    from transforms.pipeline import ingest_paths

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    dest = landing / "labA" / "WT" / "P14" / REAL_ABF
    dest.parent.mkdir(parents=True)
    shutil.copyfile(ABF_DIR / REAL_ABF, dest)
    catalog = tmp_path / "elsewhere" / "neurocyte.duckdb"
    monkeypatch.setenv(spec.ENV_CATALOG, str(catalog))
    ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert catalog.is_file() and not (lake / spec.CATALOG_FILE).exists()
    con = dashboard.open_catalog(str(lake))
    assert con is not None
    try:
        assert [c["cell_id"] for c in dashboard.cells(con)["cells"]] == [dest.stem]
    finally:
        con.close()
    app = _plugin_module().create_app(str(lake), require_auth=False)
    with TestClient(app) as client:
        assert [c["cell_id"] for c in client.get("/api/cells").json()["cells"]] == [dest.stem]
