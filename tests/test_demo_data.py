"""The demo generator writes real ABF1 files that pyabf itself decodes correctly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyabf
import pytest

from transforms.formats.abf1_writer import StepEpoch, command_waveform, write_abf1
from transforms.synth import demo as generate
from transforms.synth.neuron import CellParams, simulate


def test_abf1_writer_roundtrip_through_pyabf(tmp_path: Path) -> None:
    fs = 10000.0
    n = 6400
    epochs = [StepEpoch(500, 0.0), StepEpoch(3000, -50.0, 25.0), StepEpoch(2000, 0.0)]
    rng = np.random.default_rng(3)
    data = -65 + rng.normal(0, 2, (4, n))
    from datetime import datetime

    path = write_abf1(
        tmp_path / "x.abf",
        data,
        sampling_rate_hz=fs,
        epochs=epochs,
        recorded_at=datetime(2025, 5, 6, 7, 8, 9),
    )
    abf = pyabf.ABF(str(path))
    assert abf.abfVersion["major"] == 1
    assert abf.sweepCount == 4 and abf.sampleRate == fs
    assert abf.adcUnits[0] == "mV" and abf.dacUnits[0] == "pA"
    assert abf.abfDateTime.strftime("%Y-%m-%d %H:%M:%S") == "2025-05-06 07:08:09"
    for sweep in range(4):
        abf.setSweep(sweep)
        # 16-bit quantisation of a 10 V range at scale 0.1 V/mV: 3 µV steps
        np.testing.assert_allclose(abf.sweepY, data[sweep], atol=2e-3)
        expected = np.zeros(n)
        start = n // 64 + 500
        expected[start : start + 3000] = -50.0 + 25.0 * sweep
        np.testing.assert_array_equal(abf.sweepC, expected)


def test_command_waveform_matches_epoch_rule() -> None:
    cmd = command_waveform(640, 2, [StepEpoch(10, 0.0), StepEpoch(20, 5.0, 1.0)])
    assert np.all(cmd[:, :20] == 0) and np.all(cmd[1, 20:40] == 6.0) and np.all(cmd[:, 40:] == 0)


def test_model_neuron_is_physiological() -> None:
    fs = 20000.0
    n = int(0.6 * fs)
    cmd = np.zeros((3, n))
    cmd[0, 2000:10000] = -100.0
    cmd[2, 2000:10000] = 250.0
    v = simulate(cmd, sampling_rate_hz=fs, cells=[CellParams()] * 3, seed=1)
    rest = v[:, :2000].mean(axis=1)
    assert np.all((rest > -75) & (rest < -62))
    hyper = v[0, 2000:10000]
    assert hyper.min() < rest[0] - 10  # hyperpolarises
    assert hyper[-1000:].mean() > hyper.min() + 2  # sag back from the peak (h-current)
    dvdt = np.diff(v[2]) * fs / 1000.0
    crossings = np.flatnonzero((dvdt[1:] >= 20) & (dvdt[:-1] < 20))
    assert 3 <= crossings.size <= 60  # spikes at +250 pA
    assert v[2].max() > 20  # overshooting action potentials


@pytest.mark.parametrize("with_bad", [True])
def test_generate_demo_layout(tmp_path: Path, with_bad: bool) -> None:
    cells = generate.generate_demo(tmp_path, cells_per_group=1, with_bad_file=with_bad)
    assert len(cells) == 5
    for cell in cells:
        rel = cell.path.relative_to(tmp_path).parts
        assert rel[:3] == (generate.LAB, cell.condition, cell.timepoint)
        assert pyabf.ABF(str(cell.path)).sweepCount == generate.N_SWEEPS
    bad = pyabf.ABF(str(cells[-1].path))
    assert bad.sweepY.mean() < -1000  # gain error: x20
