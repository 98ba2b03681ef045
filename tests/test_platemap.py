"""Plate maps: the real AxIS experiment log (CR line endings) and plain well,condition CSVs."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.conftest import MEA_DIR
from transforms.errors import DecodeError, SpecError
from transforms.formats.platemap import DEFAULT_CONDITION, read_plate_map
from transforms.recording.plate import LAYOUTS

EXPLOG = MEA_DIR / "exampleRecording_1012016_plate1_expLog.csv"


def test_sample_experiment_log() -> None:
    assert b"\r" in EXPLOG.read_bytes() and b"\n" not in EXPLOG.read_bytes()  # old Mac file
    pm = read_plate_map(EXPLOG)
    assert pm.layout is LAYOUTS[48]
    assert len(pm.wells) == 48
    # Hand-read from the file: columns 2-3 treatX, 4-5 untreated, 6-7 treatY in rows B-E.
    assert pm.condition_of("B2") == "treatX"
    assert pm.condition_of("E3") == "treatX"
    assert pm.condition_of("C4") == "untreated"
    assert pm.condition_of("D7") == "treatY"
    # Empty treatment (rows A and F, columns 1 and 8: the unused plate edge) -> the
    # documented default, kept apart from the explicit "untreated" controls.
    assert pm.condition_of("A1") == DEFAULT_CONDITION == "unassigned"
    assert pm.condition_of("F8") == "unassigned"
    assert {w.timepoint for w in pm.wells.values()} == {"DIV3"}
    assert pm.metadata == {
        "project": "exampleRecording",
        "experiment_date": "1012016",
        "plate_sn": "plate1",
    }
    counts: dict[str, int] = {}
    for w in pm.wells.values():
        counts[w.condition] = counts.get(w.condition, 0) + 1
    assert counts == {"unassigned": 24, "untreated": 8, "treatX": 8, "treatY": 8}


def test_default_condition_is_a_choice() -> None:
    pm = read_plate_map(EXPLOG, default_condition="untreated")
    assert pm.condition_of("A1") == "untreated"
    with pytest.raises(SpecError, match="invalid condition 'no cells'"):
        read_plate_map(EXPLOG, default_condition="no cells")


def test_sample_with_explicit_layout_and_too_small_plate() -> None:
    assert read_plate_map(EXPLOG, layout=LAYOUTS[48]).layout is LAYOUTS[48]
    with pytest.raises(SpecError, match=r"expLog\.csv: line \d+: well 'A5' is not on a CytoView"):
        read_plate_map(EXPLOG, layout=LAYOUTS[12])


def test_plain_map_with_timepoint_dose_units(tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    path.write_bytes(
        b"well,condition,timepoint,dose,units\r\n"
        b"A1,ttx,DIV14,1.5,uM\r\n"
        b"A2,,DIV14,,\r\n"
        b"b3,vehicle,DIV21,0,uM\r\n"
    )
    pm = read_plate_map(path)
    assert pm.layout is LAYOUTS[12]  # wells up to row B, column 3 fit a 12-well plate
    assert list(pm.wells) == ["A1", "A2", "B3"]
    a1 = pm.wells["A1"]
    assert (a1.condition, a1.timepoint, a1.dose, a1.units) == ("ttx", "DIV14", 1.5, "uM")
    assert pm.wells["A2"].condition == "unassigned"
    assert pm.wells["A2"].dose is None and pm.wells["A2"].units is None
    table = pm.to_table()
    assert table.column_names == ["well", "condition", "timepoint", "dose", "units"]
    assert table["dose"].to_pylist() == [1.5, None, 0.0]


def test_plain_map_without_timepoint(tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    path.write_text("Well,Condition\nH12,ko\n")
    pm = read_plate_map(path)
    assert pm.layout is LAYOUTS[96]
    assert pm.wells["H12"].timepoint is None
    with pytest.raises(SpecError, match="'A1' is not in the plate map"):
        pm.condition_of("A1")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("well,condition\nA1,treat X\n", r"invalid condition 'treat X' in .*m\.csv"),
        ("well,condition\nA1,../etc\n", r"invalid condition '\.\./etc'"),
        ("well,condition,timepoint\nA1,a,day 3\n", r"invalid timepoint 'day 3'"),
        ("well,condition\nA1,a\nA1,b\n", r"m\.csv: line 3: well 'A1' is listed twice"),
        ("well,condition\nZ99,a\n", r"m\.csv: line 2: not a well name"),
        ("well,group\nA1,a\n", r"m\.csv: header .* is neither"),
        ("Project,DIV,Well,Treatment\np,three,A1,x\n", r"line 2: DIV 'three'"),
        ("well,condition,dose\nA1,a,lots\n", r"line 2: dose 'lots' is not a number"),
        ("", r"m\.csv: empty plate map"),
    ],
)
def test_invalid_maps(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(content)
    with pytest.raises(SpecError, match=message):
        read_plate_map(path)


def test_well_outside_given_layout(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("well,condition\nG1,a\n")
    with pytest.raises(SpecError, match=r"m\.csv: line 2: well 'G1' is not on a Classic MEA 48"):
        read_plate_map(path, layout=LAYOUTS[48])


def test_experiment_log_without_div_gzipped_with_na(tmp_path: Path) -> None:
    # EPA's MaestroExperimentLog: no DIV column, Size = NA, "Dose " with a space
    text = (
        "Project,Experiment Date,Plate SN,Well,Treatment,Size,Dose ,Units\r\n"
        "NFA,20190807,MW69-3715,A1,Chemical3,NA,0.03,uM\r\n"
        "NFA,20190807,MW69-3715,A2,Bisindolymaleimide 1,NA,NA,uM\r\n"
        "NFA,20190807,MW69-3715,F8,,NA,,\r\n"
    )
    path = tmp_path / "20190807_MW69-3715_MaestroExperimentLog.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    pm = read_plate_map(path)
    assert pm.layout is LAYOUTS[48]
    assert pm.metadata == {"project": "NFA", "experiment_date": "20190807", "plate_sn": "MW69-3715"}
    a1, a2, f8 = (pm.wells[w] for w in ("A1", "A2", "F8"))
    assert (a1.condition, a1.timepoint, a1.dose, a1.units) == ("Chemical3", None, 0.03, "uM")
    assert (a2.condition, a2.dose) == ("Bisindolymaleimide_1", None)
    assert f8.condition == "unassigned" and f8.units is None


def test_corrupt_gzip_plate_map(tmp_path: Path) -> None:
    path = tmp_path / "m.csv.gz"
    path.write_bytes(gzip.compress(b"well,condition\nA1,x\n" * 20)[:30])
    with pytest.raises(DecodeError, match=r"m\.csv\.gz: corrupt gzip"):
        read_plate_map(path)
