"""AxIS spike-list CSV reader: the real sample export and small hand-written files."""

from __future__ import annotations

import csv
import gzip
import io
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from tests.conftest import MEA_DIR
from transforms.errors import DecodeError, SpecError
from transforms.formats.axis_spikelist import TRUNCATED, UNSORTED, parse_duration_s, read_spike_list
from transforms.recording.plate import LAYOUTS

SAMPLE = MEA_DIR / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"

SETTINGS_ROWS = [
    ("Investigator", "Ada"),
    ("Experiment ID", "exp7"),
    ("", ""),
    ("Maestro Settings", ""),
    ("   Sampling Frequency", "12500 Hz"),
    ("   Plate Type", "Maestro 24-Well"),
    ("Actual File Section Run", "0s to 10s"),
    ("Spike Detector Settings", ""),
    ("   Threshold", "6"),
]


def _write(path: Path, spikes: list[tuple[str, str, str]], *, settings=SETTINGS_ROWS, footer=""):
    """An export laid out like AxIS's: settings in columns 0-1 beside the spikes."""
    lines = []
    n = max(len(spikes) + 1, len(settings))
    for i in range(n):
        key, value = settings[i] if i < len(settings) else ("", "")
        if i == 0:
            data = ("Time (s)", "Electrode", "Amplitude(mV)")
        else:
            data = spikes[i - 1] if i - 1 < len(spikes) else ("", "", "")
        lines.append(",".join((key, value, *data)))
    text = "\r\n".join(lines) + "\r\n" + footer
    path.write_text(text)
    return path


def _sample_rows() -> list[list[str]]:
    """The sample's spike rows, read with the csv module (independent of the reader)."""
    with gzip.open(SAMPLE, "rt", newline="") as fh:
        rows = list(csv.reader(fh))
    return [r for r in rows[1:] if len(r) > 2 and r[2].strip()]


def test_sample_spikes_settings_and_truncation() -> None:
    sl = read_spike_list(SAMPLE)
    rows = _sample_rows()
    assert sl.spikes.num_rows == len(rows) == 100957
    assert sl.spikes.column_names == ["electrode", "well", "time_s", "amplitude_uv"]
    # First and last rows as printed by `zcat | head/tail`.
    first = sl.spikes.slice(0, 1).to_pylist()[0]
    assert first["electrode"] == "D3_31" and first["well"] == "D3"
    assert first["time_s"] == pytest.approx(0.01048)
    assert first["amplitude_uv"] == pytest.approx(93.034242, rel=1e-6)  # 0.093034242 mV
    assert sl.last_spike_s == pytest.approx(57.67824)
    t = sl.spikes["time_s"].to_numpy()
    assert np.all(np.diff(t) >= 0)
    assert sl.layout is LAYOUTS[48]
    assert sl.settings["Sampling Frequency"] == "12500 Hz"
    assert sl.settings["Plate Type"] == "Maestro 48-Well (Transparent)"
    assert sl.settings["Method"] == "Adaptive Threshold Crossing"
    assert sl.declared_duration_s == pytest.approx(18 * 60 + 2)
    assert sl.qc_flags == (TRUNCATED,)
    assert sl.truncated
    assert sl.analysis_duration_s == pytest.approx(57.67824)
    # Electrode -> well split agrees with the names.
    assert set(pc.unique(sl.spikes["well"]).to_pylist()) == {r[3].split("_")[0] for r in rows}


def test_sample_parses_fast() -> None:
    read_spike_list(SAMPLE)  # warm imports and caches
    t0 = time.perf_counter()
    read_spike_list(SAMPLE)
    assert time.perf_counter() - t0 < 1.0


def test_plain_file_with_footer(tmp_path: Path) -> None:
    footer = "Well Information,,,\r\nWell,A1,A2,B1\r\nTreatment,ttx,,ctrl\r\nConcentration,1,,0\r\n"
    path = _write(
        tmp_path / "x_spike_list.csv",
        [("0.5", "A1_11", "0.010"), ("2.25", "B1_44", "-0.0205"), ("9.75", "A2_23", "")],
        footer=footer,
    )
    sl = read_spike_list(path)
    assert sl.spikes["electrode"].to_pylist() == ["A1_11", "B1_44", "A2_23"]
    assert sl.spikes["time_s"].to_pylist() == [0.5, 2.25, 9.75]
    amps = sl.spikes["amplitude_uv"].to_pylist()
    assert amps[0] == pytest.approx(10.0) and amps[1] == pytest.approx(-20.5)
    assert amps[2] is None
    assert sl.layout is LAYOUTS[24]
    assert sl.declared_duration_s == 10.0
    assert sl.qc_flags == ()
    assert sl.analysis_duration_s == 10.0
    assert sl.settings["Investigator"] == "Ada"
    assert sl.settings["Threshold"] == "6"
    assert sl.well_info == {
        "A1": {"Treatment": "ttx", "Concentration": "1"},
        "A2": {"Treatment": "", "Concentration": ""},
        "B1": {"Treatment": "ctrl", "Concentration": "0"},
    }


def test_gzip_and_unsorted_rows(tmp_path: Path) -> None:
    plain = _write(tmp_path / "a.csv", [("3.0", "A1_11", "0.1"), ("1.0", "A1_12", "0.2")])
    gz = tmp_path / "a.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    sl = read_spike_list(gz)
    assert sl.spikes["time_s"].to_pylist() == [1.0, 3.0]
    assert sl.spikes["electrode"].to_pylist() == ["A1_12", "A1_11"]
    assert UNSORTED in sl.qc_flags


@pytest.mark.parametrize(
    ("electrodes", "wells"),
    [(["A1_11", "D6_44"], 24), (["F8_11"], 48), (["A1_88"], 12), (["H12_33"], 96)],
)
def test_layout_inferred_from_electrodes(tmp_path: Path, electrodes, wells) -> None:
    settings = [("Investigator", ""), ("Actual File Section Run", "0s to 1m")]
    spikes = [(f"0.{i + 1}", e, "0.01") for i, e in enumerate(electrodes)]
    sl = read_spike_list(_write(tmp_path / "s.csv", spikes, settings=settings))
    assert sl.layout is LAYOUTS[wells]
    assert sl.declared_duration_s == 60.0


def test_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("Investigator,,Time (s),Channel,Amplitude(mV)\n,,0.1,A1_11,0.1\n")
    with pytest.raises(DecodeError, match=r"bad\.csv.*Electrode"):
        read_spike_list(path)


def test_electrode_not_on_plate(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.csv", [("0.1", "A1_11", "0.1"), ("0.2", "A7_11", "0.1")])
    with pytest.raises(SpecError, match=r"p\.csv: line 3: electrode 'A7_11' does not exist"):
        read_spike_list(path)


def test_malformed_electrode_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.csv", [("0.1", "A1-11", "0.1")])
    with pytest.raises(SpecError, match=r"p\.csv: line 2: not an Axion electrode name"):
        read_spike_list(path)


def test_non_numeric_time(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", [("0.1", "A1_11", "0.1"), ("zero", "A1_12", "0.1")])
    with pytest.raises(DecodeError, match=r"t\.csv: line 3: non-numeric spike time 'zero'"):
        read_spike_list(path)


def test_time_without_electrode(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", [("0.1", "", "0.1")])
    with pytest.raises(DecodeError, match=r"t\.csv: line 2: a spike needs both"):
        read_spike_list(path)


def test_empty_and_corrupt_gzip(tmp_path: Path) -> None:
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(DecodeError, match="empty"):
        read_spike_list(empty)
    corrupt = tmp_path / "c.csv.gz"
    corrupt.write_bytes(gzip.compress(b"Investigator,,Time (s)\n" * 50)[:40])
    with pytest.raises(DecodeError, match="gzip"):
        read_spike_list(corrupt)


def test_no_duration_uses_last_spike(tmp_path: Path) -> None:
    settings = [("Investigator", ""), ("   Plate Type", "Maestro 48-Well")]
    sl = read_spike_list(_write(tmp_path / "n.csv", [("4.5", "A1_11", "")], settings=settings))
    assert sl.declared_duration_s is None
    assert "duration_unknown" in sl.qc_flags
    assert sl.analysis_duration_s == 4.5


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("18m2s", 1082.0), ("0s", 0.0), ("1h0m5.5s", 3605.5), ("250ms", 0.25), ("2m", 120.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5 minutes", "1x"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(SpecError):
        parse_duration_s(text)


def test_rows_beyond_settings_are_only_spikes() -> None:
    # The sample has 42 settings rows; rows after them carry no settings keys.
    sl = read_spike_list(SAMPLE)
    with gzip.open(SAMPLE, "rt", newline="") as fh:
        keys = [r[0].strip() for r in csv.reader(io.StringIO(fh.read())) if r and r[0].strip()]
    assert set(sl.settings) == set(keys)


def test_section_offset_is_flagged(tmp_path: Path) -> None:
    settings = [("Investigator", ""), ("Actual File Section Run", "1m to 2m")]
    sl = read_spike_list(_write(tmp_path / "o.csv", [("60.5", "A1_11", "")], settings=settings))
    assert sl.declared_duration_s == 60.0
    assert "section_offset" in sl.qc_flags


def test_spike_columns_only(tmp_path: Path) -> None:
    path = tmp_path / "bare.csv"
    path.write_text("Time (s),Electrode,Amplitude (mV)\n0.25,B2_33,0.5\n")
    sl = read_spike_list(path)
    assert sl.settings == {}
    assert sl.spikes.to_pylist() == [
        {"electrode": "B2_33", "well": "B2", "time_s": 0.25, "amplitude_uv": 500.0}
    ]
    assert sl.layout is LAYOUTS[12]  # smallest plate with a B2 well and an electrode 33


def test_ragged_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("Investigator,,Time (s),Electrode,Amplitude(mV)\n,,0.1,A1_11,0.1,extra\n")
    with pytest.raises(DecodeError, match=r"r\.csv: malformed spike-list rows"):
        read_spike_list(path)
