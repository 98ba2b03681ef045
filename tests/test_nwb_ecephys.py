"""NWB extracellular output and input: round trip against the Axion source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pynwb import NWBHDF5IO

from transforms.errors import DecodeError
from transforms.formats.axion import open_axion
from transforms.formats.nwb_ecephys import (
    electrode_position_um,
    open_nwb_ecephys,
    write_nwb_ecephys,
)
from transforms.mea.detect import detect_spikes
from transforms.synth.plate import generate_plate


def test_nwb_round_trip_and_detection(tmp_path: Path) -> None:
    plate = generate_plate(tmp_path, n_wells=48, duration_s=3.0, snr=6.0, seed=5, write_nwb=True)
    raw = open_axion(plate.raw_path)
    with open_nwb_ecephys(plate.nwb_path) as nwb:
        assert nwb.layout is raw.layout and nwb.electrodes == raw.electrodes
        assert nwb.sampling_rate_hz == raw.sampling_rate_hz and nwb.n_samples == raw.n_samples
        assert nwb.voltage_scale_uv_per_count == pytest.approx(raw.voltage_scale_uv_per_count)
        np.testing.assert_array_equal(
            nwb.read(0.5, 1.5, wells=["C4"]), raw.read(0.5, 1.5, wells=["C4"])
        )
        sel = ["F8_44", "A1_11", "C2_32"]
        np.testing.assert_array_equal(
            nwb.read(1, 2, electrodes=sel), raw.read(1, 2, electrodes=sel)
        )
        a = detect_spikes(raw, wells=["A1", "B2", "F8"], chunk_s=0.5)
        b = detect_spikes(nwb, wells=["A1", "B2", "F8"], chunk_s=0.7)
        assert len(a) > 0 and a.equals(b)  # same stored counts, same spikes
    with NWBHDF5IO(str(plate.nwb_path), mode="r") as io:
        f = io.read()
        table = f.electrodes.to_dataframe()
        assert list(table["electrode_name"]) == list(raw.electrodes)
        assert list(table["well"]) == [e.split("_")[0] for e in raw.electrodes]
        row = table[table["electrode_name"] == "B3_42"].iloc[0]
        assert (row["x"], row["y"]) == electrode_position_um(raw.layout, "B3_42")
        assert f.electrode_groups["B3"].description.endswith(f"condition {plate.condition['B3']}")


def test_nwb_window_and_subset(tmp_path: Path) -> None:
    plate = generate_plate(tmp_path, n_wells=96, duration_s=2.0, seed=9, write_spk=False)
    raw = open_axion(plate.raw_path)
    out = write_nwb_ecephys(
        tmp_path / "sub.nwb", raw, start_s=0.4, stop_s=1.2, wells=["H12", "A1"], buffer_s=0.3
    )
    with open_nwb_ecephys(out) as nwb:
        assert nwb.start_time_s == pytest.approx(0.4)
        assert nwb.n_samples == 10000
        assert nwb.electrodes == tuple(
            e for w in ("H12", "A1") for e in raw.electrodes if e.startswith(w + "_")
        )
        np.testing.assert_array_equal(nwb.read(0, 0.8), raw.read(0.4, 1.2, wells=["H12", "A1"]))
        chunks = list(nwb.iter_chunks(chunk_s=0.33, electrodes=["A1_33"]))
        np.testing.assert_array_equal(
            np.concatenate([c.data for c in chunks]), raw.read(0.4, 1.2, electrodes=["A1_33"])
        )


def test_not_nwb(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nwb"
    bad.write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(DecodeError, match=r"bad\.nwb"):
        open_nwb_ecephys(bad)
