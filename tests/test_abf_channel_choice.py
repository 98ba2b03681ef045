"""The command DAC is chosen from the epoch table, not from every sweep's waveform.

A generated two-DAC ABF1 file (DAC 0 idle at a holding level, DAC 1 stepping, as
``18425108_abf1.abf`` is wired) with many sweeps: the reader picks DAC 1, its
commands equal pyabf's ``sweepC``, and pyabf synthesises a waveform only for
the sweeps of the chosen DAC (a spy on pyabf's own ``getWaveform`` counts the
calls; before the change the idle DAC cost one waveform per sweep as well).
"""

from __future__ import annotations

import struct
from datetime import datetime
from pathlib import Path

import numpy as np
import pyabf
import pyabf.waveform
import pytest

from transforms.formats.abf import read_abf
from transforms.formats.abf1_writer import AdcInput, StepEpoch, write_abf1

N_SWEEPS = 60
N_SAMPLES = 4000


def _two_dac_file(
    path: Path, *, middle_pa: float = -100.0, delta_pa: float = 10.0, outer_pa: float = 0.0
) -> Path:
    """DAC 0 holds -20 pA throughout; DAC 1 (holding -20 pA as written) goes to
    ``outer_pa``, then ``middle_pa + delta_pa * sweep``, then ``outer_pa``."""
    rng = np.random.default_rng(3)
    vm = -70.0 + rng.normal(0.0, 0.2, (N_SWEEPS, N_SAMPLES))
    monitor = AdcInput("Imon", "pA", rng.normal(0.0, 1.0, (N_SWEEPS, N_SAMPLES)))
    write_abf1(
        path,
        vm,
        sampling_rate_hz=20_000.0,
        epochs=[StepEpoch(1000, -20.0), StepEpoch(1500, -20.0), StepEpoch(1000, -20.0)],
        recorded_at=datetime(2024, 5, 1, 12, 0, 0),
        extra_inputs=(monitor,),
    )
    # ABF1 keeps 10 epoch slots per DAC: slots 10-19 are DAC 1's (pyabf's layout).
    raw = bytearray(path.read_bytes())
    struct.pack_into("2h", raw, 2296, 1, 1)  # nWaveformEnable: both DACs
    struct.pack_into("2h", raw, 2300, 1, 1)  # nWaveformSource: both from epochs
    for slot, (level, delta, samples) in enumerate(
        [(outer_pa, 0.0, 800), (middle_pa, delta_pa, 2000), (outer_pa, 0.0, 800)]
    ):
        i = 10 + slot
        struct.pack_into("h", raw, 2308 + 2 * i, 1)  # step
        struct.pack_into("f", raw, 2348 + 4 * i, level)
        struct.pack_into("f", raw, 2428 + 4 * i, delta)
        struct.pack_into("i", raw, 2508 + 4 * i, samples)
    path.write_bytes(bytes(raw))
    return path


@pytest.fixture()
def waveform_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count pyabf's waveform syntheses (the real method still runs)."""
    calls: list[int] = []
    real = pyabf.waveform.EpochSweepWaveform.getWaveform

    def counting(self: pyabf.waveform.EpochSweepWaveform) -> np.ndarray:
        calls.append(1)
        return real(self)

    monkeypatch.setattr(pyabf.waveform.EpochSweepWaveform, "getWaveform", counting)
    return calls


def test_idle_dac_is_skipped_from_its_epoch_table(tmp_path: Path, waveform_calls) -> None:
    path = _two_dac_file(tmp_path / "two_dac.abf")
    rec = read_abf(path)
    assert rec.clamp_mode == "current_clamp"
    assert rec.metadata["command_dac"].startswith("1:")
    assert rec.metadata["response_channel"].startswith("0:")
    # one synthesis per sweep, for the chosen DAC only (was 2 per sweep)
    assert len(waveform_calls) == N_SWEEPS
    abf = pyabf.ABF(str(path))
    for k in (0, 1, N_SWEEPS - 1):
        abf.setSweep(k, channel=1)
        command = rec.sweeps[k].command
        assert command is not None
        np.testing.assert_array_equal(command, abf.sweepC)
        abf.setSweep(k, channel=0)
        np.testing.assert_array_equal(rec.sweeps[k].response, abf.sweepY)
    assert {float(rec.sweeps[k].command.min()) for k in (0, 5)} == {-100.0, -50.0}  # type: ignore[union-attr]


def test_dac_stepping_within_sweeps_only_is_active(tmp_path: Path, waveform_calls) -> None:
    """The same level in every sweep, but off its holding level: it steps, it is chosen."""
    rec = read_abf(_two_dac_file(tmp_path / "fixed.abf", delta_pa=0.0))
    assert rec.metadata["command_dac"].startswith("1:")
    assert len(waveform_calls) == N_SWEEPS


def test_no_stepping_dac_falls_back_to_dac0(tmp_path: Path, waveform_calls) -> None:
    """Neither DAC changes: the units of DAC 0 decide, as when waveforms were compared."""
    path = _two_dac_file(tmp_path / "flat.abf", middle_pa=-20.0, delta_pa=0.0, outer_pa=-20.0)
    rec = read_abf(path)
    assert rec.metadata["command_dac"].startswith("0:")
    assert len(waveform_calls) == N_SWEEPS  # only DAC 0's, for its commands
    abf = pyabf.ABF(str(path))
    abf.setSweep(3, channel=0)
    np.testing.assert_array_equal(rec.sweeps[3].command, abf.sweepC)  # type: ignore[arg-type]
