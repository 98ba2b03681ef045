"""Detection profiles for raw MEA data: ``default`` (today's detector, unchanged),
``axis`` (the detector the recording declares) and ``sensitive`` (zero-phase band-pass),
on synthetic plates with 1/f plus white noise and on the real AxIS 2 header."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from scipy import signal

from tests.axis_text import AXIS3_SETTINGS
from tests.conftest import MEA_DIR
from tests.test_mea_synth_detect import TOL_S, match
from transforms import formats, spec
from transforms.errors import InvalidArgument
from transforms.formats.axion import open_axion
from transforms.formats.axis_settings import header_metadata
from transforms.mea.detect import (
    PARAMS_METADATA_KEY,
    DetectionParams,
    axis_params,
    detect_spikes,
    profile_params,
)
from transforms.mea.iir import SosIIR, ZeroPhaseIIR
from transforms.pipeline.decode_mea import decode_mea
from transforms.pipeline.landing import Target
from transforms.synth.plate import generate_plate, spike_template_uv

FS = 12500.0


@pytest.fixture(scope="module")
def snr3_plate(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """12 wells, 3 s, troughs 3x the broadband (1/f + white) noise RMS."""
    out = tmp_path_factory.mktemp("snr3")
    return generate_plate(out, n_wells=12, duration_s=3.0, snr=3.0, seed=31, write_spk=False)


def test_sensitive_finds_spikes_at_three_times_the_noise(snr3_plate) -> None:  # type: ignore[no-untyped-def]
    raw = open_axion(snr3_plate.raw_path)
    truth = dict(snr3_plate.spike_times_s)
    assert sum(len(t) for t in truth.values()) > 500
    recall, precision = match(truth, detect_spikes(raw, params=profile_params("sensitive")), TOL_S)
    assert recall >= 0.9 and precision >= 0.95, (recall, precision)
    base_recall, _ = match(truth, detect_spikes(raw), TOL_S)
    assert base_recall < 0.6, base_recall  # today's causal filter flattens the trough
    assert recall > base_recall + 0.3


def test_sensitive_keeps_ninety_percent_of_the_trough() -> None:
    params = profile_params("sensitive")
    filt = params.make_filter(FS)
    assert isinstance(filt, ZeroPhaseIIR)
    t = np.arange(-0.05, 0.05, 1 / FS)
    for offset in np.linspace(0, 1 / FS, 4, endpoint=False):
        x = spike_template_uv(t - offset, 1.0).astype(np.float32)[:, None]
        x = np.vstack([x, np.zeros((filt.delay_samples, 1), np.float32)])
        rows = -(-len(x) // filt.block_samples) * filt.block_samples
        out = np.empty((rows, 1), np.float32)
        filt.apply(x, filt.initial_state(x[0]), out=out)
        y = out[filt.delay_samples : filt.delay_samples + len(t), 0]
        ratio = float(y.min() / x[: len(t), 0].min())
        assert ratio >= 0.9, (offset, ratio)
        assert abs(int(np.argmin(y)) - int(np.argmin(x[: len(t), 0]))) <= 1  # no phase shift
    # the causal default keeps less, and moves the trough
    causal = DetectionParams().make_filter(FS)
    x = spike_template_uv(t, 1.0).astype(np.float32)[:, None]
    rows = -(-len(x) // causal.block_samples) * causal.block_samples
    out = np.empty((rows, 1), np.float32)
    causal.apply(x, causal.initial_state(x[0]), out=out)
    assert out[: len(t), 0].min() / x[:, 0].min() < 0.75


def test_zero_phase_stream_equals_forward_backward() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20010, 5)).astype(np.float32)  # a partial last block
    sos = signal.butter(2, [150, 3000], "bandpass", fs=FS, output="sos")
    filt = ZeroPhaseIIR(sos, delay_samples=500)
    d = filt.delay_samples
    padded = np.vstack([x, np.repeat(x[-1:], d, axis=0)])
    ys = []
    for chunk in (4096, 1024 * 3, 32 * 7):
        state = filt.initial_state(padded[0])
        parts = []
        for a in range(0, len(padded), chunk):
            block = padded[a : a + chunk]
            rows = -(-len(block) // filt.block_samples) * filt.block_samples
            out = np.empty((rows, x.shape[1]), np.float32)
            state = filt.apply(block, state, out=out)
            parts.append(out[: len(block)])
        ys.append(np.concatenate(parts)[d : d + len(x)])
    ref = signal.sosfiltfilt(sos, x.astype(np.float64), axis=0, padtype=None)
    inner = slice(2000, len(x) - 2000)  # away from the two ends' start-up transients
    scale = float(np.abs(ref[inner]).max())
    for y in ys:
        assert np.abs(y[inner] - ref[inner]).max() <= 1e-4 * scale
        assert np.abs(y - ys[0]).max() <= 1e-5 * scale  # chunking changes nothing visible


def test_axis_profile_from_axis3_settings() -> None:
    meta = header_metadata(AXIS3_SETTINGS)
    p = axis_params(meta)
    assert (p.profile, p.filter_design, p.band_low_hz, p.band_high_hz) == (
        "axis",
        "iir_kaiser",
        200.0,
        3000.0,
    )
    assert p.threshold_k == 6.0 and p.dead_time_ms == pytest.approx(2.16)
    assert not p.zero_phase
    _w, h = signal.sosfreqz(p.sos(FS), worN=[50.0, 1000.0, 5000.0], fs=FS)
    gain = np.abs(h)
    assert gain[1] == pytest.approx(1.0, abs=0.05)  # pass band
    assert gain[0] < 0.1 and gain[2] < 0.05  # below the IIR high-pass, above the FIR cut
    # the FIR part of the sections is the Kaiser-window design itself
    taps = signal.firwin(31, 3000.0, window=("kaiser", 5.0), fs=FS)
    impulse = np.zeros(64)
    impulse[0] = 1.0
    fir_sos = p.sos(FS)[1:]
    np.testing.assert_allclose(signal.sosfilt(fir_sos, impulse)[:31], taps, atol=1e-9)


def test_axis_profile_from_real_axis2_header() -> None:
    plate = formats.read_plate(MEA_DIR / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz")
    p = profile_params("axis", metadata=plate.metadata)
    # Digital Filter Settings: Butterworth, 1 pole each, cutoffs 3000 Hz and 200 Hz
    assert (p.filter_design, p.band_low_hz, p.band_high_hz) == ("butter_cascade", 200.0, 3000.0)
    assert (p.filter_order, p.lowpass_order, p.threshold_k) == (1, 1, 7.0)
    assert p.dead_time_ms == pytest.approx(2.16)
    assert len(p.sos(FS)) == 2


def test_axis_profile_needs_declared_settings(snr3_plate) -> None:  # type: ignore[no-untyped-def]
    raw = open_axion(snr3_plate.raw_path)
    with pytest.raises(InvalidArgument, match=r"synth.raw: detection profile 'axis' needs"):
        profile_params("axis", metadata=raw.plate_metadata(), source="synth.raw")
    no_filter = header_metadata([("Spike Detector Settings", ""), ("   Threshold", "6")])
    with pytest.raises(InvalidArgument, match="filter settings"):
        axis_params(no_filter)
    with pytest.raises(InvalidArgument, match="unknown detection profile 'fast'"):
        profile_params("fast")


def test_axis_profile_detects_on_a_synthetic_plate(snr3_plate) -> None:  # type: ignore[no-untyped-def]
    """The declared AxIS 3 detector runs through the streaming detector (causal, so it
    shares the default's handicap at SNR 3) and records itself."""
    raw = open_axion(snr3_plate.raw_path)
    p = axis_params(header_metadata(AXIS3_SETTINGS))
    found = detect_spikes(raw, params=p, wells=["A1", "A2"])
    recorded = json.loads(found.schema.metadata[PARAMS_METADATA_KEY])
    assert recorded["profile"] == "axis" and recorded["filter_design"] == "iir_kaiser"
    truth = {e: t for e, t in snr3_plate.spike_times_s.items() if e[:2] in ("A1", "A2")}
    _, precision = match(truth, found, 1e-3)
    assert precision >= 0.9


def test_default_profile_is_todays_detector(snr3_plate) -> None:  # type: ignore[no-untyped-def]
    raw = open_axion(snr3_plate.raw_path)
    assert profile_params("default") == DetectionParams()
    assert isinstance(DetectionParams().make_filter(FS), SosIIR)
    a = detect_spikes(raw, wells=["B1"])
    b = detect_spikes(raw, wells=["B1"], params=profile_params("default"))
    assert a.equals(b)


def test_profile_recorded_in_detection_params_json(snr3_plate, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = snr3_plate.raw_path
    source = spec.SourceFile(
        uri=str(path),
        name=path.name,
        size_bytes=path.stat().st_size,
        file_id="0" * 63 + "1",
        local_path=path,
    )
    target = Target(lab="labX", condition="WT", timepoint="DIV14")
    for profile in ("sensitive", "default"):
        _, tables = decode_mea(
            source,
            target=target,
            ingest_id="a" * 32,
            kind="axion_raw",
            plate_map_path=snr3_plate.plate_map_path,
            detection_profile=profile,
        )
        doc = json.loads(tables[spec.MEA_RECORDINGS]["detection_params_json"][0].as_py())
        assert doc["profile"] == profile and doc["params"]["profile"] == profile
        assert doc["params"]["zero_phase"] is (profile == "sensitive")
        params = json.loads(tables[spec.MEA_SPIKES]["params_json"][0].as_py())
        assert params["detection"]["profile"] == profile


def test_sensitive_well_groups_equal_the_whole_plate(snr3_plate) -> None:  # type: ignore[no-untyped-def]
    """A well group (whole filter lanes, as a split plate stages) finds exactly the
    spikes the whole plate finds on those wells; another chunking finds the same spikes
    (amplitudes then differ far below a µV: where the backward passes start moves)."""
    raw = open_axion(snr3_plate.raw_path)
    params = profile_params("sensitive")
    whole = detect_spikes(raw, params=params)
    wells = list(raw.layout.wells[:6])  # 6 x 64 electrodes: whole lanes
    keys = [("electrode", "ascending"), ("time_s", "ascending")]
    mine = whole.filter(pc.is_in(whole["well"], pa.array(wells))).sort_by(keys)
    part = detect_spikes(raw, params=params, wells=wells).sort_by(keys)
    assert part.num_rows > 1000
    assert part.equals(mine.select(part.column_names))
    other = detect_spikes(raw, params=params, wells=wells, chunk_s=1.3).sort_by(keys)
    # equal but for a spike whose value sits within float32 rounding of the threshold
    truth: dict[str, list[float]] = {}
    for e, t in zip(part["electrode"].to_pylist(), part["time_s"].to_pylist(), strict=True):
        truth.setdefault(e, []).append(t)
    recall, precision = match({e: np.array(t) for e, t in truth.items()}, other, 0.5 / FS)
    assert min(recall, precision) >= 1 - 2 / part.num_rows
    if other.num_rows == part.num_rows and other["time_s"].equals(part["time_s"]):
        diff = np.abs(other["amplitude_uv"].to_numpy() - part["amplitude_uv"].to_numpy())
        assert diff.max() <= 1e-3
