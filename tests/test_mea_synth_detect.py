"""Synthetic plates and the streaming detector: ground-truth recall/precision,
chunk-size invariance, dead time, and the spike-table convention."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from transforms.errors import InvalidArgument
from transforms.formats.axion import open_axion
from transforms.mea.detect import (
    NOISE_METADATA_KEY,
    PARAMS_METADATA_KEY,
    DetectionParams,
    detect_spikes,
)
from transforms.recording.plate import LAYOUTS
from transforms.recording.spikes import MEA_SPIKE_SCHEMA, spikes_table
from transforms.synth.plate import PLATE_MAP_COLUMNS, generate_plate, match_spikes

TOL_S = 0.5e-3


def match(truth: dict[str, np.ndarray], found: pa.Table, tol_s: float) -> tuple[float, float]:
    """Recall and precision with one-to-one matching within ``tol_s`` per electrode."""
    names = np.array(found["electrode"].to_pylist(), dtype=object)
    return match_spikes(truth, names, found["time_s"].to_numpy(), tol_s)


@pytest.mark.parametrize("n_wells", [12, 24, 48, 96])
def test_generate_plate_layouts(tmp_path: Path, n_wells: int) -> None:
    plate = generate_plate(
        tmp_path,
        n_wells=n_wells,
        duration_s=2.0,
        seed=n_wells,
        write_spk=False,  # type: ignore[arg-type]
    )
    layout = LAYOUTS[n_wells]
    raw = open_axion(plate.raw_path)
    assert raw.layout is layout and raw.electrodes == layout.electrodes
    assert raw.n_samples == 25000 and raw.sampling_rate_hz == 12500.0
    assert set(plate.well_kind.values()) == {"silent", "poisson", "bursting", "network_bursting"}
    assert set(plate.spike_times_s) == set(layout.electrodes)
    for e, t in plate.spike_times_s.items():
        assert np.all(np.diff(t) >= 2.5e-3) and np.all((t > 0) & (t < 2.0))
        if plate.well_kind[e.split("_")[0]] == "silent":
            assert len(t) == 0
    # White part of a silent well's noise: first differences cancel the slow 1/f part,
    # so std(diff) / sqrt(2) is the drawn RMS times sqrt(1 - pink_fraction).
    silent = next(w for w, k in plate.well_kind.items() if k == "silent")
    x = raw.read(0, 2.0, wells=[silent]).astype(np.float64)
    white = np.diff(x, axis=0).std(axis=0) / np.sqrt(2)
    names = [e for e in raw.electrodes if e.startswith(silent + "_")]
    truth = np.array([plate.noise_rms_uv[e] for e in names])
    np.testing.assert_allclose(white, truth * np.sqrt(1 - plate.params.pink_fraction), rtol=0.05)
    with plate.plate_map_path.open() as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == PLATE_MAP_COLUMNS
    assert [r[4] for r in rows[1:]] == list(layout.wells)
    assert {r[5] for r in rows[1:]} == {"WT", "KO"}
    assert {w.well: w.treatment for w in raw.plate_map} == dict(plate.condition)


def test_network_bursts_are_synchronous(tmp_path: Path) -> None:
    kinds = ["network_bursting", "bursting"] * 12
    plate = generate_plate(
        tmp_path, n_wells=24, duration_s=40.0, seed=3, well_kinds=kinds, write_spk=False
    )

    def peak_sync(well: str) -> float:
        """Largest fraction of the well's electrodes firing in one 50 ms bin."""
        names = [e for e in plate.spike_times_s if e.startswith(well + "_")]
        bins = np.zeros((len(names), 800), dtype=bool)
        for i, e in enumerate(names):
            bins[i, (plate.spike_times_s[e] / 0.05).astype(int)] = True
        return float(bins.mean(axis=0).max())

    wells = LAYOUTS[24].wells
    assert min(peak_sync(w) for w in wells[0::2]) >= 0.8
    assert max(peak_sync(w) for w in wells[1::2]) < 0.5


@pytest.fixture(scope="module")
def plate_snr5(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("snr5")
    return generate_plate(out, n_wells=24, duration_s=12.0, snr=5.0, seed=11)


def test_recall_precision_snr5(plate_snr5) -> None:  # type: ignore[no-untyped-def]
    raw = open_axion(plate_snr5.raw_path)
    found = detect_spikes(raw)
    assert found.schema.remove_metadata() == MEA_SPIKE_SCHEMA
    recall, precision = match(dict(plate_snr5.spike_times_s), found, TOL_S)
    assert plate_snr5.n_spikes > 3000
    assert recall >= 0.95 and precision >= 0.95, (recall, precision)
    amps = found["amplitude_uv"].to_numpy()
    assert np.all(amps < 0)  # negative polarity: signed troughs
    params = json.loads(found.schema.metadata[PARAMS_METADATA_KEY])
    assert params == DetectionParams().as_dict()
    noise = json.loads(found.schema.metadata[NOISE_METADATA_KEY])
    assert set(noise) == set(raw.electrodes)


@pytest.mark.parametrize("snr", [8.0, 12.0, 20.0, 40.0])
def test_recall_precision_higher_snr(tmp_path: Path, snr: float) -> None:
    # At SNR 20 and 40 the band-pass ringing after each trough crosses the threshold
    # ~1.5 ms later; the ripple rule must reject it without losing burst spikes.
    plate = generate_plate(
        tmp_path, n_wells=48, duration_s=6.0, snr=snr, seed=int(snr), write_spk=False
    )
    found = detect_spikes(open_axion(plate.raw_path))
    recall, precision = match(dict(plate.spike_times_s), found, TOL_S)
    assert recall >= 0.95 and precision >= 0.95, (recall, precision)


def test_chunk_size_and_threads_do_not_change_spikes(plate_snr5) -> None:  # type: ignore[no-untyped-def]
    raw = open_axion(plate_snr5.raw_path)
    wells = ["A1", "A2", "B1", "C4", "D6"]
    ref = detect_spikes(raw, wells=wells, chunk_s=2.0, n_threads=2)
    assert len(ref) > 100
    for chunk_s, threads in ((0.0131, 1), (0.37, 2), (5.0, 3), (100.0, 1)):
        got = detect_spikes(raw, wells=wells, chunk_s=chunk_s, n_threads=threads)
        assert got.equals(ref), (chunk_s, threads)  # bit for bit, metadata too


def test_spk_file_holds_the_ground_truth(plate_snr5) -> None:  # type: ignore[no-untyped-def]
    spk = open_axion(plate_snr5.spk_path)
    table = spk.read_spikes()
    assert len(table) == plate_snr5.n_spikes
    recall, precision = match(dict(plate_snr5.spike_times_s), table, 0.5 / 12500)
    assert recall == 1.0 and precision == 1.0


def test_dead_time_and_polarity_on_a_hand_built_trace() -> None:
    fs = 10000.0
    x = np.random.default_rng(0).normal(0, 1.0, (20000, 2)).astype(np.float32)
    # Channel 0: two 20 µV troughs 0.6 ms apart (inside the 1 ms dead time), then two
    # 3 ms apart. Channel 1: one positive 20 µV peak.
    kernel = -20 * np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)
    for s in (5000, 5006, 12000, 12030):
        x[s - 5 : s + 6, 0] += kernel
    x[8000 - 5 : 8000 + 6, 1] -= kernel
    names = ["A1_11", "A1_21"]

    def times(params: DetectionParams, electrode: str) -> list[float]:
        t = detect_spikes(x, sampling_rate_hz=fs, electrodes=names, params=params)
        return t.filter(pa.compute.equal(t["electrode"], electrode))["time_s"].to_pylist()

    assert times(DetectionParams(), "A1_11") == pytest.approx([0.5, 1.2, 1.203], abs=3e-4)
    # a shorter dead time resolves the 0.6 ms pair
    short = times(DetectionParams(dead_time_ms=0.3), "A1_11")
    assert short[:2] == pytest.approx([0.5, 0.5006], abs=2e-4)
    assert times(DetectionParams(polarity="positive"), "A1_21") == pytest.approx([0.8], abs=2e-4)


def test_ripple_rule_drops_filter_ringing_only() -> None:
    fs = 12500.0
    x = np.random.default_rng(1).normal(0, 1.0, (50000, 1)).astype(np.float32)
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 1.8) ** 2)
    # a 300 µV trough followed 1.6 ms later by a 40 µV one (a ripple-sized event), then
    # two equal troughs 2.5 ms apart (a burst), all far above a 6-sigma threshold
    for s, depth in ((10000, 300), (10020, 40), (30000, 100), (30031, 100)):
        x[s - 6 : s + 7, 0] -= depth * kernel

    def times(params: DetectionParams) -> list[float]:
        t = detect_spikes(x, sampling_rate_hz=fs, electrodes=["A1_11"], params=params)
        return t["time_s"].to_pylist()

    assert times(DetectionParams()) == pytest.approx([0.8, 2.4, 2.40248], abs=2e-4)
    # without the rule the small event and ringing after the burst are spikes too
    off = times(DetectionParams(ripple_ratio=0.0))
    assert off[:4] == pytest.approx([0.8, 0.8016, 2.4, 2.40248], abs=2e-4) and len(off) >= 4
    with pytest.raises(InvalidArgument):
        DetectionParams(ripple_ratio=1.5)


def test_spikes_table_and_params_validation() -> None:
    t = spikes_table(["B2_11", "A1_23"], [0.5, 0.1], [np.nan, -50.0])
    assert t.schema == MEA_SPIKE_SCHEMA
    assert t.to_pylist() == [
        {"electrode": "A1_23", "well": "A1", "time_s": 0.1, "amplitude_uv": -50.0},
        {"electrode": "B2_11", "well": "B2", "time_s": 0.5, "amplitude_uv": None},
    ]
    with pytest.raises(InvalidArgument):
        spikes_table(["A1_11"], [0.1, 0.2])
    with pytest.raises(InvalidArgument):
        DetectionParams(band_low_hz=3000, band_high_hz=200)
    with pytest.raises(InvalidArgument, match="Nyquist"):
        DetectionParams().sos(5000.0)


@pytest.mark.parametrize("n_wells", [12, 24, 48, 96])
def test_every_layout_round_trips_raw_and_spk_through_reader_and_detector(
    tmp_path: Path, n_wells: int
) -> None:
    """.raw -> reader -> detector meets recall/precision >= 0.95 at SNR 5; .spk -> reader
    returns exactly the generator's ground-truth spikes, on every Maestro layout."""
    plate = generate_plate(tmp_path, n_wells=n_wells, duration_s=4.0, snr=5.0, seed=100 + n_wells)
    truth = dict(plate.spike_times_s)
    raw = open_axion(plate.raw_path)
    assert raw.layout is LAYOUTS[n_wells] and len(raw.electrodes) == LAYOUTS[n_wells].n_channels
    recall, precision = match(truth, detect_spikes(raw), TOL_S)
    assert recall >= 0.95 and precision >= 0.95, (n_wells, recall, precision)
    spk = open_axion(plate.spk_path).read_spikes()
    got: dict[str, list[float]] = {}
    for e, t in zip(spk["electrode"].to_pylist(), spk["time_s"].to_pylist(), strict=True):
        got.setdefault(e, []).append(t)
    n_true = sum(len(v) for v in truth.values())
    assert spk.num_rows == n_true
    for e, times in truth.items():
        np.testing.assert_allclose(np.sort(got.get(e, [])), times, atol=1.0 / 12500.0)
