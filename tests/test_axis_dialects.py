"""AxIS spike-list dialects seen in real exports, on files these tests generate.

Every variant is checked against an independent plain parse (``tests.axis_text``):
per-well counts must be equal. The real files behind each case are described in
research/mea/FINDINGS.md (they are not committed).
"""

from __future__ import annotations

import collections
import datetime as dt
from pathlib import Path

import pytest

from tests.axis_text import (
    AXIS2_SETTINGS,
    plain_counts,
    spike_list_bytes,
    spikes_on,
)
from transforms.errors import DecodeError
from transforms.formats.axis_spikelist import SECTION_OFFSET, read_spike_list
from transforms.recording.plate import LAYOUTS, PLATE_TYPES

E24 = [f"{w}_{c}{r}" for w in ("A1", "B6", "D5") for c in (1, 4) for r in (1, 3)]


def _counts(sl) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return dict(collections.Counter(sl.spikes["well"].to_pylist()))


DIALECTS = {
    "axis3_native": {"bom": True, "amplitude_header": "Amplitude (mV)", "time_format": "{:012.6f}"},
    "axis2_native_gz": {"settings": AXIS2_SETTINGS, "investigator": "", "gz": True},
    "excel_padded": {"bom": True, "pad_cells": 44, "time_format": "{:.5f}", "newline": "\n"},
    "tab": {"delimiter": "\t", "bom": True},
    "tab_lf_space_header": {
        "delimiter": "\t",
        "newline": "\n",
        "amplitude_header": "Amplitude (mV)",
    },
    "cr_only": {"newline": "\r"},
    "time_brackets": {"time_header": "Time [s]", "amplitude_header": "Amplitude [mV]"},
}


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_dialect_counts_equal_plain_parse(tmp_path: Path, name: str) -> None:
    kw = dict(DIALECTS[name])
    plate = LAYOUTS[48] if kw.get("settings") is AXIS2_SETTINGS else LAYOUTS[24]
    electrodes = E24 if plate is LAYOUTS[24] else ["B2_11", "C3_44", "F8_22"]
    spikes = spikes_on(electrodes, n=500, duration_s=10.0, seed=len(name))
    raw = spike_list_bytes(spikes, **kw)
    path = tmp_path / f"{name}_spike_list.csv"
    path.write_bytes(raw)
    sl = read_spike_list(path)
    assert _counts(sl) == plain_counts(raw, kw.get("delimiter", ",")) and sl.spikes.num_rows == 500
    assert sl.layout is plate
    assert sl.declared_duration_s == 10.0 and sl.qc_flags == ()
    times = sl.spikes["time_s"].to_pylist()
    assert times == sorted(times) and times[0] == pytest.approx(spikes[0][0], abs=1e-5)
    meta = sl.metadata
    assert meta["sampling_rate_hz"] == 12500.0
    assert meta["detector_method"] == "Adaptive Threshold Crossing"
    if plate is LAYOUTS[24]:
        assert meta["recorded_at"] == dt.datetime(2023, 4, 25, 16, 46, 2)
        assert meta["experiment_started_at"] == dt.datetime(2023, 4, 25, 12, 45, 44)
        assert meta["axis_version"] == "3.6.2.2"
        assert (meta["instrument"], meta["instrument_serial"]) == ("Maestro Edge", "Maestro-299")
        assert meta["plate_serial"] == "100-0914"
        assert meta["voltage_scale_uv_per_count"] == pytest.approx(0.05484861781483107)
        assert meta["detector_threshold"] == 6.0
        assert meta["pre_spike_ms"] == pytest.approx(0.84)
        assert meta["post_spike_ms"] == pytest.approx(2.16)
        assert meta["coincidence_filter"] == "Default (Well)"
        assert meta["coincidence_threshold"] == 4.0
        assert meta["coincidence_window_ms"] == pytest.approx(0.16)
        assert meta["high_pass_filter"] == "200 Hz IIR"
        # the quoted Description runs over two lines and is read whole
        assert meta["description"] == "WT hippocampal culture, 22DIV. See notes"
        assert sl.settings["AxIS Playback/AxIS Version"] == "3.6.2.2"
    else:
        assert meta["recorded_at"] == dt.datetime(2015, 8, 17, 16, 12, 33)
        assert meta["axis_version"] == "2.0.3.3"
        assert (meta["instrument"], meta["instrument_serial"]) == ("Maestro", None)
        assert meta["voltage_scale_uv_per_count"] == pytest.approx(0.065)
        assert meta["detector_threshold"] == 7.0


def test_excel_dates_and_units(tmp_path: Path) -> None:
    raw = spike_list_bytes(
        [(0.5, "A1_11", 0.02)],
        replace={
            "Original File Time": "10/21/2019 11:21",
            "Sampling Frequency": "12500 Hz",
            "Voltage Scale": "-5.48486178148311E-08 V/sample",
        },
    )
    (tmp_path / "x_spike_list.csv").write_bytes(raw)
    meta = read_spike_list(tmp_path / "x_spike_list.csv").metadata
    assert meta["recorded_at"] == dt.datetime(2019, 10, 21, 11, 21)
    assert meta["sampling_rate_hz"] == 12500.0
    assert meta["voltage_scale_uv_per_count"] == pytest.approx(-0.0548486178148311)


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_decimal_comma_names_file_and_line(tmp_path: Path, delimiter: str) -> None:
    spikes = spikes_on(E24, n=200, duration_s=10.0)
    raw = spike_list_bytes(spikes, delimiter=delimiter)
    text = raw.decode("utf-8")
    lines = text.split("\r\n")
    # European Excel: every time written with a decimal comma, from line 2 on
    lines = [lines[0]] + [ln.replace(".", ",", 1) if "_" in ln else ln for ln in lines[1:]]
    path = tmp_path / "eu_spike_list.csv"
    path.write_bytes("\r\n".join(lines).encode("utf-8"))
    with pytest.raises(
        DecodeError, match=r"eu_spike_list\.csv: line 2: spike time .* decimal comma"
    ):
        read_spike_list(path)


def test_unparsable_line_far_from_the_settings(tmp_path: Path) -> None:
    spikes = spikes_on(E24, n=400, duration_s=10.0)
    lines = spike_list_bytes(spikes).decode("utf-8").split("\r\n")
    lines[299] = lines[299].replace(lines[299].split(",")[2], "12:03", 1)
    path = tmp_path / "bad_spike_list.csv"
    path.write_text("\r\n".join(lines), encoding="utf-8", newline="")
    # row 300 is physical line 301: the quoted Description above runs over two lines
    assert "\r\n".join(lines[:300]).count("\n") + 1 == 301
    with pytest.raises(
        DecodeError, match=r"bad_spike_list\.csv: line 301: non-numeric spike time '12:03'"
    ):
        read_spike_list(path)


def test_section_counted_from_file_start(tmp_path: Path) -> None:
    # EPA's AxIS 1.5 export: section 27m0s to 42m0s, times 1620.9 ... 2520.7 s
    spikes = [(1620.0 + t, e, a) for t, e, a in spikes_on(E24, n=300, duration_s=900.0)]
    spikes.append((2520.73224, "A1_11", 0.03))  # 0.73 s past the whole-second end
    raw = spike_list_bytes(
        spikes,
        replace={
            "Requested File Section": "27m0s to 42m0s",
            "Actual File Section Run": "27m0s to 42m0s",
        },
    )
    (tmp_path / "o_spike_list.csv").write_bytes(raw)
    sl = read_spike_list(tmp_path / "o_spike_list.csv")
    assert sl.declared_duration_s == 900.0
    assert sl.time_offset_s == 1620.0 and sl.qc_flags == (SECTION_OFFSET,)
    assert sl.analysis_duration_s == pytest.approx(900.73224)  # not 2520.7
    assert sl.spikes["time_s"].to_pylist()[0] == pytest.approx(spikes[0][0] - 1620.0)
    assert _counts(sl) == plain_counts(raw, ",")


def test_whole_second_rounding_is_not_a_late_spike(tmp_path: Path) -> None:
    spikes = [*spikes_on(E24, n=50, duration_s=597.0), (597.72384, "B6_13", 0.02)]
    raw = spike_list_bytes(spikes, replace={"Actual File Section Run": "0s to 9m57s"})
    (tmp_path / "r_spike_list.csv").write_bytes(raw)
    sl = read_spike_list(tmp_path / "r_spike_list.csv")
    assert sl.qc_flags == () and sl.spikes.num_rows == 51
    assert sl.analysis_duration_s == pytest.approx(597.72384)


def test_spikes_outside_the_section_are_counted_not_fatal(tmp_path: Path) -> None:
    inside = spikes_on(E24, n=40, duration_s=10.0)
    spikes = [(-0.24, "A1_11", 0.02), (-0.01, "A1_13", 0.02), *inside, (11.5, "D5_41", 0.1)]
    path = tmp_path / "w_spike_list.csv"
    path.write_bytes(spike_list_bytes(spikes, time_format="{:.6f}"))
    sl = read_spike_list(path)
    assert sl.spikes.num_rows == 40 and (sl.n_before_start, sl.n_after_end) == (2, 1)
    assert sl.qc_flags == ("spikes_before_start:2", "spikes_after_end:1")
    assert min(sl.spikes["time_s"].to_pylist()) >= 0.0


def test_well_information_names_wells(tmp_path: Path) -> None:
    spikes = [(0.5, "A1_11", 0.02), (1.5, "A1_13", 0.02)]
    footer = {
        "A1": {"Active": "True", "Treatment": "CAP", "Concentration": "100 nM"},
        "A2": {"Active": "True", "Treatment": "CTRL", "Concentration": ""},
        "A3": {"Active": "False", "Treatment": "", "Concentration": ""},
    }
    path = tmp_path / "f_spike_list.csv"
    path.write_bytes(spike_list_bytes(spikes, footer=footer, delimiter="\t"))
    sl = read_spike_list(path)
    assert sl.named_wells == ("A1", "A2")  # A3 is marked inactive: AxIS did not record it
    assert sl.well_info["A1"]["Concentration"] == "100 nM"


def _sample_electrodes(layout) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        layout.electrodes[0],
        layout.electrodes[-1],
        layout.electrodes[len(layout.electrodes) // 2],
    ]


@pytest.mark.parametrize("layout", list(PLATE_TYPES.values()), ids=lambda lay: lay.name)
def test_every_plate_type_name(tmp_path: Path, layout) -> None:  # type: ignore[no-untyped-def]
    names = _sample_electrodes(layout)
    spikes = [(0.1 * (i + 1), e, 0.02) for i, e in enumerate(names)]
    text = layout.name.replace(" with ", " ")  # AxIS writes "Classic MEA 48 E-Stim+"
    path = tmp_path / "p_spike_list.csv"
    path.write_bytes(spike_list_bytes(spikes, replace={"Plate Type": text}))
    sl = read_spike_list(path)
    if "debug map" in layout.name:  # not a product name: the well count decides
        assert sl.layout.n_wells == layout.n_wells
    else:
        assert sl.layout is layout
    assert sl.spikes["electrode"].to_pylist() == names
    assert sl.layout.electrodes_per_well == layout.electrodes_per_well


def test_six_well_plate_from_plate_type(tmp_path: Path) -> None:
    spikes = [(0.1, "A1_11", 0.02), (0.2, "B3_88", 0.02)]
    path = tmp_path / "six_spike_list.csv"
    path.write_bytes(spike_list_bytes(spikes, replace={"Plate Type": "CytoView MEA 6"}))
    sl = read_spike_list(path)
    assert sl.layout.n_wells == 6 and sl.layout.electrodes_per_well == 64
    assert sl.named_wells == ("A1", "B3")
