"""Legacy-layout ``.spk`` files (BlockVectorHeader 0x03 + extension 0x05), as AxIS 3.6
still writes them, and every plate type of the format document, on generated files.

The layout reproduced is the one the research found in two real AxIS 3.6.1.14 files
(research/mea/FINDINGS.md section 4.1; the files themselves are not committed):
BlockVectorHeader at 1024, ChannelArray of only the recorded wells, one NotesArray
record (NotesStart = its offset), the extension with the AxIS settings as CRLF text,
the data entry at FirstBlock, then the tags.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from transforms.formats import read_plate
from transforms.formats.axion import (
    SpikeRecords,
    WellTreatment,
    open_axion,
    write_axion_spk,
    write_axion_spk_legacy,
)
from transforms.formats.axion._format import E_BV_DATA, E_BV_HEADER, E_BV_HEADER_EXT
from transforms.recording.plate import LAYOUTS, PLATE_TYPES

FS = 12500.0
#: The extension text of a batch-processed AxIS 3.6.1.14 .spk (abridged; µ as '?').
SETTINGS = "\r\n".join(
    [
        "",
        "Maestro Edge (Maestro-299) Settings,",
        "Original File Time,05/09/2024 12:03:00",
        "Sampling Frequency,12.5 kHz",
        "Voltage Scale,-5.484861781483107E-08 V/sample",
        "Experiment Start Time,05/09/2024 11:59:09",
        "Plate Type,CytoView MEA 24",
        "Digital High Pass Filter,200 Hz IIR",
        "Plate Serial Number,89-0032",
        "AxIS Version,3.6.1.14",
        "",
        "AxIS Batch Process,",
        "AxIS Version,3.6.1.14",
        "Requested File Section,0s to 10m0s",
        "Actual File Section Run,0s to 10m0s",
        "",
        "Spike Detector Settings,",
        "Method,Adaptive Threshold Crossing",
        "Threshold,6",
        "Pre-Spike Duration,0.84 ms",
        "Coincidence Event Window,160 ?s",
        "",
    ]
)
#: The 12 wells "on" in the real files' plate map (B1-B6, C1-C3, C5, C6, D5).
WELLS = ("B1", "B2", "B3", "B4", "B5", "B6", "C1", "C2", "C3", "C5", "C6", "D5")


def _records(electrodes: list[str], n: int, seed: int, *, first_s: float = 0.01) -> SpikeRecords:
    rng = np.random.default_rng(seed)
    start = np.sort(rng.integers(round(first_s * FS), round(599.9 * FS), n)).astype(np.int64)
    names = rng.choice(np.array(electrodes, dtype=object), n)
    waves = rng.normal(0, 5, (n, 38))
    waves[:, 11] = -rng.uniform(20, 60, n)
    return SpikeRecords(names, start, waves, 11, 2.0, 6.0)


def _layout_24_recorded() -> list[str]:
    layout = LAYOUTS[24]
    return [e for e in layout.electrodes if e.split("_")[0] in WELLS]


def test_legacy_spk_reads_like_axis_3_6(tmp_path: Path) -> None:
    electrodes = _layout_24_recorded()
    rec = _records(electrodes, 3000, 1)
    plate_map = [
        WellTreatment(w, "", amount=math.nan, unit="", active=w in WELLS) for w in LAYOUTS[24].wells
    ]
    path = write_axion_spk_legacy(
        tmp_path / "HD Neuron(000).spk",
        rec,
        layout=LAYOUTS[24],
        electrodes=electrodes,
        voltage_scale_uv_per_count=-5.484861781483107e-08 * 1e6,
        recorded_at=dt.datetime(2024, 5, 10, 11, 14, 51),  # the batch re-detection time
        settings_text=SETTINGS,
        note=("Mackenzie", "HD Neuron Pulsing", "pulsed on day 28"),
        metadata={"Barcode": "0600890032"},
        plate_map=plate_map,
    )
    raw = path.read_bytes()
    slots = struct.unpack_from("<5Q", raw, 34)
    assert [s >> 56 for s in slots] == [E_BV_HEADER, 0x02, 0x01, E_BV_HEADER_EXT, E_BV_DATA]
    notes_start = struct.unpack_from("<Q", raw, 14)[0]
    assert notes_start == 1024 + 64 + (slots[1] & ((1 << 56) - 1))
    first_block = struct.unpack_from("<q", raw, 1024 + 44)[0]
    assert raw[first_block : first_block + 8] == rec.start_sample[0].tobytes()

    f = open_axion(path)
    assert f.kind == "spk" and f.n_spikes == 3000 and f.flags == ()
    assert f.sampling_rate_hz == FS and f.voltage_scale_uv_per_count == pytest.approx(
        -0.0548486, rel=1e-5
    )
    assert f.channel_wells == WELLS and f.declared_duration_s == 600.0
    spikes = f.read_spikes()
    expected = collections.Counter(e.split("_")[0] for e in rec.electrode)
    assert dict(collections.Counter(spikes["well"].to_pylist())) == dict(expected)
    np.testing.assert_allclose(
        np.sort(spikes["time_s"].to_numpy()), np.sort((rec.start_sample + 11) / FS)
    )
    meta = f.plate_metadata()
    assert meta["recorded_at"] == dt.datetime(2024, 5, 9, 12, 3)  # the recording, not the batch
    assert meta["experiment_started_at"] == dt.datetime(2024, 5, 9, 11, 59, 9)
    assert (meta["instrument"], meta["instrument_serial"]) == ("Maestro Edge", "Maestro-299")
    assert meta["axis_version"] == "3.6.1.14" and meta["plate_serial"] == "89-0032"
    assert meta["detector_threshold"] == 6.0 and meta["coincidence_window_ms"] == pytest.approx(
        0.16
    )
    assert meta["recording_name"] == "HD Neuron Pulsing" and meta["investigator"] == "Mackenzie"
    assert meta["tags"] == {"Barcode": "0600890032"}

    plate = read_plate(path)
    assert plate.named_wells == WELLS and plate.duration_s == 600.0
    assert plate.qc_flags == () and plate.spikes.num_rows == 3000


def test_legacy_spk_with_nan_rate_uses_the_settings(tmp_path: Path) -> None:
    electrodes = _layout_24_recorded()
    path = write_axion_spk_legacy(
        tmp_path / "nan.spk",
        _records(electrodes, 50, 2),
        layout=LAYOUTS[24],
        electrodes=electrodes,
        sampling_rate_hz=math.nan,
        settings_text=SETTINGS,
    )
    f = open_axion(path)
    assert f.sampling_rate_hz == FS and "sampling_rate_nan_replaced" in f.flags


def test_spikes_before_zero_are_counted_not_fatal(tmp_path: Path) -> None:
    # AxIS 3.7, CytoView MEA 48: 10 of 36,792 spikes up to 0.24 s before zero
    layout = PLATE_TYPES[0x3000004]
    rec = _records(list(layout.electrodes), 400, 3)
    early = np.array([-3000, -1500, -200], dtype=np.int64)  # waveform starts: -0.24 .. -0.015 s
    late = np.array([round(612.0 * FS)], dtype=np.int64)
    start = np.concatenate([early, rec.start_sample, late])
    names = np.concatenate([np.array(["A1_11"] * 3, dtype=object), rec.electrode, ["F8_44"]])
    waves = np.vstack([np.zeros((3, 38)), rec.waveforms_uv, np.zeros((1, 38))])
    path = write_axion_spk(
        tmp_path / "p48.spk",
        SpikeRecords(names, start, waves, 11, 2.0, 6.0),
        layout=layout,
        duration_s=600.0,
    )
    plate = read_plate(path)
    assert plate.layout is layout
    assert plate.qc_flags == ("spikes_before_start:3", "spikes_after_end:1")
    assert plate.spikes.num_rows == 400 and plate.duration_s == pytest.approx(600.0)
    assert float(np.min(plate.spikes["time_s"].to_numpy())) >= 0.0


@pytest.mark.parametrize("layout", list(PLATE_TYPES.values()), ids=lambda lay: lay.name)
@pytest.mark.parametrize("legacy", [False, True], ids=["combined", "legacy"])
def test_every_plate_type_names_wells_and_electrodes(tmp_path: Path, layout, legacy: bool) -> None:  # type: ignore[no-untyped-def]
    electrodes = list(layout.electrodes)
    rng = np.random.default_rng(layout.plate_type)
    n = 3 * len(electrodes)
    names = np.array(electrodes * 3, dtype=object)
    start = np.sort(rng.integers(0, round(9 * FS), n)).astype(np.int64)
    rec = SpikeRecords(names, start, rng.normal(0, 5, (n, 38)), 11, 2.0, 6.0)
    if legacy:
        text = SETTINGS.replace("0s to 10m0s", "0s to 10s").replace("CytoView MEA 24", layout.name)
        path = write_axion_spk_legacy(tmp_path / "x.spk", rec, layout=layout, settings_text=text)
    else:
        path = write_axion_spk(tmp_path / "x.spk", rec, layout=layout, duration_s=10.0)
    f = open_axion(path)
    assert f.layout is layout
    assert sorted(f.electrodes) == sorted(layout.electrodes)
    assert f.channel_wells == layout.wells
    counts = collections.Counter(f.read_spikes()["electrode"].to_pylist())
    assert counts == {e: 3 for e in electrodes}
    assert layout.electrodes_per_well in (64, 16, 8)


def test_annotation_with_nan_rate_uses_the_data_set_rate(tmp_path: Path) -> None:
    from transforms.formats.axion import Annotation, write_axion_raw

    layout = LAYOUTS[24]
    data = np.zeros((2500, 16), dtype=np.int16)
    path = write_axion_raw(
        tmp_path / "a.raw",
        [data],
        layout=layout,
        electrodes=layout.electrodes[:16],
        annotations=[Annotation(0.1, "drug added")],
    )
    raw = bytearray(path.read_bytes())
    at = raw.rindex(struct.pack("<dq", FS, 1250))  # the annotation's event prefix
    raw[at : at + 8] = struct.pack("<d", math.nan)  # tags carry no CRC
    path.write_bytes(bytes(raw))
    f = open_axion(path)
    assert [(a.time_s, a.text) for a in f.annotations] == [(0.1, "drug added")]


def test_legacy_raw_without_extension(tmp_path: Path) -> None:
    """A legacy .raw: BlockVectorHeader, ChannelArray, data; no extension = Raw_v1."""
    import zlib

    from transforms.formats.axion._format import HEAD, datetime_bytes

    layout = LAYOUTS[24]
    names = list(layout.electrodes[16:32])[::-1]  # well A2, stored in reverse order
    data = np.random.default_rng(9).integers(-500, 500, (1000, 16)).astype("<i2")
    ca = struct.pack("<II", layout.plate_type, 16)
    for i, name in enumerate(names):
        well, col, row = name[:2], int(name[3]), int(name[4])
        ca += struct.pack("<6BH", int(well[1]), ord(well[0]) - 64, col, row, 0, i, 0)
    data_at = 1024 + 64 + len(ca)
    when = datetime_bytes(dt.datetime(2019, 1, 2, 3, 4, 5))
    bvh = struct.pack("<dd", FS, -5.8e-8) + when * 2 + struct.pack("<qIII", data_at, 16, 1, 0)
    slots = [0x03 << 56 | 64, 0x02 << 56 | len(ca), 0x04 << 56 | data.nbytes]
    head = HEAD.pack(b"AxionBio", 2, 1, 0, 0, 600, 1024)
    head += struct.pack("<123Q", *slots, *([0] * 120))
    head += struct.pack("<I", zlib.crc32(head)) + b"\x00\x00"
    path = tmp_path / "old.raw"
    path.write_bytes(head + bvh + ca + data.tobytes())
    f = open_axion(path)
    assert f.kind == "raw" and f.electrodes == tuple(names) and f.n_samples == 1000
    assert f.recorded_at == dt.datetime(2019, 1, 2, 3, 4, 5) and f.channel_wells == ("A2",)
    np.testing.assert_allclose(f.read(0, 1000 / FS), data * np.float32(-0.058), rtol=1e-6)
