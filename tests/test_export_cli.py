"""`neurocyte export-nwb`: a published recording with its features, DANDI-ready."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pyabf
import pytest

from tests.conftest import ABF_DIR
from tests.helpers import land, query
from transforms.cli import main
from transforms.pipeline import ingest_paths


def test_export_nwb_roundtrip_and_inspector(tmp_path: Path, capsys) -> None:
    from nwbinspector import Importance, inspect_nwbfile

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    src = land(landing, "File_axon_5.abf")
    src.with_name(src.name + ".meta.json").write_text('{"subject": "mouse-7", "cell_id": "c5"}')
    ingest_paths([landing], lake=str(lake), landing=str(landing))
    (file_id,) = query(lake, "SELECT file_id FROM icephys_recordings")[0]
    out = tmp_path / "out.nwb"
    assert main(["export-nwb", file_id[:12], str(out), "--lake", str(lake)]) == 0
    assert out.is_file()

    abf = pyabf.ABF(str(ABF_DIR / "File_axon_5.abf"))
    with h5py.File(out, "r") as f:
        assert f["general/intracellular_ephys/intracellular_recordings"] is not None
        feats = f["processing/icephys_features"]
        assert "sweeps" in feats or any("sweep" in k for k in feats)
        series = sorted(k for k in f["acquisition"])
        assert len(series) == abf.sweepCount
        first = f["acquisition"][series[0]]
        data = first["data"][:] * first["data"].attrs["conversion"] * 1e3  # V -> mV
        abf.setSweep(0)
        np.testing.assert_allclose(data, abf.sweepY, atol=1e-3)
    critical = [
        m for m in inspect_nwbfile(nwbfile_path=str(out)) if m.importance == Importance.CRITICAL
    ]
    assert critical == []


def test_export_unknown_file_id_is_a_clear_error(tmp_path: Path, capsys) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    land(landing, "File_axon_5.abf")
    ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert (
        main(["export-nwb", "deadbeefdeadbeef", str(tmp_path / "x.nwb"), "--lake", str(lake)]) == 2
    )
    assert "no published recording" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export-nwb"])


def test_raw_cli_returns_the_window_of_a_sweep(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    land(landing, "File_axon_5.abf")
    ingest_paths([landing], lake=str(lake), landing=str(landing))
    (file_id,) = query(lake, "SELECT file_id FROM icephys_recordings")[0]
    out = tmp_path / "snippet.npy"
    args = ["raw", file_id, "--sweep", "3", "--start", "0.1", "--stop", "0.35"]
    assert main([*args, "--out", str(out), "--lake", str(lake)]) == 0
    got = np.load(out)
    abf = pyabf.ABF(str(ABF_DIR / "File_axon_5.abf"))
    abf.setSweep(3)
    fs = abf.sampleRate
    expected = abf.sweepY[round(0.1 * fs) : round(0.35 * fs)]
    np.testing.assert_allclose(np.ravel(got), expected, atol=1e-4)
