"""Search, the per-cell and per-plate pages, downloads and offline QC reports.

One lake built by real ingest (demo cells with a quarantined gain-error file, a real
pyABF sample, a synthetic 12-well plate): every answer is checked against SQL on the
catalog, the raw file (pyabf) or the plate's ground truth.
"""

from __future__ import annotations

import importlib
import io
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO_ROOT
from tests.test_dashboard import SampleLake, build_sample_lake
from transforms.serve import downloads, qc_report
from transforms.serve import pages as dashboard


@pytest.fixture(scope="module", autouse=True)
def _airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Airflow's DB prepared before the plugin imports Airflow (see tests/airflow_env)."""
    from tests.airflow_env import prepare

    return prepare(tmp_path_factory.mktemp("airflow"))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleLake:
    return build_sample_lake(tmp_path_factory.mktemp("pages"))


@pytest.fixture()
def con(sample: SampleLake):
    c = dashboard.open_catalog(str(sample.lake))
    assert c is not None
    yield c
    c.close()


@pytest.fixture(scope="module")
def client(sample: SampleLake):
    from fastapi.testclient import TestClient

    plugins = str(REPO_ROOT / "plugins")
    if plugins not in sys.path:
        sys.path.insert(0, plugins)
    app = importlib.import_module("neurocyte_plugin").create_app(
        str(sample.lake), require_auth=False
    )
    with TestClient(app) as c:
        yield c


def _cell(con: Any, cell_id: str) -> str:
    return str(
        con.execute(
            "SELECT file_id FROM icephys_recordings WHERE cell_id = ?", [cell_id]
        ).fetchone()[0]
    )


# --------------------------------------------------------------------------- search


def test_search_facets_count_the_files_matching_the_other_facets(sample: SampleLake, con) -> None:
    every = dashboard.search(con)
    assert every["n_results"] == len(sample.outcomes)
    facets = {f: {v["value"]: v["count"] for v in vs} for f, vs in every["facets"].items()}
    assert facets["qc_status"] == {"published": 6, "quarantined": 1}
    assert facets["kind"] == {"cell": 6, "plate": 1}
    ko = dashboard.search(con, filters={"condition": ["KO"]})
    assert ko["n_results"] > 0
    for r in ko["results"]:
        assert "KO" in r["condition"].split(",")
    # the plate (wells of both conditions) matches either condition
    assert any(r["kind"] == "plate" for r in ko["results"])
    # choosing a condition leaves the condition facet's alternatives visible
    ko_facets = {v["value"] for v in ko["facets"]["condition"]}
    assert {"KO", "WT"} <= ko_facets
    bad = dashboard.search(con, filters={"qc_status": ["quarantined"]})
    assert [r["file_name"] for r in bad["results"]] == ["WT-P14-c01-gain-error.abf"]
    assert dashboard.search(con, text="gain-ERROR")["n_results"] == 1
    (day,) = con.execute(
        "SELECT min(recorded_at)::DATE::VARCHAR FROM icephys_recordings"
    ).fetchone()
    assert dashboard.search(con, date_from="2999-01-01")["n_results"] == 0
    assert dashboard.search(con, date_from=day)["n_results"] >= 1
    with pytest.raises(Exception, match="unknown facet"):
        dashboard.search(con, filters={"drop table": ["x"]})


def test_search_endpoint_takes_repeated_facets(client) -> None:
    r = client.get("/api/search", params=[("condition", "KO"), ("kind", "cell")])
    assert r.status_code == 200
    rows = r.json()["results"]
    assert rows and all(x["kind"] == "cell" and x["condition"] == "KO" for x in rows)


# --------------------------------------------------------------------------- cell page


def test_cell_page_has_metadata_qc_features_with_units_and_sweeps(sample: SampleLake, con) -> None:
    fid = _cell(con, "KO-P21-c01")
    page = dashboard.cell_page(con, fid, lake=str(sample.lake))
    assert page["recording"]["cell_id"] == "KO-P21-c01" and "source_path" not in page["recording"]
    assert page["qc"]["status"] == "published"
    features = {(f["analysis"], f["feature"]): f for f in page["features"]}
    (rheo,) = con.execute(
        "SELECT rheobase_pa FROM icephys_cell_features "
        "WHERE file_id = ? AND analysis = 'long_square'",
        [fid],
    ).fetchone()
    assert features[("long_square", "rheobase_pa")]["value"] == pytest.approx(rheo)
    assert features[("long_square", "rheobase_pa")]["unit"] == "pA"
    assert features[("long_square", "tau_ms")]["unit"] == "ms"
    assert features[("long_square", "input_resistance_mohm")]["unit"] == "MΩ"
    (n_sweeps,) = con.execute(
        "SELECT count(*) FROM icephys_sweeps WHERE file_id = ?", [fid]
    ).fetchone()
    assert len(page["sweeps"]) == n_sweeps
    assert page["fi"]["file_id"] == fid


def test_sweep_detail_reads_response_and_stimulus_from_the_raw_file(
    sample: SampleLake, con
) -> None:
    import pyabf

    fid = _cell(con, "KO-P21-c01")
    sweep, amp, n_spikes = con.execute(
        "SELECT sweep_number, stim_amp_pa, spike_count FROM icephys_sweeps WHERE file_id = ? "
        "ORDER BY spike_count DESC LIMIT 1",
        [fid],
    ).fetchone()
    out = dashboard.sweep_detail(con, fid, sweep, lake=str(sample.lake))
    abf = pyabf.ABF(str(sample.landing / "demo-lab" / "KO" / "P21" / "KO-P21-c01.abf"))
    abf.setSweep(sweep)
    stim = out["stimulus"]
    assert stim is not None and stim["unit"] == "pA"
    assert max(stim["y"]) == pytest.approx(float(abf.sweepC.max()), abs=1e-3)
    # the step, relative to the holding level, is the stored amplitude
    hold = float(np.median(abf.sweepC[: len(abf.sweepC) // 20]))
    assert max(stim["y"]) - hold == pytest.approx(amp, abs=0.5)
    assert len(out["spikes"]["peak_t_s"]) == n_spikes > 0
    waves = out["waveforms"]
    assert 0 < len(waves["y"]) <= n_spikes
    assert all(len(w) == len(waves["t_ms"]) for w in waves["y"])
    # each waveform holds its spike's peak
    peaks = sorted(out["spikes"]["peak_v_mv"])
    assert max(max(w) for w in waves["y"]) == pytest.approx(peaks[-1], abs=2.0)


# --------------------------------------------------------------------------- plate page


def test_plate_page_map_by_div_and_network_bursts(sample: SampleLake, con, client) -> None:
    fid = dashboard.plates(con)["plates"][0]["file_id"]
    page = client.get(f"/api/plates/{fid}").json()
    wells = {w["well"]: w for w in page["wells"]}
    assert set(wells) == set(sample.plate.condition)
    assert all(wells[w]["condition"] == c for w, c in sample.plate.condition.items())
    assert page["rows"] == ["A", "B", "C"] and page["cols"] == [1, 2, 3, 4]
    div = client.get(f"/api/plates/{fid}/by-div", params={"metric": "mean_firing_rate_hz"}).json()
    assert div["timepoints"] == ["DIV14"]
    truth = dict(
        con.execute(
            "SELECT well, mean_firing_rate_hz FROM mea_well_metrics WHERE file_id = ?", [fid]
        ).fetchall()
    )
    assert {w["well"]: w["value"][0] for w in div["wells"]} == pytest.approx(truth)
    nb = client.get(f"/api/plates/{fid}/network-bursts").json()["bursts"]
    (n_nb,) = con.execute(
        "SELECT count(*) FROM mea_network_bursts WHERE file_id = ?", [fid]
    ).fetchone()
    assert len(nb) == n_nb
    win = client.get(f"/api/plates/{fid}/network-bursts", params={"start_s": 1, "stop_s": 2})
    assert all(b["end_s"] >= 1 and b["start_s"] <= 2 for b in win.json()["bursts"])


# --------------------------------------------------------------------------- downloads


def test_downloads_stream_a_filtered_view_in_batches(sample: SampleLake, con, client) -> None:
    fid = dashboard.plates(con)["plates"][0]["file_id"]
    (n,) = con.execute("SELECT count(*) FROM mea_spikes WHERE file_id = ?", [fid]).fetchone()
    chunks = list(
        downloads.stream(con, "mea_spikes", {"file_id": [fid]}, fmt="csv", batch_rows=500)
    )
    assert len(chunks) >= n // 500  # one chunk per batch, not one blob
    table = pacsv.read_csv(io.BytesIO(b"".join(chunks)))
    assert table.num_rows == n and "source_path" not in table.column_names
    parts = list(
        downloads.stream(con, "mea_spikes", {"file_id": [fid]}, fmt="parquet", batch_rows=500)
    )
    assert len(parts) > 2
    pt = pq.read_table(pa.BufferReader(b"".join(parts)))
    assert pt.num_rows == n
    assert pq.ParquetFile(pa.BufferReader(b"".join(parts))).num_row_groups >= n // 500
    # over HTTP, filtered by a facet
    r = client.get("/api/download/icephys_sweeps.parquet", params={"condition": "KO"})
    assert r.status_code == 200
    got = pq.read_table(pa.BufferReader(r.content))
    (n_ko,) = con.execute("SELECT count(*) FROM icephys_sweeps WHERE condition = 'KO'").fetchone()
    assert got.num_rows == n_ko and set(got.column("condition").to_pylist()) == {"KO"}
    r = client.get("/api/download/mea_well_metrics.csv", params={"file_id": fid})
    assert r.status_code == 200 and r.text.count("\n") == 13  # header + 12 wells
    assert client.get("/api/download/secrets.csv").status_code == 400
    assert client.get("/api/download/mea_spikes.csv", params={"subject": "x"}).status_code == 400


def test_nwb_and_original_downloads(sample: SampleLake, con, client, tmp_path: Path) -> None:
    from nwbinspector import Importance, inspect_nwbfile

    from transforms.lake.storage import sha256

    fid = _cell(con, "KO-P21-c01")
    r = client.get(f"/api/download/original/{fid}")
    assert r.status_code == 200
    out = tmp_path / "orig.abf"
    out.write_bytes(r.content)
    assert sha256(out) == fid
    r = client.get(f"/api/download/nwb/{fid}")
    assert r.status_code == 200
    nwb = tmp_path / "cell.nwb"
    nwb.write_bytes(r.content)
    critical = [
        m for m in inspect_nwbfile(nwbfile_path=str(nwb)) if m.importance == Importance.CRITICAL
    ]
    assert critical == []


# --------------------------------------------------------------------------- QC reports


def test_qc_report_names_the_file_and_its_failed_expectations_offline(
    sample: SampleLake, con, client
) -> None:
    bad = sample.outcomes["WT-P14-c01-gain-error.abf"]
    html = qc_report.file_report(con, bad.file_id, lake=str(sample.lake))
    assert "WT-P14-c01-gain-error.abf" in html
    section = html.split("data-table='icephys_sweeps'", 1)[1]
    assert "failed" in section and "v_baseline_mv" in section
    # examples of this file's unexpected values (a gain error: far below -120 mV)
    examples = re.findall(r"e\.g\. <code>\[([^\]]*)\]", section)
    assert examples and all(float(v) < -120 for v in examples[0].split(","))
    # nothing from the network: no script, no external URL
    assert "<script" not in html and "http://" not in html and "https://" not in html
    index = client.get("/qc-report/")
    assert index.status_code == 200
    batches = {
        b
        for (b,) in con.execute(
            "SELECT DISTINCT batch_id FROM ingest_log WHERE batch_id IS NOT NULL"
        ).fetchall()
    }
    assert batches and all(f"data-batch='{b}'" in index.text for b in batches)
    page = client.get(f"/qc-report/{bad.file_id}")
    assert page.status_code == 200 and "gain-error" in page.text


def test_cli_prints_an_offline_qc_report_index_naming_every_file(
    sample: SampleLake, con, capsys: pytest.CaptureFixture[str]
) -> None:
    """What ``neurocyte publish`` prints is the project's own static report index (the
    GX Data Docs index it used to print needs CDNs and lists nothing offline): every
    attempted file by name, each linking to a page beside it that names the file."""
    from transforms.cli import main

    assert main(["publish", "--lake", str(sample.lake)]) == 0
    printed = capsys.readouterr().out
    (line,) = [x for x in printed.splitlines() if x.startswith("QC reports: ")]
    index = Path(line.removeprefix("QC reports: "))
    assert index == sample.lake / "qc" / "reports" / "index.html" and index.is_file()
    html = index.read_text()
    assert "<style>" in html and "<script" not in html and "http" not in html
    attempts = con.execute(
        "SELECT DISTINCT file_id, file_name FROM ingest_log WHERE status <> 'duplicate'"
    ).fetchall()
    assert len(attempts) >= 6
    for file_id, file_name in attempts:
        assert f"href='{file_id}.html'>{file_name}</a>" in html
        page = (index.parent / f"{file_id}.html").read_text()
        assert f"<b id='file-name'>{file_name}</b>" in page
        assert "href='index.html'" in page and "http" not in page
    bad = sample.outcomes["WT-P14-c01-gain-error.abf"]
    assert "v_baseline_mv" in (index.parent / f"{bad.file_id}.html").read_text()
    # a second publish rewrites no page whose attempt is unchanged
    before = {p.name: p.stat().st_mtime_ns for p in index.parent.glob("*.html")}
    assert main(["publish", "--lake", str(sample.lake)]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in index.parent.glob("*.html")}
    assert {k: v for k, v in after.items() if k != "index.html"} == {
        k: v for k, v in before.items() if k != "index.html"
    }


def test_raw_window_as_nwb_has_its_time_base_and_units(
    sample: SampleLake, con, client, tmp_path: Path
) -> None:
    import h5py

    from transforms.serve.raw import fetch_snippet

    fid = dashboard.plates(con)["plates"][0]["file_id"]
    params = {"well": "B2", "start_s": 1.0, "stop_s": 1.5, "format": "nwb"}
    r = client.get(f"/api/raw/{fid}", params=params)
    assert r.status_code == 200, r.text
    out = tmp_path / "w.nwb"
    out.write_bytes(r.content)
    expected = fetch_snippet(fid, lake=str(sample.lake), well="B2", start_s=1.0, stop_s=1.5)
    with h5py.File(out, "r") as f:
        (name,) = list(f["acquisition"])
        series = f["acquisition"][name]
        data = series["data"]
        assert data.shape == expected.data.shape
        assert series["starting_time"][()] == pytest.approx(expected.start_s, abs=1e-6)
        assert series["starting_time"].attrs["rate"] == pytest.approx(expected.sampling_rate_hz)
        assert data.attrs["unit"] in ("volts", "V")
