"""AxIS .raw/.spk reader and writer: format vectors from the format document, round
trips, and corrupt files."""

from __future__ import annotations

import datetime as dt
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from transforms.errors import DecodeError, InvalidArgument
from transforms.formats.axion import (
    FLAG_CRC_MISMATCH,
    FLAG_TRUNCATED,
    FLAG_UNKNOWN_ENTRY,
    Annotation,
    SpikeRecords,
    WellTreatment,
    open_axion,
    write_axion_raw,
    write_axion_spk,
)
from transforms.recording.plate import LAYOUTS

WHEN = dt.datetime(2024, 5, 17, 13, 45, 12, 250000)
SCALE_UV = -5.8139534883720935e-08 * 1e6


def _example_raw(path: Path, frames: int = 100) -> np.ndarray:
    """The worked example of section 12.2: well A1 of a CytoView 24, 16 electrodes."""
    layout = LAYOUTS[24]
    data = np.random.default_rng(1).integers(-2000, 2000, (frames, 16)).astype(np.int16)
    write_axion_raw(
        path,
        [data[:37], data[37:]],
        layout=layout,
        electrodes=layout.electrodes[:16],
        recorded_at=WHEN,
        voltage_scale_uv_per_count=SCALE_UV,
    )
    return data


def test_writer_matches_format_document_vectors(tmp_path: Path) -> None:
    path = tmp_path / "ex.raw"
    _example_raw(path)
    b = path.read_bytes()
    # File offsets, slots and CRCs quoted in axion-file-format.md section 12.2.
    assert len(b) == 4546
    assert struct.unpack_from("<4Q", b, 34) == (
        0x0200000000000088,
        0x07000000000000BA,
        0x0400000000000C80,
        0,
    )
    assert struct.unpack_from("<I", b, 1018)[0] == 0x3A092993
    assert struct.unpack_from("<I", b, 1299)[0] == 0x52F62BEF
    assert struct.unpack_from("<I", b, 1342)[0] == 0x73E877F2
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_spk_writer_matches_format_document_sizes(tmp_path: Path) -> None:
    layout = LAYOUTS[24]
    el = layout.electrodes[:16]
    waves = np.zeros((5, 38), dtype=np.int16)
    path = write_axion_spk(
        tmp_path / "ex.spk",
        SpikeRecords(
            electrode=[el[0], el[3], el[3], el[7], el[15]],
            start_sample=np.array([10, 200, 400, 401, 9000]),
            waveforms_uv=waves,
            trigger_offset=12,
        ),
        layout=layout,
        electrodes=el,
        duration_s=1.0,
        recorded_at=WHEN,
    )
    b = path.read_bytes()
    assert len(b) == 1882  # section 12.3
    assert struct.unpack_from("<4Q", b, 34) == (
        0x0200000000000088,
        0x07000000000000C0,
        0x0400000000000212,
        0,
    )


def test_raw_round_trip_windows_subsets_and_tags(tmp_path: Path) -> None:
    layout = LAYOUTS[48]
    electrodes = [e for e in layout.electrodes if e[0] in "AB"]  # 16 wells x 16
    fs = 10000.0
    rng = np.random.default_rng(7)
    data = rng.normal(0, 20, (5000, len(electrodes))).astype(np.float32)
    chunks = [data[i : i + 1234] for i in range(0, 5000, 1234)]
    # 300 annotations: more entries than the primary header's 123 slots (sub-headers).
    notes = [Annotation(i * 0.001, f"note {i}") for i in range(300)]
    plate = [
        WellTreatment("A1", "KO", "clone 3", 3e-5, 6, "M", True, False, (255, 0, 0)),
        WellTreatment("B8", "WT"),
    ]
    path = write_axion_raw(
        tmp_path / "p.raw",
        iter(chunks),
        layout=layout,
        sampling_rate_hz=fs,
        electrodes=electrodes,
        recorded_at=WHEN,
        metadata={"RecordingName": "plate 7", "Investigator": "me"},
        plate_map=plate,
        annotations=notes,
    )
    f = open_axion(path)
    assert f.kind == "raw" and f.layout is layout and f.flags == ()
    assert f.electrodes == tuple(electrodes)
    assert f.n_samples == 5000 and f.duration_s == pytest.approx(0.5)
    assert f.sampling_rate_hz == fs and f.recorded_at == WHEN
    assert f.voltage_scale_uv_per_count == pytest.approx(SCALE_UV)
    assert f.metadata == {"RecordingName": "plate 7", "Investigator": "me"}
    assert f.plate_map == tuple(plate)
    assert [a.text for a in f.annotations] == [n.text for n in notes]
    # Stored counts are the input rounded: every value read is within half a count.
    half = abs(SCALE_UV) / 2 * 1.001 + 1e-5
    whole = f.read(0.0, 10.0)  # clamped to the recording
    np.testing.assert_allclose(whole, data, atol=half, rtol=0)
    assert np.abs(whole - data).max() > abs(SCALE_UV) / 4  # really quantised
    win = f.read(0.1, 0.2, electrodes=["B8_44", "A1_11"])
    cols = [electrodes.index("B8_44"), electrodes.index("A1_11")]
    np.testing.assert_allclose(win, data[1000:2000, cols], atol=half, rtol=0)
    well = f.read(0.0, 0.05, wells=["A2"])
    assert well.shape == (500, 16)
    np.testing.assert_allclose(well, data[:500, 16:32], atol=half, rtol=0)
    got = np.concatenate([c.data for c in f.iter_chunks(chunk_s=0.037, wells=["B3"])])
    b3 = electrodes.index("B3_11")
    np.testing.assert_array_equal(got, whole[:, b3 : b3 + 16])


def test_spike_file_round_trip(tmp_path: Path) -> None:
    layout = LAYOUTS[96]
    fs = 12500.0
    rng = np.random.default_rng(3)
    n = 400
    start = np.sort(rng.integers(0, 120000, n))
    names = rng.choice(np.array(layout.electrodes, dtype=object), n)
    waves = rng.normal(0, 10, (n, 38))
    trig = 12
    waves[:, trig] = -rng.uniform(30, 80, n)
    batches = [
        SpikeRecords(names[i : i + 150], start[i : i + 150], waves[i : i + 150], trig, 7.5, 6.0)
        for i in range(0, n, 150)
    ]
    path = write_axion_spk(tmp_path / "s.spk", iter(batches), layout=layout, duration_s=10.0)
    f = open_axion(path)
    assert f.kind == "spk" and f.n_spikes == n and f.duration_s == 10.0
    t = f.read_spikes()
    order = np.lexsort((names.astype(str), (start + trig) / fs))
    assert t["electrode"].to_pylist() == list(names[order])
    np.testing.assert_array_equal(t["time_s"].to_numpy(), ((start + trig) / fs)[order])
    assert t["well"].to_pylist() == [e.split("_")[0] for e in names[order]]
    amp = np.rint(waves[:, trig] / SCALE_UV) * SCALE_UV
    np.testing.assert_allclose(t["amplitude_uv"].to_numpy(), amp[order], rtol=1e-5)
    rec = f.spike_records()
    assert rec["noise_sd"][0] == pytest.approx(7.5e-6)
    assert rec["threshold_multiplier"][0] == 6.0
    with pytest.raises(InvalidArgument, match="time order"):
        write_axion_spk(
            tmp_path / "bad.spk",
            SpikeRecords(names[:2], start[:2][::-1].copy(), waves[:2]),
            layout=layout,
            duration_s=1.0,
        )


def _patch(path: Path, offset: int, raw: bytes) -> None:
    b = bytearray(path.read_bytes())
    b[offset : offset + len(raw)] = raw
    path.write_bytes(bytes(b))


def _fix_header_crc(path: Path) -> None:
    b = path.read_bytes()
    _patch(path, 1018, struct.pack("<I", zlib.crc32(b[:1018])))


def test_truncated_raw_is_a_decode_error_unless_allowed(tmp_path: Path) -> None:
    path = tmp_path / "t.raw"
    data = _example_raw(path)
    path.write_bytes(path.read_bytes()[: 1346 + 50 * 32 + 7])  # 50 frames and a bit
    with pytest.raises(DecodeError, match=r"t\.raw.*truncated"):
        open_axion(path)
    f = open_axion(path, allow_truncated=True)
    assert FLAG_TRUNCATED in f.flags and f.n_samples == 50
    np.testing.assert_allclose(f.read(0, 1), (data[:50] * SCALE_UV).astype(np.float32), rtol=1e-6)


def test_counts_into_caller_buffers_and_mapped_windows(tmp_path: Path) -> None:
    path = tmp_path / "w.raw"
    data = _example_raw(path, frames=300)
    f = open_axion(path)
    buf = np.full((64, 16), 7, dtype=np.int16)
    # every column (read straight into the buffer), a contiguous run, a scattered subset
    for cols in (None, np.arange(3, 9), np.array([12, 0, 5])):
        width = 16 if cols is None else len(cols)
        got = f.read_counts(40, 90, columns=cols, out=np.zeros((64, width), np.int16))
        expected = data[40:90] if cols is None else data[40:90][:, cols]
        np.testing.assert_array_equal(got, expected)
    got = f.read_counts(280, 400, out=buf)  # clamped to the recording: 20 rows
    assert got.shape == (20, 16) and np.shares_memory(got, buf)
    np.testing.assert_array_equal(buf[:20], data[280:])
    assert (buf[20:] == 7).all()  # rows past the window untouched
    for bad in (
        np.zeros((10, 16), np.int16),  # too few rows
        np.zeros((64, 15), np.int16),  # wrong width
        np.zeros((64, 16), np.float32),  # wrong dtype
        np.zeros((16, 64), np.int16).T,  # not C-contiguous
    ):
        with pytest.raises(InvalidArgument, match="out must"):
            f.read_counts(0, 50, out=bad)
    win = f.map_counts(37, 250)
    np.testing.assert_array_equal(win.array, data[37:250])
    assert not win.array.flags.writeable
    win.close()
    win.close()  # idempotent
    assert win.array.shape == (0, 16)
    assert f.map_counts(300, 400).array.shape == (0, 16)
    # A file cut short after opening: a clear error, never a SIGBUS from the mapping.
    path.write_bytes(path.read_bytes()[: -200 * 32])
    with pytest.raises(DecodeError, match=r"w\.raw: file ends at byte"):
        f.map_counts(0, 300)
    with pytest.raises(DecodeError, match=r"w\.raw: file ends at byte"):
        f.read_counts(0, 300)


def test_crc_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "c.raw"
    _example_raw(path)
    _patch(path, 1022 - 4 - 10, b"\x01")  # inside the last (unused) slot
    with pytest.raises(DecodeError, match=r"c\.raw: primary header CRC mismatch"):
        open_axion(path)
    assert FLAG_CRC_MISMATCH in open_axion(path, strict_crc=False).flags
    path2 = tmp_path / "c2.raw"
    _example_raw(path2)
    _patch(path2, 1160 + 8, struct.pack("<d", 20000.0))  # rate changed, CRC not
    with pytest.raises(DecodeError, match="combined header CRC mismatch"):
        open_axion(path2)


def test_absurd_values_and_unknown_entries(tmp_path: Path) -> None:
    path = tmp_path / "a.raw"
    _example_raw(path)
    # Absurd sampling rate with a valid CRC: caught by the value check, not the CRC.
    b = bytearray(path.read_bytes())
    b[1160 + 8 : 1160 + 16] = struct.pack("<d", -1.0)
    b[1299:1303] = struct.pack("<I", zlib.crc32(bytes(b[1160:1299])))
    path.write_bytes(bytes(b))
    with pytest.raises(DecodeError, match=r"a\.raw.*absurd sampling rate"):
        open_axion(path)
    # NotesLength must be 600.
    path = tmp_path / "n.raw"
    _example_raw(path)
    _patch(path, 22, struct.pack("<I", 601))
    _fix_header_crc(path)
    with pytest.raises(DecodeError, match="NotesLength"):
        open_axion(path)
    # An unknown entry type (here: an extra 10-byte entry of type 0x42) is skipped.
    path = tmp_path / "u.raw"
    _example_raw(path)
    with path.open("ab") as fh:
        fh.write(b"\x00" * 10)
    _patch(path, 34 + 3 * 8, struct.pack("<Q", 0x42 << 56 | 10))
    _fix_header_crc(path)
    f = open_axion(path)
    assert FLAG_UNKNOWN_ENTRY in f.flags and f.n_samples == 100
    # An entry running past the end of the file.
    _patch(path, 34 + 3 * 8, struct.pack("<Q", 0x42 << 56 | 10_000))
    _fix_header_crc(path)
    with pytest.raises(DecodeError, match="past the end of the file"):
        open_axion(path)


def test_not_axion_and_bad_requests(tmp_path: Path) -> None:
    junk = tmp_path / "junk.raw"
    junk.write_bytes(b"NotAxion" + b"\x00" * 2000)
    with pytest.raises(DecodeError, match=r"junk\.raw: not an AxIS file"):
        open_axion(junk)
    short = tmp_path / "short.raw"
    short.write_bytes(b"AxionBio" + b"\x00" * 100)
    with pytest.raises(DecodeError, match="truncated header"):
        open_axion(short)
    path = tmp_path / "ok.raw"
    _example_raw(path)
    f = open_axion(path)
    with pytest.raises(InvalidArgument, match="no electrode 'B1_11'"):
        f.read(0, 0.001, electrodes=["B1_11"])
    with pytest.raises(InvalidArgument, match="bad window"):
        f.read(0.005, 0.001)
    with pytest.raises(InvalidArgument):
        f.read_spikes()
