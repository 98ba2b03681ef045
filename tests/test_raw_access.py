"""Partial raw access: windows of published recordings, found through the catalog.

Recordings are ingested for real (a pyABF sample and synthetic Axion plates with
known spikes); windows are checked against pyabf and the plates' ground truth,
saved as .npy / .nwb and read back, and a source changed after ingest is refused.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ABF_DIR
from transforms.errors import InvalidArgument, LakeError, SpecError, UnsupportedRecording
from transforms.pipeline import ingest_paths
from transforms.serve.raw import HASH_LIMIT_BYTES, fetch_snippet, locate

ABF = "171116sh_0018.abf"


def _ingest_abf(root: Path, name: str = ABF) -> tuple[Path, str, Path]:
    src = root / "landing" / "labA" / "WT" / "P14" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ABF_DIR / name, src)
    lake = root / "lake"
    summary = ingest_paths([src], lake=str(lake), landing=str(root / "landing"))
    (o,) = summary.outcomes
    assert o.status == "published", o.reason
    return lake, o.file_id, src


def _ingest_plate(root: Path, *, duration_s: float, lake: Path | None = None):
    from transforms.synth.plate import generate_plate

    plate = generate_plate(
        root / "plate", n_wells=12, duration_s=duration_s, seed=11, write_spk=False
    )
    lake = lake or root / "lake"
    summary = ingest_paths(
        [plate.raw_path],
        lake=str(lake),
        lab="labM",
        timepoint="DIV14",
        plate_map=plate.plate_map_path,
    )
    (o,) = summary.outcomes
    assert o.status == "published", o.reason
    return lake, o.file_id, plate


@pytest.fixture(scope="module")
def lake_with_both(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("raw")
    lake, abf_id, abf_path = _ingest_abf(root)
    _, plate_id, plate = _ingest_plate(root, duration_s=4.0, lake=lake)
    return {"lake": lake, "abf_id": abf_id, "abf": abf_path, "plate_id": plate_id, "plate": plate}


def test_mea_window_of_one_well_matches_the_ground_truth(lake_with_both, tmp_path: Path) -> None:
    lake, fid, plate = lake_with_both["lake"], lake_with_both["plate_id"], lake_with_both["plate"]
    t0 = time.perf_counter()
    snip = fetch_snippet(fid, lake=str(lake), well="B2", start_s=1.5, stop_s=3.5)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, f"2 s of one well took {elapsed:.3f} s"
    assert snip.kind == "mea" and snip.unit == "uV"
    assert snip.data.shape == (25_000, 64) and snip.data.dtype == np.float32
    assert snip.channels == tuple(e for e in plate.layout.electrodes if e.startswith("B2_"))
    assert snip.start_s == pytest.approx(1.5)
    # every true spike in the window shows as a trough of about its depth
    checked = 0
    for j, e in enumerate(snip.channels):
        for t in plate.spike_times_s[e]:
            if 1.501 < t < 3.499:
                k = round((t - snip.start_s) * snip.sampling_rate_hz)
                trough = float(snip.data[k - 4 : k + 5, j].min())
                assert trough < -0.6 * plate.spike_amplitude_uv[e], (e, t, trough)
                checked += 1
    if plate.well_kind["B2"] == "silent":
        assert checked == 0
        assert float(np.abs(snip.data).max()) < 8 * max(plate.noise_rms_uv.values())
    # electrodes and a time-window that runs past the end are clamped
    tail = fetch_snippet(fid, lake=str(lake), electrodes=["A1_11", "C4_88"], start_s=3.5, stop_s=9)
    assert tail.channels == ("A1_11", "C4_88") and tail.n_samples == round(0.5 * 12500)


def test_snippet_saves_as_npy_and_nwb(lake_with_both, tmp_path: Path) -> None:
    from transforms.formats.nwb_ecephys import open_nwb_ecephys

    lake, fid = lake_with_both["lake"], lake_with_both["plate_id"]
    snip = fetch_snippet(fid, lake=str(lake), well=["A1", "C3"], start_s=1.0, stop_s=1.5)
    npy = snip.save(tmp_path / "out" / "snippet.npy")
    np.testing.assert_array_equal(np.load(npy), snip.data)
    meta = json.loads((tmp_path / "out" / "snippet.npy.json").read_text())
    assert meta["file_id"] == fid and meta["channels"] == list(snip.channels)
    assert meta["sampling_rate_hz"] == 12500.0 and meta["unit"] == "uV"
    nwb = snip.save(tmp_path / "snippet.nwb")
    with open_nwb_ecephys(nwb) as back:
        assert back.electrodes == snip.channels
        assert back.start_time_s == pytest.approx(snip.start_s)
        got = back.read(0.0, 0.5)
    np.testing.assert_allclose(got, snip.data, rtol=1e-6, atol=1e-6)
    with pytest.raises(SpecError, match=r"\.npy or \.nwb"):
        snip.save(tmp_path / "snippet.csv")


def test_abf_sweep_window_matches_pyabf(lake_with_both, tmp_path: Path) -> None:
    import pyabf
    from pynwb import NWBHDF5IO

    lake, fid, src = lake_with_both["lake"], lake_with_both["abf_id"], lake_with_both["abf"]
    abf = pyabf.ABF(str(src))
    sweep = min(3, abf.sweepCount - 1)
    abf.setSweep(sweep)
    fs = abf.sampleRate
    snip = fetch_snippet(fid, lake=str(lake), sweep=sweep, start_s=0.1, stop_s=0.3)
    assert snip.kind == "icephys" and snip.unit == "mV" and snip.sweep == sweep
    assert snip.verification == "fingerprint"  # unchanged since it was hashed at staging
    k0, k1 = round(0.1 * fs), round(0.3 * fs)
    np.testing.assert_allclose(snip.data[:, 0], abf.sweepY[k0:k1], rtol=1e-5, atol=1e-4)
    assert snip.command is not None
    np.testing.assert_allclose(snip.command, abf.sweepC[k0:k1], atol=1e-3)
    out = snip.save(tmp_path / "cell.nwb")
    with NWBHDF5IO(str(out), mode="r") as io:
        nwb = io.read()
        series = next(iter(nwb.acquisition.values()))
        data = np.asarray(series.data[:]) * series.conversion * 1e3  # -> mV
    np.testing.assert_allclose(data, snip.data[:, 0], rtol=1e-5, atol=1e-3)
    with pytest.raises(SpecError, match="pass sweep="):
        fetch_snippet(fid, lake=str(lake), start_s=0, stop_s=0.1)
    with pytest.raises(SpecError, match="no wells"):
        fetch_snippet(fid, lake=str(lake), well="B2", sweep=0, start_s=0, stop_s=0.1)
    with pytest.raises(SpecError, match="no sweep 999"):
        fetch_snippet(fid, lake=str(lake), sweep=999, start_s=0, stop_s=0.1)


def test_bad_requests_fail_clearly(lake_with_both) -> None:
    lake, fid = str(lake_with_both["lake"]), lake_with_both["plate_id"]
    with pytest.raises(SpecError, match="64-character lowercase hex digest"):
        fetch_snippet("../../etc/passwd", lake=lake, start_s=0, stop_s=1)
    with pytest.raises(LakeError, match="no published recording"):
        fetch_snippet("ab" * 32, lake=lake, start_s=0, stop_s=1)
    with pytest.raises(SpecError, match="bad window"):
        fetch_snippet(fid, lake=lake, well="A1", start_s=2, stop_s=1)
    with pytest.raises(SpecError, match="after the end"):
        fetch_snippet(fid, lake=lake, well="A1", start_s=100, stop_s=101)
    with pytest.raises(InvalidArgument, match="no electrode of well 'D9'"):
        fetch_snippet(fid, lake=lake, well="D9", start_s=0, stop_s=1)
    with pytest.raises(SpecError, match="no sweeps"):
        fetch_snippet(fid, lake=lake, sweep=1, start_s=0, stop_s=1)
    rec = locate(fid, lake=lake)
    assert rec.kind == "mea" and rec.file_size_bytes == rec.source_path.stat().st_size


def test_oversized_window_is_refused_before_reading(lake_with_both, monkeypatch) -> None:
    from transforms.serve import raw as raw_access

    lake, fid = str(lake_with_both["lake"]), lake_with_both["plate_id"]
    monkeypatch.setattr(raw_access, "MAX_VALUES", 12_500 * 64)  # one well for one second
    assert fetch_snippet(fid, lake=lake, well="A1", start_s=0, stop_s=1).data.size == 12_500 * 64
    with pytest.raises(SpecError, match="pick wells or a shorter window"):
        fetch_snippet(fid, lake=lake, start_s=0, stop_s=1)  # all 768 electrodes


def test_changed_or_missing_source_is_refused(tmp_path: Path) -> None:
    lake, fid, src = _ingest_abf(tmp_path, "File_axon_5.abf")
    assert fetch_snippet(fid, lake=str(lake), sweep=0, start_s=0, stop_s=0.05).n_samples > 0
    data = bytearray(src.read_bytes())
    data[-100] ^= 0xFF  # same size, other content
    src.chmod(0o644)
    src.write_bytes(bytes(data))
    with pytest.raises(LakeError, match="SHA-256"):
        fetch_snippet(fid, lake=str(lake), sweep=0, start_s=0, stop_s=0.05)
    # checking the size only does not read the content
    snip = fetch_snippet(fid, lake=str(lake), sweep=0, start_s=0, stop_s=0.05, verify="size")
    assert snip.verification == "size"
    src.write_bytes(bytes(data[:-10]))
    with pytest.raises(LakeError, match="bytes"):
        fetch_snippet(fid, lake=str(lake), sweep=0, start_s=0, stop_s=0.05, verify="size")
    src.unlink()
    with pytest.raises(LakeError, match="gone"):
        fetch_snippet(fid, lake=str(lake), sweep=0, start_s=0, stop_s=0.05)


def test_spike_list_plate_has_no_raw_samples(tmp_path: Path) -> None:
    from tests.conftest import MEA_DIR

    spikes = MEA_DIR / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"
    summary = ingest_paths(
        [spikes], lake=str(tmp_path / "lake"), lab="labM", condition="ctrl", timepoint="DIV3"
    )
    (o,) = summary.outcomes
    assert o.status == "published", o.reason
    with pytest.raises(UnsupportedRecording, match="no continuous voltage"):
        fetch_snippet(o.file_id, lake=str(tmp_path / "lake"), well="A1", start_s=0, stop_s=1)


@pytest.mark.slow
def test_two_seconds_of_one_well_of_a_60s_12_well_plate_under_a_second(tmp_path: Path) -> None:
    lake, fid, plate = _ingest_plate(tmp_path, duration_s=60.0)
    size = plate.raw_path.stat().st_size
    assert size > HASH_LIMIT_BYTES  # ~1.15 GB: fingerprinted at staging, never hashed per request
    timings = []
    for start in (10.0, 31.0, 52.0):
        t0 = time.perf_counter()
        snip = fetch_snippet(fid, lake=str(lake), well="B2", start_s=start, stop_s=start + 2.0)
        timings.append(time.perf_counter() - t0)
        assert snip.data.shape == (25_000, 64) and snip.verification == "fingerprint"
    print(f"2-s window of one well of a {size / 1e9:.2f} GB plate: {timings} s")
    assert max(timings) < 1.0, timings
