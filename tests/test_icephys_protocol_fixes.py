"""Patch-clamp protocols and files the readers used to get wrong (generated fixtures).

* A fixed -100 pA pre-pulse before the test step (``FICurve_Hyperpolarizing``:
  pulse, rest, step; Clampex ``IC1``: pulse straight into the step): the
  analysed window must be the test step, not the pre-pulse.
* An ABF whose only input is labelled ``A`` (amperes) with values of order 1:
  refused, and the message says the label is implausible.
* A dropped second input of the same kind is flagged in the reader's flags.
* An ABF1 command read from a stimulus file is an unknown command, not a crash.
"""

from __future__ import annotations

import struct
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import query
from transforms.errors import UnsupportedRecording
from transforms.formats.abf import read_abf
from transforms.formats.abf1_writer import AdcInput, StepEpoch, command_waveform, write_abf1
from transforms.icephys.extract import IcephysParams, extract_features
from transforms.pipeline import ingest_paths
from transforms.synth.neuron import CellParams, simulate

RATE_HZ = 20_000.0
N_SWEEPS = 8
STEP_PA = (-50.0, 50.0)  # first level, increment per sweep


def _samples(seconds: float) -> int:
    return int(seconds * RATE_HZ)


def _write(path: Path, epochs: list[StepEpoch], duration_s: float) -> Path:
    """A simulated regular-spiking cell driven by ``epochs``, as an ABF1 file."""
    n = _samples(duration_s)
    command = command_waveform(n, N_SWEEPS, epochs)
    v = simulate(command, sampling_rate_hz=RATE_HZ, cells=[CellParams()] * N_SWEEPS, seed=3)
    return write_abf1(
        path, v, sampling_rate_hz=RATE_HZ, epochs=epochs, recorded_at=datetime(2026, 1, 5, 9)
    )


PREPULSE_THEN_REST = [
    StepEpoch(_samples(0.1), 0.0),
    StepEpoch(_samples(0.3), -100.0),  # the fixed pre-pulse
    StepEpoch(_samples(0.6), 0.0),  # rest
    StepEpoch(_samples(0.5), *STEP_PA),  # the test step
    StepEpoch(_samples(0.1), 0.0),
]
PREPULSE_INTO_STEP = [
    StepEpoch(_samples(0.1), 0.0),
    StepEpoch(_samples(0.3), -100.0),
    StepEpoch(_samples(0.7), *STEP_PA),  # straight after the pre-pulse
    StepEpoch(_samples(0.1), 0.0),
]


def _test_step_start_s(epochs: list[StepEpoch], duration_s: float, test: int) -> float:
    """Start of epoch ``test``: epochs follow a 1/64-sweep hold, as in pClamp."""
    n = _samples(duration_s)
    return (n // 64 + sum(e.duration_samples for e in epochs[:test])) / RATE_HZ


@pytest.mark.parametrize(
    ("epochs", "duration_s", "test", "settled"),
    [(PREPULSE_THEN_REST, 1.8, 3, True), (PREPULSE_INTO_STEP, 1.4, 2, False)],
    ids=["pulse-rest-step", "pulse-into-step"],
)
def test_window_lands_on_the_test_step(
    tmp_path: Path, epochs: list[StepEpoch], duration_s: float, test: int, settled: bool
) -> None:
    path = _write(tmp_path / "prepulse.abf", epochs, duration_s)
    features = extract_features(read_abf(path))
    rows = features.sweeps.to_pylist()
    start = _test_step_start_s(epochs, duration_s, test)
    length = epochs[test].duration_samples / RATE_HZ
    assert [r["stim_amp_pa"] for r in rows] == [STEP_PA[0] + STEP_PA[1] * k for k in range(8)]
    for r in rows:
        assert r["stimulus_kind"] == "long_square"
        assert r["stim_start_s"] == pytest.approx(start, abs=1e-9)
        assert r["stim_end_s"] == pytest.approx(start + length, abs=1e-9)
    # the cell fires on the depolarising steps, and the cell features see it
    counts = [r["spike_count"] for r in rows]
    assert counts[:3] == [0, 0, 0] and all(c > 0 for c in counts[4:])
    if settled:  # 0.6 s of rest: the pre-stimulus epochs of sweep QC are quiet
        assert all(r["qc_pass"] for r in rows[:6])
        cell = features.cell.to_pylist()[0]
    else:  # the 0.5 s before the step is the pre-pulse: IPFX's stability QC fails, rightly
        assert all("vm_delta" in r["qc_reasons"] for r in rows)
        ungated = extract_features(read_abf(path), params=IcephysParams(qc_gates_cell=False))
        cell = ungated.cell.to_pylist()[0]
    assert cell["analysis"] == "long_square"
    assert cell["rheobase_pa"] == 100.0
    # IPFX's first-to-last span keeps the pre-pulse: the mode is still there to compare
    ipfx = extract_features(read_abf(path), params=IcephysParams(stim_window="ipfx"))
    first = ipfx.sweeps.to_pylist()[0]
    assert first["stim_start_s"] < start


def test_dual_protocol_keeps_its_first_epoch(tmp_path: Path) -> None:
    """The documented "dual" protocol (step, rest, fixed pulse) is not moved."""
    epochs = [
        StepEpoch(_samples(0.1), 0.0),
        StepEpoch(_samples(0.5), *STEP_PA),
        StepEpoch(_samples(0.5), 0.0),
        StepEpoch(_samples(0.2), -100.0),
        StepEpoch(_samples(0.1), 0.0),
    ]
    rows = extract_features(read_abf(_write(tmp_path / "dual.abf", epochs, 1.6))).sweeps
    start = _test_step_start_s(epochs, 1.6, 1)
    assert rows.column("stim_start_s").to_pylist() == pytest.approx([start] * N_SWEEPS, abs=1e-9)
    assert rows.column("stim_amp_pa").to_pylist()[:3] == [-50.0, 0.0, 50.0]


def test_ampere_labelled_input_is_refused_with_the_reason(tmp_path: Path) -> None:
    v = np.tile(np.linspace(-5.0, 6.0, 4000), (2, 1))  # values of order 1, labelled A
    path = write_abf1(
        tmp_path / "amperes.abf",
        v,
        sampling_rate_hz=10_000.0,
        epochs=[StepEpoch(1000, 0.0), StepEpoch(1000, 50.0)],
        recorded_at=datetime(2026, 1, 5, 9),
        adc_name="IN 0",
        adc_unit="A",
    )
    with pytest.raises(UnsupportedRecording) as info:
        read_abf(path)
    message = str(info.value)
    assert "amperes.abf" in message
    assert "'IN 0' is labelled 'A' (amperes)" in message
    assert "-5 to 6" in message and "implausible as amperes" in message
    # through ingest: a clear failure, not a crash
    lake = tmp_path / "lake"
    summary = ingest_paths([path], lake=str(lake), lab="l", condition="c", timepoint="t")
    (outcome,) = summary.outcomes
    assert outcome.status == "failed" and "implausible as amperes" in (outcome.reason or "")
    assert query(lake, "SELECT status FROM ingest_log") == [("failed",)]


def test_second_headstage_is_flagged_not_silently_dropped(tmp_path: Path) -> None:
    epochs = [StepEpoch(1000, 0.0), StepEpoch(4000, -50.0, 50.0), StepEpoch(1000, 0.0)]
    n = 8000
    command = command_waveform(n, 3, epochs)
    cells = [CellParams()] * 3
    v0 = simulate(command, sampling_rate_hz=10_000.0, cells=cells, seed=1)
    v1 = v0 - 5.0  # a second cell's Vm on IN 1
    current_monitor = command / 1000.0  # nA: another kind of unit, not a response
    path = write_abf1(
        tmp_path / "pair.abf",
        v0,
        sampling_rate_hz=10_000.0,
        epochs=epochs,
        recorded_at=datetime(2026, 1, 5, 9),
        adc_name="IN 0",
        extra_inputs=(
            AdcInput("IN 1", "mV", v1),
            AdcInput("I_mon", "nA", current_monitor),
        ),
    )
    rec = read_abf(path)
    assert rec.channel_names == ("IN 0", "IN 1", "I_mon")
    assert rec.channel_units == ("mV", "mV", "nA")
    assert rec.qc_flags == ("other_channels_ignored:IN 1",)
    np.testing.assert_allclose(rec.sweeps[1].response, v0[1], atol=2e-3)  # 16-bit steps
    lake = tmp_path / "lake"
    ingest_paths([path], lake=str(lake), lab="l", condition="c", timepoint="t")
    assert query(lake, "SELECT reader_qc_flags FROM icephys_recordings") == [
        ("other_channels_ignored:IN 1",)
    ]


def test_abf1_stimulus_file_waveform_is_an_unknown_command(tmp_path: Path) -> None:
    """ABF1 DAC waveform from a stimulus file (nWaveformSource 2): pyabf raised
    UnboundLocalError; now the command is unknown and the file still reads."""
    path = write_abf1(
        tmp_path / "stimfile.abf",
        np.full((2, 4000), -65.0),
        sampling_rate_hz=10_000.0,
        epochs=[StepEpoch(1000, 0.0), StepEpoch(1000, 50.0)],
        recorded_at=datetime(2026, 1, 5, 9),
    )
    raw = bytearray(path.read_bytes())
    struct.pack_into("2h", raw, 2300, 2, 0)  # nWaveformSource: DAC 0 from a stimulus file
    path.write_bytes(bytes(raw))
    rec = read_abf(path)
    assert rec.qc_flags == ("command_unavailable",)
    assert all(s.command is None for s in rec.sweeps)
    rows = extract_features(rec).sweeps.to_pylist()
    assert {r["stimulus_kind"] for r in rows} == {"hold"}
