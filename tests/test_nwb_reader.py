"""read_nwb on the real NWB 2.4 sample, on legacy layouts written with pynwb, and on bad files.

Expected values come from h5py reads of the same file and from the ABF header the
converter stored in the sample's /general/notes (step epoch of -2.00 nA, +0.20 nA a
sweep, samples 312..4311), never from read_nwb itself.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import NWB_DIR
from transforms.errors import DecodeError, UnsupportedRecording
from transforms.formats.nwb_icephys import read_nwb

SAMPLE = NWB_DIR / "99111002.nwb"
N_SWEEPS = 16


@pytest.fixture(scope="module")
def sample():
    if not SAMPLE.is_file():
        pytest.fail(f"sample NWB file missing: {SAMPLE}")
    return read_nwb(SAMPLE)


def _h5_series(group: h5py.Group) -> tuple[np.ndarray, float, float, float]:
    data = group["data"]
    values = data[:].astype(np.float64) * float(data.attrs["conversion"])
    rate = float(group["starting_time"].attrs["rate"])
    return values, float(data.attrs["conversion"]), rate, float(group["starting_time"][()])


def test_sample_shape_and_header(sample) -> None:
    with h5py.File(SAMPLE, "r") as h5:
        version = h5.attrs["nwb_version"]
        start = h5["session_start_time"][()].decode()
        species = h5["general/subject/species"][()].decode()
        n_rows = h5["general/intracellular_ephys/intracellular_recordings/id"].shape[0]
    assert sample.source_format == "nwb"
    assert sample.format_version == version == "2.4.0"
    assert len(sample.sweeps) == n_rows == N_SWEEPS
    assert sample.recorded_at == datetime.fromisoformat(start)
    assert sample.recorded_at == datetime(1999, 1, 11, 12, 43, 13, tzinfo=UTC)
    assert sample.clamp_mode == "current_clamp"
    assert sample.protocol == "Step"
    assert sample.metadata["species"] == species
    assert sample.metadata["institution"] == "University College London"
    assert sample.metadata["electrode"] == "Electrode 1"
    assert all(isinstance(v, str) for v in sample.metadata.values())
    assert sample.qc_flags == ()


def test_sample_sweep_numbers_are_sequential(sample) -> None:
    # The file stores no sweep_number: sweeps are numbered in table order from 0.
    assert [s.number for s in sample.sweeps] == list(range(N_SWEEPS))


def test_sample_traces_match_h5py(sample) -> None:
    with h5py.File(SAMPLE, "r") as h5:
        for index, sweep in enumerate(sample.sweeps):
            name = f"Step__{index + 1}"  # the converter's 1-based names
            volts, _, rate, t0 = _h5_series(h5[f"acquisition/ic__{name}"])
            amps, _, stim_rate, _ = _h5_series(h5[f"stimulus/presentation/ics__{name}"])
            assert sweep.sampling_rate_hz == rate == stim_rate == 10000.0
            assert sweep.start_time_s == t0 == 2.0 * index  # sweepIntervalSec = 2.0
            assert sweep.response_unit == "mV" and sweep.command_unit == "pA"
            assert sweep.response.dtype == np.float64 and sweep.command is not None
            np.testing.assert_allclose(sweep.response, volts * 1e3, rtol=1e-12)
            np.testing.assert_allclose(sweep.command, amps * 1e12, rtol=1e-12, atol=1e-9)
            assert sweep.n_samples == 7168


def test_sample_step_amplitudes_match_abf_epoch_table(sample) -> None:
    for k, sweep in enumerate(sample.sweeps):
        expected_pa = (-2.0 + 0.2 * k) * 1000.0  # nA -> pA, epoch B of the ABF header
        assert sweep.command is not None
        np.testing.assert_allclose(sweep.command[312:4312], expected_pa, atol=1e-3)
        assert np.all(sweep.command[:312] == 0.0) and np.all(sweep.command[4312:] == 0.0)
    # Membrane potential stays in a physiological mV range (not volts, not µV).
    first = sample.sweeps[0].response
    assert -200.0 < first.min() < first.max() < 100.0


# --- legacy layout: series in /acquisition and /stimulus, no icephys tables ---------------


def _legacy_file(path: Path, *, with_sweep_numbers: bool, voltage_clamp: bool) -> dict:
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.icephys import (
        CurrentClampSeries,
        CurrentClampStimulusSeries,
        VoltageClampSeries,
        VoltageClampStimulusSeries,
    )

    nwb = NWBFile(
        session_description="legacy layout test",
        identifier="legacy",
        session_start_time=datetime(2021, 5, 4, 10, 0, tzinfo=UTC),
    )
    device = nwb.create_device(name="amp")
    electrode = nwb.create_icephys_electrode(name="e0", description="test", device=device)
    rng = np.random.default_rng(7)
    expected: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    resp_cls, stim_cls = (
        (VoltageClampSeries, VoltageClampStimulusSeries)
        if voltage_clamp
        else (CurrentClampSeries, CurrentClampStimulusSeries)
    )
    # Stored in SI with conversion 1 for the response, and in mV/pA-like raw units
    # with a conversion for the stimulus, to exercise both scalings.
    for sweep in (3, 5, 8):
        response_si = rng.normal(size=500) * (1e-12 if voltage_clamp else 1e-3)
        stim_raw = np.full(500, float(sweep), dtype=np.float64)
        stim_conv = 1e-3 if voltage_clamp else 1e-12  # mV -> V, pA -> A
        numbers = {"sweep_number": np.uint64(sweep)} if with_sweep_numbers else {}
        nwb.add_acquisition(
            resp_cls(
                name=f"data_{sweep:05d}_AD0",
                data=response_si,
                electrode=electrode,
                rate=20000.0,
                starting_time=float(sweep),
                **numbers,
            ),
            use_sweep_table=False,
        )
        nwb.add_stimulus(
            stim_cls(
                name=f"data_{sweep:05d}_DA0",
                data=stim_raw,
                electrode=electrode,
                rate=20000.0,
                starting_time=float(sweep),
                conversion=stim_conv,
                **numbers,
            ),
            use_sweep_table=False,
        )
        # Hand conversion to the model's units.
        resp_model = response_si * (1e12 if voltage_clamp else 1e3)
        expected[sweep] = (resp_model, stim_raw)  # stim_raw is already mV / pA
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return expected


@pytest.mark.parametrize("voltage_clamp", [False, True])
def test_legacy_layout_matched_by_sweep_number(tmp_path: Path, voltage_clamp: bool) -> None:
    path = tmp_path / "legacy.nwb"
    expected = _legacy_file(path, with_sweep_numbers=True, voltage_clamp=voltage_clamp)
    recording = read_nwb(path)
    assert [s.number for s in recording.sweeps] == [3, 5, 8]
    mode = "voltage_clamp" if voltage_clamp else "current_clamp"
    assert recording.clamp_mode == mode
    for sweep in recording.sweeps:
        response, command = expected[sweep.number]
        assert sweep.sampling_rate_hz == 20000.0
        assert sweep.start_time_s == float(sweep.number)
        np.testing.assert_allclose(sweep.response, response, rtol=1e-12)
        assert sweep.command is not None
        np.testing.assert_allclose(sweep.command, command, rtol=1e-12)
        assert sweep.response_unit == ("pA" if voltage_clamp else "mV")


def test_legacy_layout_matched_by_name(tmp_path: Path) -> None:
    path = tmp_path / "legacy_names.nwb"
    expected = _legacy_file(path, with_sweep_numbers=False, voltage_clamp=False)
    recording = read_nwb(path)
    # No sweep_number anywhere: numbered 0.. in start-time order, stimulus paired by name.
    assert [s.number for s in recording.sweeps] == [0, 1, 2]
    for sweep, original in zip(recording.sweeps, (3, 5, 8), strict=True):
        assert sweep.command is not None
        np.testing.assert_allclose(sweep.command, expected[original][1], rtol=1e-12)
        np.testing.assert_allclose(sweep.response, expected[original][0], rtol=1e-12)


# --- failures -----------------------------------------------------------------------------


def test_zero_length_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.nwb"
    path.write_bytes(b"")
    with pytest.raises(DecodeError, match=r"empty\.nwb: zero-length"):
        read_nwb(path)


def test_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "text.nwb"
    path.write_text("this is not an HDF5 file\n" * 20)
    with pytest.raises(DecodeError, match=r"text\.nwb: not an HDF5 file"):
        read_nwb(path)


def test_hdf5_but_not_nwb(tmp_path: Path) -> None:
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as h5:
        h5["x"] = np.arange(10)
    with pytest.raises(DecodeError, match=r"plain\.h5: .*without an nwb_version"):
        read_nwb(path)


def test_nwb1_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "old.nwb"
    with h5py.File(path, "w") as h5:
        h5["nwb_version"] = "NWB-1.0.6"
    with pytest.raises(DecodeError, match=r"old\.nwb: NWB version 'NWB-1\.0\.6'"):
        read_nwb(path)


def test_truncated_sample(tmp_path: Path) -> None:
    path = tmp_path / "truncated.nwb"
    shutil.copyfile(SAMPLE, path)
    with path.open("r+b") as fh:
        fh.truncate(SAMPLE.stat().st_size // 2)
    with pytest.raises(DecodeError, match=r"truncated\.nwb: HDF5 file cannot be opened"):
        read_nwb(path)


def test_nwb_without_icephys(tmp_path: Path) -> None:
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    path = tmp_path / "behaviour.nwb"
    nwb = NWBFile(
        session_description="no patch clamp here",
        identifier="b",
        session_start_time=datetime(2020, 1, 1, tzinfo=UTC),
    )
    nwb.add_acquisition(TimeSeries(name="speed", data=np.ones(10), unit="m/s", rate=10.0))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    with pytest.raises(UnsupportedRecording, match=r"behaviour\.nwb: .*without intracellular"):
        read_nwb(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match=r"nope\.nwb: no such file"):
        read_nwb(tmp_path / "nope.nwb")


def test_icephys_tables_two_electrodes(tmp_path: Path) -> None:
    """Paired recording: two electrodes a sweep; the first electrode's sweeps are kept."""
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.icephys import CurrentClampSeries, CurrentClampStimulusSeries

    nwb = NWBFile(
        session_description="paired",
        identifier="paired",
        session_start_time=datetime(2022, 2, 2, tzinfo=UTC),
    )
    device = nwb.create_device(name="amp")
    electrodes = [
        nwb.create_icephys_electrode(name=f"e{i}", description="pipette", device=device)
        for i in range(2)
    ]
    levels_pa = {10: -50.0, 11: 25.0}
    for sweep, level in levels_pa.items():
        rows = []
        for i, electrode in enumerate(electrodes):
            stim = CurrentClampStimulusSeries(
                name=f"stim_{sweep}_{i}",
                data=np.full(100, level * 1e-12),  # amperes, conversion 1
                electrode=electrode,
                rate=5000.0,
                sweep_number=np.uint64(sweep),
            )
            resp = CurrentClampSeries(
                name=f"resp_{sweep}_{i}",
                data=np.full(100, -0.070 + 0.001 * i),  # volts
                electrode=electrode,
                rate=5000.0,
                sweep_number=np.uint64(sweep),
            )
            rows.append(
                nwb.add_intracellular_recording(electrode=electrode, stimulus=stim, response=resp)
            )
        nwb.add_icephys_simultaneous_recording(recordings=rows)
    path = tmp_path / "paired.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)

    recording = read_nwb(path)
    assert recording.qc_flags == ("multiple_electrodes",)
    assert recording.channel_names == ("e0", "e1")
    assert [s.number for s in recording.sweeps] == [10, 11]
    for sweep in recording.sweeps:
        assert sweep.sampling_rate_hz == 5000.0
        np.testing.assert_allclose(sweep.response, -70.0)  # e0: -0.070 V
        assert sweep.command is not None
        np.testing.assert_allclose(sweep.command, levels_pa[sweep.number])
