"""MEA plates as NWB: electrodes with wells and treatments, Units, tables, raw; nwbinspector."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import MEA_DIR
from tests.helpers import query
from transforms import formats
from transforms.cli import main
from transforms.pipeline import ingest_paths
from transforms.serve.export import export_plate_nwb
from transforms.synth.plate import generate_plate

SPIKE_LIST = MEA_DIR / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"
EXP_LOG = MEA_DIR / "exampleRecording_1012016_plate1_expLog.csv"
SUBJECT = {"subject": "culture-17", "species": "Mus musculus", "sex": "U", "age": "P0D"}


def critical(path: Path) -> list[str]:
    from nwbinspector import Importance, inspect_nwbfile, load_config

    found = []
    for config in (None, load_config("dandi")):
        for m in inspect_nwbfile(nwbfile_path=path, config=config):
            if m.importance == Importance.CRITICAL:
                found.append(f"{m.check_function_name} at {m.location}: {m.message}")
    return found


@pytest.fixture(scope="module")
def spike_list_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    lake = tmp_path_factory.mktemp("mea") / "lake"
    summary = ingest_paths([SPIKE_LIST], lake=str(lake), lab="labM", plate_map=EXP_LOG)
    assert summary.counts() == {"published": 1}
    (file_id,) = {r[0] for r in query(lake, "SELECT file_id FROM mea_recordings")}
    return lake, file_id


@pytest.mark.slow  # 100,957 spikes on 768 electrodes: about a minute under load
def test_spike_list_plate_as_nwb(spike_list_lake: tuple[Path, str], tmp_path: Path) -> None:
    from pynwb import NWBHDF5IO

    lake, file_id = spike_list_lake
    out = export_plate_nwb(file_id[:10], tmp_path / "plate.nwb", lake=str(lake), metadata=SUBJECT)
    counts = dict(
        query(
            lake,
            "SELECT electrode, count(*) FROM mea_spikes WHERE file_id = ? GROUP BY 1",
            [file_id],
        )
    )
    conditions = dict(query(lake, "SELECT well, condition FROM mea_recordings"))
    n_wells = len(query(lake, "SELECT * FROM mea_well_metrics"))
    with NWBHDF5IO(str(out), mode="r") as io:
        nwb = io.read()
        assert nwb.identifier == file_id and nwb.subject.species == "Mus musculus"
        el = nwb.electrodes.to_dataframe()
        assert {"well", "well_row", "well_column", "row", "column", "treatment"} <= set(el.columns)
        first = el.iloc[0]
        assert first.electrode_name == f"{first.well}_{first.column}{first.row}"
        assert all(el.treatment == el.well.map(conditions))
        units = nwb.units.to_dataframe()
        assert len(units) == len(el)  # one unit per electrode
        got = {r.electrode_name: len(r.spike_times) for r in units.itertuples()}
        assert {e: n for e, n in got.items() if n} == counts
        assert sum(got.values()) == sum(counts.values()) > 0
        some = units[units.electrode_name == max(counts, key=counts.get)].iloc[0]
        assert np.all(np.diff(some.spike_times) >= 0) and len(some.amplitude_uv) == len(
            some.spike_times
        )
        plate = nwb.processing["plate"]
        pm = plate["plate_map"].to_dataframe()
        assert dict(zip(pm.well, pm.treatment, strict=True)) == conditions
        wm = plate["well_metrics"].to_dataframe()
        assert len(wm) == n_wells and "weighted_mean_firing_rate_hz" in wm.columns
        assert "electrode_metrics" in plate.data_interfaces
    assert critical(out) == []


def test_raw_plate_from_the_archive_as_nwb(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    plate = generate_plate(
        landing / "labM" / "WT" / "DIV14",
        n_wells=24,
        duration_s=2.2,
        seed=4,
        noise_rms_uv=(1.0, 2.5),
        write_spk=False,
    )
    lake = tmp_path / "lake"
    assert ingest_paths([landing], lake=str(lake), landing=str(landing)).counts() == {
        "published": 1
    }
    (file_id,) = {r[0] for r in query(lake, "SELECT file_id FROM mea_recordings")}
    want = formats.open_continuous(plate.raw_path).read_counts(0, 27_500)
    assert main(["archive", file_id, "--lake", str(lake), "--delete-source"]) == 0
    out = tmp_path / "raw.nwb"
    args = ["export-nwb", file_id, str(out), "--lake", str(lake), "--raw"]
    for key, value in SUBJECT.items():
        args += ["--meta", f"{key}={value}"]
    assert main(args) == 0
    with h5py.File(out, "r") as h5:
        data = h5["acquisition/ElectricalSeries/data"]
        assert data.dtype == np.int16 and data.compression == "gzip"
        assert data.chunks == (12_500, 16)  # 1 s x one well
        np.testing.assert_array_equal(data[:], want)
    assert critical(out) == []
