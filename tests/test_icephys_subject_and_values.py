"""Subject metadata into the lake and back out to NWB; clean stored values.

* Subject details (species, sex, age, genotype, strain, subject_id, date of
  birth) are read from an NWB file's ``/general/subject`` and from sidecar
  keys, stored as ``icephys_recordings`` columns, and written into the NWB
  export, which nwbinspector's DANDI configuration then passes without a
  CRITICAL finding.
* ``protocol`` is NULL (not ``'None'``) for ABF files without a protocol;
  stimulus amplitudes carry no float noise; ``timepoint_days`` sits beside
  ``timepoint`` in every data table and orders the convenience views.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from tests.conftest import ABF_DIR
from tests.helpers import land, query
from transforms import spec
from transforms.cli import main
from transforms.formats.abf import read_abf
from transforms.formats.nwb_icephys_export import export_nwb
from transforms.pipeline import ingest_paths

SUBJECT = {
    "subject": "mouse-42",
    "species": "Mus musculus",
    "sex": "M",
    "age": "P60D",
    "genotype": "Ntsr1-Cre/wt",
    "strain": "C57BL/6J",
    "date_of_birth": "2025-04-15T00:00:00-04:00",
}


def _dandi_critical(path: Path) -> list[str]:
    from nwbinspector import Importance, inspect_nwbfile, load_config

    return [
        m.check_function_name
        for m in inspect_nwbfile(nwbfile_path=str(path), config=load_config("dandi"))
        if m.importance == Importance.CRITICAL
    ]


def _export(lake: Path, file_name: str, out: Path) -> Path:
    (file_id,) = query(
        lake, "SELECT file_id FROM icephys_recordings WHERE file_name = ?", [file_name]
    )[0]
    assert main(["export-nwb", file_id, str(out), "--lake", str(lake)]) == 0
    return out


def test_nwb_subject_reaches_the_lake_and_the_export(tmp_path: Path) -> None:
    # an NWB file with a full /general/subject, written by the project's exporter
    rec = read_abf(ABF_DIR / "File_axon_5.abf")
    landing = tmp_path / "landing" / "labA" / "WT" / "P21"
    landing.mkdir(parents=True)
    export_nwb(
        rec,
        landing / "with_subject.nwb",
        file_id="fixture",
        metadata=SUBJECT,
    )
    lake = tmp_path / "lake"
    summary = ingest_paths([landing], lake=str(lake), landing=str(tmp_path / "landing"))
    assert [o.status for o in summary.outcomes] == ["published"]
    cols = ("subject", *spec.SUBJECT_FIELDS)
    (row,) = query(lake, f"SELECT {', '.join(cols)} FROM icephys_recordings")
    stored = dict(zip(cols, row, strict=True))
    assert {k: v for k, v in stored.items() if k != "date_of_birth"} == {
        k: v for k, v in SUBJECT.items() if k != "date_of_birth"
    }
    # pynwb returns the date of birth as an aware datetime; the lake keeps ISO 8601
    assert stored["date_of_birth"].startswith("2025-04-15T")

    out = _export(lake, "with_subject.nwb", tmp_path / "out.nwb")
    with h5py.File(out, "r") as h5:
        subject = h5["general/subject"]
        assert subject["species"][()].decode() == "Mus musculus"
        assert subject["genotype"][()].decode() == "Ntsr1-Cre/wt"
        assert subject["strain"][()].decode() == "C57BL/6J"
        assert subject["age"][()].decode() == "P60D"
        assert subject["subject_id"][()].decode() == "mouse-42"
    assert _dandi_critical(out) == []


def test_sidecar_subject_keys_and_the_dandi_cli(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    src = land(landing, "File_axon_5.abf")
    sidecar = {
        "subject_id": "rat-3",
        "species": "Rattus norvegicus",
        "sex": "female",
        "age": "P21D",
        "strain": "Sprague Dawley",
    }
    src.with_name(src.name + spec.SIDECAR_SUFFIX).write_text(json.dumps(sidecar))
    ingest_paths([landing], lake=str(lake), landing=str(landing))
    row = query(lake, "SELECT subject, species, sex, age, strain, genotype FROM icephys_recordings")
    assert row == [("rat-3", "Rattus norvegicus", "female", "P21D", "Sprague Dawley", None)]
    out = _export(lake, "File_axon_5.abf", tmp_path / "sidecar.nwb")
    with h5py.File(out, "r") as h5:
        assert h5["general/subject/sex"][()].decode() == "F"  # NWB's code
    # the command-line tool, as a DANDI uploader runs it
    cli = Path(sys.executable).with_name("nwbinspector")
    done = subprocess.run(
        [str(cli), str(out), "--config", "dandi", "--threshold", "CRITICAL"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "CRITICAL" not in done.stdout, done.stdout
    assert "check_subject_exists" not in done.stdout


def test_unknown_or_conflicting_sidecar_keys_fail_the_file(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    a = land(landing, "File_axon_5.abf")
    a.with_name(a.name + spec.SIDECAR_SUFFIX).write_text('{"species": "Mus musculus", "eye": "b"}')
    b = land(landing, "17o05027_ic_ramp.abf")
    b.with_name(b.name + spec.SIDECAR_SUFFIX).write_text('{"subject": "m1", "subject_id": "m2"}')
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    reasons = {o.file_name: (o.status, o.reason) for o in summary.outcomes}
    assert reasons["File_axon_5.abf"][0] == "failed"
    assert "unknown keys ['eye']" in reasons["File_axon_5.abf"][1]
    assert reasons["17o05027_ic_ramp.abf"][0] == "failed"
    assert "subject_id" in reasons["17o05027_ic_ramp.abf"][1]


@pytest.mark.parametrize(
    ("value", "days"),
    [
        ("DIV14", 14),
        ("div7", 7),
        ("DIV_21", 21),
        ("P21", 21),
        ("P21D", 21),
        ("p0", 0),
        ("E18", None),
        ("t0", None),
        ("baseline", None),
        ("DIV", None),
        ("P21x", None),
        (None, None),
    ],
)
def test_timepoint_days(value: str | None, days: int | None) -> None:
    assert spec.timepoint_days(value) == days


def test_clean_values_in_the_lake(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    for name, timepoint in (
        ("pclamp11_4ch.abf", "DIV7"),
        ("18425108_abf1.abf", "DIV14"),
        ("171116sh_0016.abf", "t0"),
        ("File_axon_5.abf", "DIV21"),
    ):
        land(landing, name, timepoint=timepoint)
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert {o.status for o in summary.outcomes} == {"published"}
    protocols = dict(query(lake, "SELECT file_name, protocol FROM icephys_recordings"))
    assert protocols["pclamp11_4ch.abf"] is None  # pyabf's 'None' sentinel is not a name
    assert protocols["File_axon_5.abf"] == "step cclamp"
    # ABF1, nA command: float32 -0.05 nA * 1000 = -50.00000074505806 before rounding
    amps = query(
        lake,
        "SELECT DISTINCT s.stim_amp_pa FROM icephys_sweeps s JOIN icephys_recordings r "
        "USING (file_id) WHERE r.file_name = '18425108_abf1.abf'",
    )
    assert amps == [(-50.0,)]
    # ABF2 ramps, DAC step 0.122 pA -> 0.1 pA: the ramp's end level, not 9.99948
    ramps = query(
        lake,
        "SELECT s.stim_amp_pa FROM icephys_sweeps s JOIN icephys_recordings r USING (file_id) "
        "WHERE r.file_name = '171116sh_0016.abf' ORDER BY s.sweep_number",
    )
    assert [a for (a,) in ramps] == [float(10 * k) for k in range(11)]
    expected = {
        "icephys_recordings": {"DIV7": 7, "DIV14": 14, "t0": None, "DIV21": 21},
        "icephys_sweeps": {"DIV7": 7, "DIV14": 14, "t0": None, "DIV21": 21},
        "icephys_spikes": {"t0": None, "DIV21": 21},  # the files that spike
        "icephys_cell_features": {"DIV14": 14, "t0": None, "DIV21": 21},  # not the VC file
    }
    for table, want in expected.items():
        days = dict(query(lake, f"SELECT DISTINCT timepoint, timepoint_days FROM {table}"))
        assert days == want, table
    # the cells view orders by days: DIV7 < DIV14 < DIV21, then timepoints without days
    order = [t for (t,) in query(lake, "SELECT timepoint FROM cells")]
    assert order == ["DIV7", "DIV14", "DIV21", "t0"]


def test_timepoint_days_in_the_mea_tables(tmp_path: Path) -> None:
    from tests.conftest import MEA_DIR

    spike_list = MEA_DIR / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"
    folder = tmp_path / "landing" / "labM" / "untreated" / "DIV3"
    folder.mkdir(parents=True)
    shutil.copyfile(spike_list, folder / spike_list.name)
    lake = tmp_path / "lake"
    summary = ingest_paths(
        [tmp_path / "landing"], lake=str(lake), landing=str(tmp_path / "landing")
    )
    assert summary.counts() == {"published": 1}
    for table in (
        "mea_recordings",
        "mea_spikes",
        "mea_electrode_metrics",
        "mea_well_metrics",
        "well_metrics_by_condition",
    ):
        rows = query(lake, f"SELECT DISTINCT timepoint, timepoint_days FROM {table}")
        assert rows == [("DIV3", 3)], table
