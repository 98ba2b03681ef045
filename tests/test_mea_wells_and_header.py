"""Wells that exist and header metadata, end to end through ingest_paths (real Delta,
DuckDB and GX), on spike lists and legacy .spk files these tests generate."""

from __future__ import annotations

import collections
import datetime as dt
import gzip
import json
import math
from pathlib import Path

import numpy as np

from tests.axis_text import plain_counts, spike_list_bytes, spikes_on
from tests.helpers import query
from transforms.formats.axion import SpikeRecords, WellTreatment, write_axion_spk_legacy
from transforms.pipeline import ingest_paths
from transforms.recording.plate import LAYOUTS

TABLES = ("mea_recordings", "mea_well_metrics")


def _ingest(tmp_path: Path, path: Path, **kw) -> Path:  # type: ignore[no-untyped-def]
    lake = tmp_path / "lake"
    summary = ingest_paths(
        [path], lake=str(lake), lab="labX", condition="ctl", timepoint="DIV21", **kw
    )
    assert summary.counts() == {"published": 1}, summary.outcomes[0].reason
    return lake


def _wells(lake: Path, table: str) -> list[str]:
    return [w for (w,) in query(lake, f"SELECT DISTINCT well FROM {table} ORDER BY well")]


def test_single_well_export_has_no_phantom_wells(tmp_path: Path) -> None:
    spikes = spikes_on([f"B3_{c}{r}" for c in (1, 2, 3, 4) for r in (1, 2)], n=300, duration_s=10.0)
    raw = spike_list_bytes(spikes, delimiter="\t", bom=True)
    path = tmp_path / "one_well_spike_list.csv"
    path.write_bytes(raw)
    lake = _ingest(tmp_path, path)
    for table in (*TABLES, "mea_electrode_metrics", "mea_spikes"):
        assert _wells(lake, table) == ["B3"], table
    (n_spikes,) = query(lake, "SELECT n_spikes FROM mea_recordings")[0]
    assert {"B3": n_spikes} == plain_counts(raw, "\t")
    (n_el,) = query(lake, "SELECT count(*) FROM mea_electrode_metrics")[0]
    assert n_el == 16  # the well's electrodes, silent ones included


def test_header_metadata_columns(tmp_path: Path) -> None:
    spikes = spikes_on(["A1_11", "D6_44"], n=50, duration_s=10.0)
    path = tmp_path / "meta_spike_list.csv.gz"
    path.write_bytes(spike_list_bytes(spikes, gz=True))
    lake = _ingest(tmp_path, path)
    row = query(
        lake,
        "SELECT recorded_at, experiment_started_at, axis_version, instrument, instrument_serial, "
        "plate_sn, sampling_rate_hz, voltage_scale_uv_per_count, detector_threshold, "
        "settings_json FROM mea_recordings WHERE well = 'A1'",
    )[0]
    assert row[:7] == (
        dt.datetime(2023, 4, 25, 16, 46, 2),
        dt.datetime(2023, 4, 25, 12, 45, 44),
        "3.6.2.2",
        "Maestro Edge",
        "Maestro-299",
        "100-0914",
        12500.0,
    )
    assert abs(row[7] - 0.05484861781483107) < 1e-12 and row[8] == 6.0
    settings = json.loads(row[9])
    assert settings["detector_method"] == "Adaptive Threshold Crossing"
    assert settings["pre_spike_ms"] == 0.84 and settings["coincidence_filter"] == "Default (Well)"
    assert settings["sections"]["Spike Detector Settings"]["Threshold"] == "6"


def test_named_silent_well_keeps_rows_and_partial_map_is_flagged(tmp_path: Path) -> None:
    spikes = spikes_on(["A1_11", "A1_22"], n=80, duration_s=10.0)
    footer = {w: {"Active": "True", "Treatment": "CAP"} for w in ("A1", "A2")}
    path = tmp_path / "p_spike_list.csv"
    path.write_bytes(spike_list_bytes(spikes, footer=footer))
    plate_map = tmp_path / "map.csv.gz"  # a gzipped plain map naming A1 and C4 only
    plate_map.write_bytes(gzip.compress(b"well,condition\nA1,CAP\nC4,DMSO\n"))
    lake = _ingest(tmp_path, path, plate_map=plate_map)
    rows = query(
        lake,
        "SELECT well, condition, n_spikes, reader_qc_flags FROM mea_recordings ORDER BY well",
    )
    assert rows == [
        ("A1", "CAP", 80, ""),
        ("A2", "ctl", 0, "plate_map_missing_well"),  # named by the footer, not by the map
        ("C4", "DMSO", 0, ""),  # named by the map: a silent well
    ]
    assert _wells(lake, "mea_well_metrics") == ["A1", "A2", "C4"]


def test_legacy_spk_with_spikes_before_zero_publishes(tmp_path: Path) -> None:
    layout = LAYOUTS[24]
    electrodes = [e for e in layout.electrodes if e.split("_")[0] in ("B1", "C5")]
    rng = np.random.default_rng(5)
    start = np.sort(np.concatenate([[-3000, -100], rng.integers(0, 9 * 12500, 200)])).astype(
        np.int64
    )
    names = rng.choice(np.array(electrodes, dtype=object), len(start))
    waves = rng.normal(0, 5, (len(start), 38))
    settings = "\r\n".join(
        [
            "Maestro Edge (Maestro-299) Settings,",
            "Original File Time,05/09/2024 12:03:00",
            "Plate Serial Number,89-0032",
            "AxIS Version,3.6.1.14",
            "Actual File Section Run,0s to 10s",
            "Spike Detector Settings,",
            "Threshold,6",
        ]
    )
    path = write_axion_spk_legacy(
        tmp_path / "legacy(000).spk",
        SpikeRecords(names, start, waves, 11, 2.0, 6.0),
        layout=layout,
        electrodes=electrodes,
        settings_text=settings,
        # AxIS's own plate map: a treatment no partition value can hold as written
        plate_map=[WellTreatment("B1", "20kV/cm", amount=math.nan, unit="")],
    )
    lake = _ingest(tmp_path, path)
    conditions = dict(query(lake, "SELECT well, condition FROM mea_recordings"))
    assert conditions == {"B1": "20kV_cm", "C5": "ctl"}
    rows = query(
        lake,
        "SELECT well, n_spikes, reader_qc_flags, recorded_at, plate_sn, duration_s "
        "FROM mea_recordings ORDER BY well",
    )
    t = (start + 11) / 12500.0
    expected = collections.Counter(
        n.split("_")[0] for n, ti in zip(names, t, strict=True) if ti >= 0
    )
    assert [(w, n) for w, n, *_ in rows] == sorted(expected.items())
    assert {r[2] for r in rows} == {"spikes_before_start:2"}  # trigger at -2989 and -89 samples
    assert {r[3] for r in rows} == {dt.datetime(2024, 5, 9, 12, 3)}
    assert {r[4] for r in rows} == {"89-0032"} and {r[5] for r in rows} == {10.0}
