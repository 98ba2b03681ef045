"""ABF decoding against pyabf read directly, for every shared ABF file.

The expected clamp mode, channel, command DAC and scale factors are a table
written by hand from pyabf's channel/DAC listing and the traces themselves
(e.g. ``18425108_abf1.abf``: ADC 0 ``Imemb`` nA, ADC 1 ``10_Vm`` mV swinging
-91..19 mV with spikes, DAC 0 ``Cmd 0`` mV idle at 0, DAC 1 ``ME1`` nA stepping
to -0.05 nA: current clamp on ADC 1 driven by DAC 1). Values are compared with
pyabf's ``sweepY``/``sweepC`` times those hand-set factors, never with the
reader's own unit table.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyabf
import pytest

from tests.conftest import ABF_DIR, ABF_FILES
from transforms.formats.abf import read_abf
from transforms.icephys.extract import extract_features


class Expected(NamedTuple):
    mode: str
    channel: int
    response_scale: float  # to mV (current clamp) or pA (voltage clamp)
    dac: int | None  # None: no command (gap-free or unknown units)
    command_scale: float
    flags: tuple[str, ...] = ()


EXPECTED = {
    "171116sh_0016.abf": Expected("current_clamp", 0, 1.0, 0, 1.0),
    "171116sh_0018.abf": Expected("current_clamp", 0, 1.0, 0, 1.0),
    "17o05024_vc_steps.abf": Expected("voltage_clamp", 0, 1.0, 0, 1.0),
    "17o05027_ic_ramp.abf": Expected("current_clamp", 0, 1.0, 0, 1.0),
    "17o05028_ic_steps.abf": Expected("current_clamp", 0, 1.0, 0, 1.0),
    # command on DAC 1 in nA (x1000 to pA), Vm on ADC 1 in mV
    "18425108_abf1.abf": Expected("current_clamp", 1, 1.0, 1, 1000.0),
    # two mV inputs (IN 0, IN 2): the second is dropped, and said so
    "190619B_0003.abf": Expected("current_clamp", 0, 1.0, 0, 1.0, ("other_channels_ignored:IN 2",)),
    "2020_07_29_0062.abf": Expected("current_clamp", 0, 1.0, None, 1.0),  # gap-free
    "File_axon_5.abf": Expected("current_clamp", 0, 1.0, 0, 1.0),
    "File_axon_6.abf": Expected("current_clamp", 0, 1.0, 0, 1.0),
    "File_axon_7.abf": Expected("voltage_clamp", 0, 1.0, 0, 1.0),
    "invalidDate-abf1.abf": Expected("voltage_clamp", 0, 1.0, None, 1.0, ("invalid_date",)),
    "opto_aps_bad_units.abf": Expected("current_clamp", 0, 1.0, 0, 1.0, ("units_mislabelled",)),
    "pclamp11_4ch.abf": Expected(
        "voltage_clamp", 0, 1.0, 0, 1.0, ("other_channels_ignored:IN 1,IN 2,IN 3",)
    ),
}


def test_table_covers_every_file() -> None:
    assert sorted(EXPECTED) == [p.name for p in ABF_FILES]


@pytest.mark.parametrize("path", ABF_FILES, ids=[p.name for p in ABF_FILES])
def test_against_pyabf(path) -> None:  # type: ignore[no-untyped-def]
    exp = EXPECTED[path.name]
    rec = read_abf(path)
    abf = pyabf.ABF(str(path))
    assert rec.clamp_mode == exp.mode
    assert rec.qc_flags == exp.flags
    assert len(rec.sweeps) == abf.sweepCount
    assert rec.sampling_rate_hz == abf.sampleRate
    assert rec.channel_units == tuple(u.replace("\x00", "").strip() for u in abf.adcUnits)
    for number, sweep in enumerate(rec.sweeps):
        abf.setSweep(number, channel=exp.channel)
        assert sweep.number == number
        assert sweep.response_unit == ("mV" if exp.mode == "current_clamp" else "pA")
        np.testing.assert_array_equal(sweep.response, abf.sweepY * exp.response_scale)
        if exp.dac is None:
            assert sweep.command is None
        else:
            abf.setSweep(number, channel=exp.dac)
            assert sweep.command is not None
            np.testing.assert_array_equal(sweep.command, abf.sweepC * exp.command_scale)


def test_dac1_current_command_in_nA_gives_current_clamp_in_pA() -> None:
    rec = read_abf(ABF_DIR / "18425108_abf1.abf")
    s = rec.sweeps[0]
    assert s.command is not None
    # hand inspection: a -0.05 nA step from 0.25 s to 0.5 s at 25 kHz
    assert s.command.min() == pytest.approx(-50.0, abs=1e-4)
    assert np.flatnonzero(np.diff(s.command)).tolist() == [6249, 12499]
    # Vm, not Imemb: a resting potential around -71 mV with spikes above 0 mV
    assert -80 < float(np.median(s.response)) < -60 and s.response.max() > 0


def test_gap_free_single_long_sweep() -> None:
    rec = read_abf(ABF_DIR / "2020_07_29_0062.abf")
    assert rec.metadata["operation_mode"] == "gap_free"
    assert len(rec.sweeps) == 1 and rec.sweeps[0].n_samples == 184320
    assert rec.sweeps[0].duration_s == pytest.approx(18.432)


def test_slow_sampling_and_four_channels() -> None:
    slow = read_abf(ABF_DIR / "File_axon_7.abf")
    assert slow.sampling_rate_hz == 403.0 and slow.sweeps[0].n_samples == 1615
    four = read_abf(ABF_DIR / "pclamp11_4ch.abf")
    assert four.channel_units == ("pA",) * 4 and four.metadata["response_channel"] == "0:IN 0"


def test_invalid_date_is_dropped_and_flagged() -> None:
    rec = read_abf(ABF_DIR / "invalidDate-abf1.abf")
    assert rec.recorded_at is None and rec.source_format == "abf1"


def test_mislabelled_units_kept_as_recorded_and_rows_produced() -> None:
    rec = read_abf(ABF_DIR / "opto_aps_bad_units.abf")
    assert rec.qc_flags == ("units_mislabelled",)
    # hand inspection: a Vm-like trace on a wrong scale, -1595..816 "pA"
    assert rec.sweeps[0].response.min() == pytest.approx(-1595, abs=1)
    rows = extract_features(rec).sweeps.to_pylist()
    assert len(rows) == 3
    for r in rows:
        assert not r["qc_pass"] and "units_mislabelled" in r["qc_reasons"]
        assert r["v_baseline_mv"] is not None and r["v_baseline_mv"] < -1000  # the lake gate's cue
