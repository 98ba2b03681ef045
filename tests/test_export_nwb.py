"""export_nwb on real ABF recordings: h5py checks of the written file, nwbinspector, round trip.

The written file is checked with h5py (independent of pynwb and of read_nwb); the
round trip compares read_nwb's arrays with read_abf's, within float32 rounding
because traces are stored as float32.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import ABF_DIR
from transforms.errors import InvalidArgument, UnsupportedRecording
from transforms.formats.abf import read_abf
from transforms.formats.nwb_icephys import read_nwb
from transforms.formats.nwb_icephys_export import FALLBACK_SESSION_START, export_nwb
from transforms.recording.icephys import IcephysRecording

ROUND_TRIP_FILES = ("171116sh_0018.abf", "File_axon_5.abf", "17o05024_vc_steps.abf")
META = {
    "subject": "mouse-17",
    "species": "Mus musculus",
    "sex": "F",
    "subject_description": "C57BL/6J mouse, acute slice",
    "age": "P35D",
    "cell_id": "cell-3",
    "lab": "testlab",
    "institution": "Test Institute",
    "experimenter": "Doe, Jane",
    "condition": "control",
    "timepoint": "t0",
    "rig": "rig-2",  # not a known key: kept in the notes
}


def _features(recording: IcephysRecording) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Small feature tables computed in the test from the traces themselves."""
    numbers = [s.number for s in recording.sweeps]
    baseline = [float(np.mean(s.response[:100])) for s in recording.sweeps]
    peak = [float(np.max(s.response)) for s in recording.sweeps]
    sweeps = pa.table(
        {
            "sweep_number": pa.array(numbers, pa.int64()),
            "baseline_mv": pa.array(baseline, pa.float64()),
            "peak_mv": pa.array(peak, pa.float64()),
            # nullable int column: written as float64 with NaN
            "n_spikes": pa.array([None] + [2] * (len(numbers) - 1), pa.int64()),
            "clamp_mode": pa.array([s.clamp_mode for s in recording.sweeps]),
        }
    )
    spikes = pa.table(
        {
            "sweep_number": pa.array([numbers[-1], numbers[-1]], pa.int64()),
            "threshold_t_s": pa.array([0.101, 0.153]),
            "width_ms": pa.array([0.8, 0.9]),
            "isi_ms": pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float64())),
        }
    )
    cell = pa.table({"input_resistance_mohm": [123.4], "rheobase_pa": [50.0], "file_id": ["x"]})
    return sweeps, spikes, cell


@pytest.fixture(scope="module", params=ROUND_TRIP_FILES)
def exported(request, tmp_path_factory) -> tuple[str, IcephysRecording, Path, tuple]:
    name = request.param
    recording = read_abf(ABF_DIR / name)
    tables = _features(recording)
    out = tmp_path_factory.mktemp("nwb") / f"{Path(name).stem}.nwb"
    result = export_nwb(
        recording,
        out,
        file_id=Path(name).stem,
        metadata=META,
        sweeps=tables[0],
        spikes=tables[1],
        cell=tables[2],
    )
    assert result == out
    return name, recording, out, tables


def test_written_file_structure_with_h5py(exported) -> None:
    name, recording, out, _ = exported
    current_clamp = recording.clamp_mode == "current_clamp"
    with h5py.File(out, "r") as h5:
        assert h5["identifier"][()].decode() == Path(name).stem
        assert h5["general/subject/subject_id"][()].decode() == "mouse-17"
        assert h5["general/subject/sex"][()].decode() == "F"
        assert h5["general/lab"][()].decode() == "testlab"
        assert "rig: rig-2" in h5["general/notes"][()].decode()
        start = datetime.fromisoformat(h5["session_start_time"][()].decode())
        assert recording.recorded_at is not None
        # ABF wall time without zone is labelled UTC.
        assert start == recording.recorded_at.replace(tzinfo=UTC)
        icephys = h5["general/intracellular_ephys"]
        assert icephys["intracellular_recordings/id"].shape[0] == len(recording.sweeps)
        assert icephys["simultaneous_recordings/id"].shape[0] == len(recording.sweeps)
        stim_type = icephys["sequential_recordings/stimulus_type"][0].decode()
        assert stim_type == recording.protocol
        kind = "current_clamp" if current_clamp else "voltage_clamp"
        first = recording.sweeps[0]
        resp = h5[f"acquisition/{kind}_response_{first.number:05d}"]
        stim = h5[f"stimulus/presentation/{kind}_stimulus_{first.number:05d}"]
        assert resp.attrs["neurodata_type"] == (
            "CurrentClampSeries" if current_clamp else "VoltageClampSeries"
        )
        assert resp["data"].attrs["unit"] == ("volts" if current_clamp else "amperes")
        assert stim["data"].attrs["unit"] == ("amperes" if current_clamp else "volts")
        # data * conversion is SI: hand conversion of the ABF trace (mV -> V or pA -> A).
        to_si = 1e-3 if current_clamp else 1e-12
        si = resp["data"][:].astype(np.float64) * resp["data"].attrs["conversion"]
        np.testing.assert_allclose(si, first.response * to_si, rtol=1e-6, atol=1e-7 * to_si)
        assert resp["starting_time"].attrs["rate"] == first.sampling_rate_hz
        assert int(resp.attrs["sweep_number"]) == first.number


def test_feature_tables_with_h5py(exported) -> None:
    _, _, out, (sweeps, _spikes, cell) = exported
    with h5py.File(out, "r") as h5:
        module = h5["processing/icephys_features"]
        assert set(module) == {"sweeps", "spikes", "cell"}
        table = module["sweeps"]
        np.testing.assert_array_equal(table["sweep_number"][:], sweeps["sweep_number"].to_numpy())
        np.testing.assert_allclose(table["baseline_mv"][:], sweeps["baseline_mv"].to_numpy())
        assert "unit: mV" in table["baseline_mv"].attrs["description"]
        n_spikes = table["n_spikes"][:]
        assert np.isnan(n_spikes[0]) and np.all(n_spikes[1:] == 2.0)
        assert [v.decode() for v in table["clamp_mode"][:]] == sweeps["clamp_mode"].to_pylist()
        ragged = module["spikes"]
        assert list(ragged["isi_ms_index"][:]) == [2, 3]
        np.testing.assert_allclose(ragged["isi_ms"][:], [1.0, 2.0, 3.0])
        assert "unit: ms" in ragged["width_ms"].attrs["description"]
        assert "unit: MOhm" in module["cell/input_resistance_mohm"].attrs["description"]
        # Region columns point at the intracellular_recordings rows of those sweeps:
        # rows are written in sweep order, so row k holds the k-th sweep.
        numbers = sweeps["sweep_number"].to_pylist()
        region = table["intracellular_recording"]
        assert h5[region.attrs["table"]].name.endswith("intracellular_recordings")
        assert list(region[:]) == list(range(len(numbers)))
        assert list(ragged["intracellular_recording"][:]) == [len(numbers) - 1] * 2
        assert "intracellular_recording" not in module["cell"]
        assert module["cell/rheobase_pa"][0] == cell["rheobase_pa"][0].as_py()


def test_nwbinspector_reports_no_critical(exported) -> None:
    from nwbinspector import Importance, inspect_nwbfile

    _, _, out, _ = exported
    messages = list(inspect_nwbfile(nwbfile_path=out))
    for m in messages:
        print(f"{m.importance.name}: {m.check_function_name} at {m.location}: {m.message}")
    critical = [m for m in messages if m.importance == Importance.CRITICAL]
    assert critical == []
    # Also under the DANDI configuration, which promotes the subject checks.
    from nwbinspector import load_config

    dandi = list(inspect_nwbfile(nwbfile_path=out, config=load_config("dandi")))
    assert [m for m in dandi if m.importance == Importance.CRITICAL] == []


def test_round_trip(exported) -> None:
    _, recording, out, _ = exported
    back = read_nwb(out)
    assert back.source_format == "nwb"
    assert back.format_version.startswith("2.")
    assert back.protocol == recording.protocol
    assert [s.number for s in back.sweeps] == [s.number for s in recording.sweeps]
    assert back.metadata["subject"] == "mouse-17"
    assert back.metadata["cell_id"] == "cell-3"
    assert back.recorded_at == recording.recorded_at.replace(tzinfo=UTC)
    for original, copy in zip(recording.sweeps, back.sweeps, strict=True):
        assert copy.clamp_mode == original.clamp_mode
        assert copy.sampling_rate_hz == original.sampling_rate_hz
        assert copy.start_time_s == pytest.approx(original.start_time_s)
        assert copy.response_unit == original.response_unit
        assert copy.response.dtype == np.float64
        # float32 storage: relative rounding 2**-24 of the largest magnitude.
        scale = np.max(np.abs(original.response))
        np.testing.assert_allclose(copy.response, original.response, atol=scale * 2**-23)
        assert original.command is not None and copy.command is not None
        cscale = max(np.max(np.abs(original.command)), 1.0)
        np.testing.assert_allclose(copy.command, original.command, atol=cscale * 2**-23)


# --- metadata edge cases and errors -------------------------------------------------------


@pytest.fixture(scope="module")
def small_recording() -> IcephysRecording:
    recording = read_abf(ABF_DIR / "File_axon_5.abf")
    return replace(recording, sweeps=recording.sweeps[:2])


def test_without_subject_is_flagged_critical(small_recording, tmp_path: Path) -> None:
    from nwbinspector import Importance, inspect_nwbfile

    out = export_nwb(small_recording, tmp_path / "nosubject.nwb", file_id="ns", metadata={})
    critical = [
        m.check_function_name
        for m in inspect_nwbfile(nwbfile_path=out)
        if m.importance == Importance.CRITICAL
    ]
    assert critical == ["check_subject_exists"]
    with h5py.File(out, "r") as h5:
        assert "processing" not in h5 or "icephys_features" not in h5["processing"]


def test_session_start_fallbacks(small_recording, tmp_path: Path) -> None:
    undated = replace(small_recording, recorded_at=None)
    out = export_nwb(undated, tmp_path / "undated.nwb", file_id="u", metadata={"subject": "s"})
    with h5py.File(out, "r") as h5:
        start = datetime.fromisoformat(h5["session_start_time"][()].decode())
        assert "no valid acquisition date" in h5["general/notes"][()].decode()
    assert start == FALLBACK_SESSION_START == datetime(1970, 1, 1, tzinfo=UTC)

    given = export_nwb(
        undated,
        tmp_path / "given.nwb",
        file_id="g",
        metadata={"subject": "s", "session_start_time": "2019-03-02T08:30:00+01:00"},
    )
    with h5py.File(given, "r") as h5:
        start = datetime.fromisoformat(h5["session_start_time"][()].decode())
    assert start == datetime(2019, 3, 2, 7, 30, tzinfo=UTC)


def test_empty_feature_table_is_left_out(small_recording, tmp_path: Path) -> None:
    empty = pa.table({"threshold_t_s": pa.array([], pa.float64())})
    cell = pa.table({"rheobase_pa": [20.0]})
    out = export_nwb(
        small_recording,
        tmp_path / "f.nwb",
        file_id="f",
        metadata={"subject": "s"},
        spikes=empty,
        cell=cell,
    )
    with h5py.File(out, "r") as h5:
        assert set(h5["processing/icephys_features"]) == {"cell"}


def test_errors(small_recording, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="file_id"):
        export_nwb(small_recording, tmp_path / "a.nwb", file_id=" ", metadata={})
    with pytest.raises(InvalidArgument, match="'subject' must be a string"):
        export_nwb(small_recording, tmp_path / "b.nwb", file_id="b", metadata={"subject": 3})  # type: ignore[dict-item]
    with pytest.raises(UnsupportedRecording, match="no sweeps"):
        export_nwb(
            replace(small_recording, sweeps=()), tmp_path / "c.nwb", file_id="c", metadata={}
        )
    with pytest.raises(InvalidArgument, match="not ISO 8601"):
        export_nwb(
            replace(small_recording, recorded_at=None),
            tmp_path / "d.nwb",
            file_id="d",
            metadata={"session_start_time": "yesterday"},
        )
    bad = pa.table({"id": [1, 2]})
    with pytest.raises(InvalidArgument, match="'id' clashes"):
        export_nwb(small_recording, tmp_path / "e.nwb", file_id="e", metadata={}, sweeps=bad)
    nested = pa.table({"x": pa.array([{"a": 1}], pa.struct([("a", pa.int64())]))})
    with pytest.raises(InvalidArgument, match="'x' has unsupported type"):
        export_nwb(small_recording, tmp_path / "f.nwb", file_id="f", metadata={}, cell=nested)
    assert not any(tmp_path.iterdir())  # nothing half-written is left behind


def test_features_module_output_if_available(tmp_path: Path) -> None:
    icephys = pytest.importorskip("transforms.icephys.extract")
    recording = read_abf(ABF_DIR / "171116sh_0018.abf")
    result = icephys.extract_features(recording)
    out = export_nwb(
        recording,
        tmp_path / "features.nwb",
        file_id="features",
        metadata={"subject": "s", "sex": "M"},
        sweeps=result.sweeps,
        spikes=result.spikes,
        cell=result.cell,
    )
    from nwbinspector import Importance, inspect_nwbfile

    messages = list(inspect_nwbfile(nwbfile_path=out))
    for m in messages:
        print(f"{m.importance.name}: {m.check_function_name} at {m.location}: {m.message}")
    assert [m for m in messages if m.importance == Importance.CRITICAL] == []
    with h5py.File(out, "r") as h5:
        module = h5["processing/icephys_features"]
        description = module["sweeps/filter_khz"].attrs["description"]
        assert "unit: kHz" in description
        for name in ("sweeps", "spikes", "cell"):
            table = getattr(result, name)
            if table.num_rows:
                assert module[f"{name}/id"].shape[0] == table.num_rows
                assert set(table.column_names) <= set(module[name])


@pytest.mark.parametrize("name", ["2020_07_29_0062.abf", "invalidDate-abf1.abf"])
def test_round_trip_without_command(name: str, tmp_path: Path) -> None:
    # Gap-free current clamp, and an ABF1 voltage-clamp file with no valid date:
    # neither has a command waveform, so the recordings-table rows have no stimulus.
    recording = read_abf(ABF_DIR / name)
    assert all(s.command is None for s in recording.sweeps)
    out = export_nwb(recording, tmp_path / "x.nwb", file_id="x", metadata={"subject": "s"})
    with h5py.File(out, "r") as h5:
        assert "presentation" not in h5["stimulus"] or len(h5["stimulus/presentation"]) == 0
        stim_refs = h5["general/intracellular_ephys/intracellular_recordings/stimuli/stimulus"]
        assert all(int(ref[0]) == -1 for ref in stim_refs[:])  # (-1, -1, ...) = no stimulus
    back = read_nwb(out)
    assert [s.number for s in back.sweeps] == [s.number for s in recording.sweeps]
    assert back.clamp_mode == recording.clamp_mode
    expected_start = (
        FALLBACK_SESSION_START
        if recording.recorded_at is None
        else recording.recorded_at.replace(tzinfo=UTC)
    )
    assert back.recorded_at == expected_start
    for original, copy in zip(recording.sweeps, back.sweeps, strict=True):
        assert copy.command is None
        scale = np.max(np.abs(original.response))
        np.testing.assert_allclose(copy.response, original.response, atol=scale * 2**-23)
