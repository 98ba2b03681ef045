"""Axion Neural Metric Tool exports: every layout variant the project generates, the
``mea_vendor_metrics`` table and the ``mea_metric_parity`` view, end to end through
ingest_paths (real Delta, GX and DuckDB)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tests.axis_text import AXIS3_SETTINGS, spike_list_bytes, spikes_on
from tests.helpers import query
from transforms import spec
from transforms.errors import DecodeError, UnsupportedRecording
from transforms.formats import kind_of, read_vendor_metrics
from transforms.formats.axis_neural_metrics import split_unit
from transforms.pipeline import ingest_paths
from transforms.synth.nmt import activity_metrics, neural_metrics_bytes

WELLS = ("A1", "A2", "B1", "B2")
ELECTRODES = tuple(f"{w}_{c}{r}" for w in WELLS for c in (1, 2, 3, 4) for r in (1, 2, 3, 4))
DURATION_S = 10.0  # AXIS3_SETTINGS' analysed section: 0 s to 10 s


def _spikes() -> list[tuple[float, str, float]]:
    # B2 stays silent; A2 has few spikes on few electrodes (some inactive)
    busy = [e for e in ELECTRODES if e.startswith(("A1", "B1"))]
    return sorted(
        spikes_on(busy, n=900, duration_s=DURATION_S, seed=1)
        + spikes_on(["A2_11", "A2_12", "A2_44"], n=25, duration_s=DURATION_S, seed=2)
    )


def _metrics() -> tuple[dict, dict]:
    return activity_metrics(
        [e for _, e, _ in _spikes()], electrodes=ELECTRODES, duration_s=DURATION_S
    )


VARIANTS = [
    pytest.param({"blocks": "wells", "delimiter": ","}, id="wells-comma"),
    pytest.param({"blocks": "wells", "delimiter": "\t", "measurement_title": True}, id="wells-tab"),
    pytest.param({"blocks": "wells", "delimiter": ";"}, id="wells-semicolon-decimal-comma"),
    pytest.param({"blocks": "electrodes", "delimiter": ","}, id="electrodes-comma"),
    pytest.param(
        {"blocks": "electrodes", "delimiter": "\t", "electrode_separator": " "},
        id="electrodes-tab-spaced-names",
    ),
    pytest.param({"blocks": "both", "delimiter": ",", "bom": True}, id="both-comma-bom"),
    pytest.param({"blocks": "both", "delimiter": "\t", "newline": "\n"}, id="both-tab-lf"),
    pytest.param({"blocks": "wells", "delimiter": ",", "categories": False}, id="no-categories"),
    pytest.param({"blocks": "wells", "delimiter": ",", "gz": True}, id="gzipped"),
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_layout_reads_the_written_values(tmp_path: Path, variant: dict) -> None:
    wells, electrodes = _metrics()
    name = "plate_neuralMetrics.csv" + (".gz" if variant.get("gz") else "")
    path = tmp_path / name
    path.write_bytes(
        neural_metrics_bytes(
            wells,
            electrode_values=electrodes,
            recording_settings=AXIS3_SETTINGS,
            treatments={"A1": "WT", "A2": "WT", "B1": "KO", "B2": "KO"},
            **variant,
        )
    )
    assert kind_of(path) == "neural_metrics"
    nm = read_vendor_metrics(path)
    blocks = variant["blocks"]
    expected: dict[tuple[str, str | None, str], float | None] = {}
    if blocks in ("wells", "both"):
        expected |= {(w, None, k): v for w, d in wells.items() for k, v in d.items()}
    if blocks in ("electrodes", "both"):
        expected |= {(e[:2], e, k): v for e, d in electrodes.items() for k, v in d.items()}
    got = {(r.well, r.electrode, r.label): r.value for r in nm.rows}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if value is None:
            assert got[key] is None, key  # an empty cell stays missing, never 0
        else:
            assert got[key] == pytest.approx(value, rel=5e-6), key  # 6 significant digits
    assert nm.metadata["plate_serial"] == "100-0914"
    assert nm.metadata["recorded_at"] == dt.datetime(2023, 4, 25, 16, 46, 2)
    assert nm.metadata["recording_name"] == "WT culture_22DIV"
    assert nm.metadata["nmt_burst_max_isi_ms"] == 100.0
    assert nm.metadata["nmt_min_active_rate_per_min"] == 5.0
    assert nm.metadata["nmt_analysis_duration_s"] == DURATION_S
    if blocks != "electrodes":
        assert nm.treatments == {"A1": "WT", "A2": "WT", "B1": "KO", "B2": "KO"}
        rates = [r for r in nm.rows if r.label == "Mean Firing Rate (Hz)" and r.level == "well"]
        assert {r.unit for r in rates} == {"Hz"}
        if variant.get("categories", True):
            assert {r.category for r in rates} == {"Activity Metrics"}


def test_units_split_from_labels() -> None:
    assert split_unit("Burst Duration - Avg (sec)") == ("Burst Duration - Avg", "sec")
    assert split_unit("Resistance - Avg (kΩ)") == ("Resistance - Avg", "kΩ")
    assert split_unit("Number of Spikes") == ("Number of Spikes", None)


def test_bad_value_names_file_and_line(tmp_path: Path) -> None:
    wells, _ = _metrics()
    text = neural_metrics_bytes(wells).decode()
    lines = text.split("\r\n")
    i = next(k for k, ln in enumerate(lines) if ln.startswith("Mean Firing Rate"))
    lines[i] = lines[i].replace(",", ",oops", 1)
    path = tmp_path / "bad_neuralMetrics.csv"
    path.write_text("\r\n".join(lines))
    with pytest.raises(DecodeError, match=rf"bad_neuralMetrics.csv, line {i + 1}: 'oops"):
        read_vendor_metrics(path)
    lines[i] = "Mean Firing Rate (Hz),1,2\u00a0x"
    path.write_text("\r\n".join(lines).replace("oops", ""))
    with pytest.raises(DecodeError, match="is not a number"):
        read_vendor_metrics(path)


def test_decimal_comma_with_comma_separator_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "eu_neuralMetrics.csv"
    path.write_text('Well Averages,A1,A2\nNumber of Spikes,"12,5",3\n')
    with pytest.raises(DecodeError, match="line 2: decimal comma"):
        read_vendor_metrics(path)


def test_not_an_nmt_export(tmp_path: Path) -> None:
    path = tmp_path / "x_neuralMetrics.csv"
    path.write_text("Investigator,Maddy\nTime (s),Electrode\n")
    with pytest.raises(UnsupportedRecording, match="not a Neural Metric Tool export"):
        read_vendor_metrics(path)


def _landed(tmp_path: Path, *, mfr_scale: float = 1.0) -> Path:
    folder = tmp_path / "landing" / "labX" / "ctl" / "DIV22"
    folder.mkdir(parents=True)
    spikes = _spikes()
    info = {w: {"Treatment": "", "Active": "True"} for w in WELLS}  # B2 named, silent
    (folder / "plate1_spike_list.csv").write_bytes(spike_list_bytes(spikes, footer=info))
    wells, electrodes = _metrics()
    for values in wells.values():
        values["Mean Firing Rate (Hz)"] = float(values["Mean Firing Rate (Hz)"] or 0) * mfr_scale
    (folder / "plate1_neuralMetrics.csv").write_bytes(
        neural_metrics_bytes(
            wells, electrode_values=electrodes, recording_settings=AXIS3_SETTINGS, blocks="both"
        )
    )
    return folder.parent.parent.parent


def test_ingest_and_parity_end_to_end(tmp_path: Path) -> None:
    landing = _landed(tmp_path)
    lake = tmp_path / "lake"
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert summary.counts() == {"published": 2}, [o.reason for o in summary.outcomes]
    rows = query(
        lake,
        "SELECT level, count(*), count(DISTINCT well), any_value(plate_sn), "
        "any_value(recorded_at), any_value(lab), any_value(condition), any_value(timepoint) "
        "FROM mea_vendor_metrics GROUP BY level ORDER BY level",
    )
    assert rows == [
        (
            "electrode",
            64 * 2,
            4,
            "100-0914",
            dt.datetime(2023, 4, 25, 16, 46, 2),
            "labX",
            "ctl",
            "DIV22",
        ),
        ("well", 4 * 4, 4, "100-0914", dt.datetime(2023, 4, 25, 16, 46, 2), "labX", "ctl", "DIV22"),
    ]
    (settings,) = query(lake, "SELECT any_value(settings_json) FROM mea_vendor_metrics")[0]
    doc = json.loads(settings)
    assert doc["nmt_burst_max_isi_ms"] == 100.0 and doc["nmt_version"] == "Version 3.1.7"
    assert "Burst Settings" in doc["sections"]
    (prov,) = query(
        lake,
        "SELECT count(*) FROM mea_vendor_metrics WHERE file_id IS NULL OR ingest_id IS NULL "
        "OR transform_version IS NULL OR params_json IS NULL OR timepoint_days IS NULL",
    )[0]
    assert prov == 0
    parity = query(
        lake,
        "SELECT well, metric, vendor_value, neurocyte_value, rel_diff FROM mea_metric_parity",
    )
    # 4 wells x 4 activity metrics; silent B2 has no weighted rate in the export (an
    # empty cell) where Neurocyte stores 0: no relative difference, not a false 0
    assert len(parity) == 16
    for well, metric, vendor, ours, rel in parity:
        if vendor is None:
            assert (well, metric, ours, rel) == ("B2", "Weighted Mean Firing Rate", 0.0, None)
            continue
        assert rel is not None and abs(rel) <= 5e-6, (well, metric, vendor, ours)


def test_parity_reports_a_disagreement(tmp_path: Path) -> None:
    landing = _landed(tmp_path, mfr_scale=1.1)  # the "vendor" reports 10 % more
    lake = tmp_path / "lake"
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert summary.counts() == {"published": 2}, [o.reason for o in summary.outcomes]
    rows = query(
        lake,
        "SELECT well, rel_diff FROM mea_metric_parity WHERE metric = 'Mean Firing Rate' "
        "AND vendor_value > 0",
    )
    assert len(rows) == 3
    for _, rel in rows:
        assert rel == pytest.approx(1 / 1.1 - 1, abs=1e-5)


def test_unmatched_export_has_no_parity_rows(tmp_path: Path) -> None:
    folder = tmp_path / "landing" / "labX" / "ctl" / "DIV22"
    folder.mkdir(parents=True)
    (folder / "plate1_spike_list.csv").write_bytes(spike_list_bytes(_spikes()))
    wells, _ = _metrics()
    other = tuple(
        (k, "100-0999") if k.strip() == "Plate Serial Number" else (k, v) for k, v in AXIS3_SETTINGS
    )
    (folder / "other_neuralMetrics.csv").write_bytes(
        neural_metrics_bytes(wells, recording_settings=other)
    )
    lake = tmp_path / "lake"
    landing = tmp_path / "landing"
    ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert query(lake, "SELECT count(*) FROM mea_vendor_metrics")[0][0] == 16
    assert query(lake, "SELECT count(*) FROM mea_metric_parity")[0][0] == 0


def test_recording_kind_of_nmt_names() -> None:
    assert spec.recording_kind("plate1_neuralMetrics.csv") == "neural_metrics"
    assert spec.recording_kind("Plate1_NeuralMetrics.csv.gz") == "neural_metrics"
    assert spec.recording_kind("plate1_expLog.csv") is None


def test_bad_export_fails_alone_with_its_line(tmp_path: Path) -> None:
    folder = tmp_path / "landing" / "labX" / "ctl" / "DIV22"
    folder.mkdir(parents=True)
    (folder / "plate1_spike_list.csv").write_bytes(spike_list_bytes(_spikes()))
    (folder / "bad_neuralMetrics.csv").write_text(
        "Neural Metric Tool,Version 3.1.7\n\nWell Averages,A1,A2\nNumber of Spikes,12,x7\n"
    )
    lake = tmp_path / "lake"
    landing = tmp_path / "landing"
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert summary.counts() == {"published": 1, "failed": 1}
    rows = query(lake, "SELECT file_name, status, reason FROM ingest_log WHERE status = 'failed'")
    assert rows[0][0] == "bad_neuralMetrics.csv"
    assert "bad_neuralMetrics.csv, line 4: 'x7' is not a number" in rows[0][2]


def test_single_well_export_and_a_setting_that_names_a_well(tmp_path: Path) -> None:
    wells, _ = _metrics()
    settings = (*AXIS3_SETTINGS, ("   Reference Well", "B1"))
    path = tmp_path / "one_neuralMetrics.csv"
    path.write_bytes(neural_metrics_bytes({"B1": wells["B1"]}, recording_settings=settings))
    nm = read_vendor_metrics(path)
    assert nm.wells == ("B1",) and nm.blocks == ("Well Averages",)
    assert nm.settings["Reference Well"] == "B1"
    assert {r.label: r.value for r in nm.rows} == pytest.approx(wells["B1"], rel=5e-6)


def test_parity_with_a_binary_spk_plate(tmp_path: Path) -> None:
    """A generated 24-well .spk (ground-truth spikes) and an NMT export of the same
    recording: matched by the plate map's serial, the start time and the name."""
    import shutil

    from transforms.synth.plate import generate_plate

    plate = generate_plate(tmp_path / "gen", n_wells=24, duration_s=1.0, seed=7, snr=8.0)
    assert plate.spk_path is not None
    folder = tmp_path / "landing" / "labX" / "ctl" / "DIV14"
    folder.mkdir(parents=True)
    shutil.copy(plate.spk_path, folder / "synth.spk")
    shutil.copy(plate.plate_map_path, folder / "synth_expLog.csv")
    electrodes = plate.layout.electrodes
    spikes = [e for e in electrodes for _ in plate.spike_times_s[e]]
    duration = round(1.0 * 12500) / 12500
    wells, _ = activity_metrics(spikes, electrodes=electrodes, duration_s=duration)
    settings = (
        ("Recording Name", "synth"),
        ("Maestro Settings", ""),
        ("   Original File Time", plate.recorded_at.strftime("%m/%d/%Y %H:%M:%S")),
        ("   Plate Serial Number", "SYN00007"),
    )
    (folder / "synth_neuralMetrics.csv").write_bytes(
        neural_metrics_bytes(wells, recording_settings=settings, delimiter="\t")
    )
    lake = tmp_path / "lake"
    landing = tmp_path / "landing"
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert summary.counts() == {"published": 2}, [o.reason for o in summary.outcomes]
    rows = query(
        lake,
        "SELECT count(*), count(DISTINCT well), max(abs(rel_diff)), "
        "count(*) FILTER (WHERE rel_diff IS NULL) FROM mea_metric_parity",
    )
    n, n_wells, worst, n_null = rows[0]
    silent = sum(1 for k in plate.well_kind.values() if k == "silent")
    assert (n, n_wells) == (24 * 4, 24)
    assert n_null == silent  # a silent well's weighted rate: empty in the export, 0 here
    assert worst <= 5e-6
    # the vendor rows carry the plate map's partition, like the spike rows
    (conds,) = query(lake, "SELECT count(DISTINCT condition) FROM mea_vendor_metrics")[0]
    assert conds == 2
