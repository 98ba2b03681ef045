"""Stimulus recognition on real ABF commands (expected values read off pyabf's epoch tables)."""

from __future__ import annotations

import pytest

from tests.conftest import ABF_DIR
from transforms.formats.abf import read_abf
from transforms.icephys.extract import IcephysParams, extract_features
from transforms.icephys.stimulus import StimulusParams, describe_stimulus


def _rows(name: str, **kw: object) -> list[dict]:
    return extract_features(read_abf(ABF_DIR / name), params=IcephysParams(**kw)).sweeps.to_pylist()  # type: ignore[arg-type]


def test_long_square_first_epoch_of_dual_protocol() -> None:
    # epoch table: step at samples 2937..12937 (0.14685-0.64685 s), rest, -100 pA pulse, step again
    rows = _rows("171116sh_0018.abf")
    r = rows[6]
    assert r["stimulus_kind"] == "long_square"
    assert r["stim_amp_pa"] == 50.0
    assert r["stim_start_s"] == pytest.approx(0.14685)
    assert r["stim_end_s"] == pytest.approx(0.64685)
    assert r["n_stim_epochs"] == 4  # 50 pA, rest, -100 pA, 50 pA
    # the 0 pA sweep joins the series with the series' window
    assert rows[4]["stimulus_kind"] == "long_square" and rows[4]["stim_amp_pa"] == 0.0
    assert rows[4]["stim_start_s"] == pytest.approx(0.14685)


def test_ipfx_window_spans_all_epochs() -> None:
    r = _rows("171116sh_0018.abf", stim_window="ipfx")[6]
    assert r["stim_end_s"] == pytest.approx(2.14685)


def test_short_square() -> None:
    r = _rows("File_axon_6.abf")[0]
    assert r["stimulus_kind"] == "short_square"
    assert r["stim_amp_pa"] == 2000.0
    assert r["stim_start_s"] == pytest.approx(0.2156, abs=1e-4)


def test_ramp_and_zero_ramp() -> None:
    rec = read_abf(ABF_DIR / "17o05027_ic_ramp.abf")
    stim = describe_stimulus(rec.sweeps[1], params=StimulusParams())
    assert stim.kind == "ramp"
    assert stim.amplitude == pytest.approx(10.0, abs=0.5)  # epoch table: ramp to 10 pA
    rows = _rows("17o05027_ic_ramp.abf")
    assert rows[0]["stimulus_kind"] == "ramp" and rows[0]["stim_amp_pa"] == 0.0


def test_voltage_clamp_and_gap_free() -> None:
    vc = _rows("17o05024_vc_steps.abf")
    assert {r["stimulus_kind"] for r in vc} == {"voltage_clamp"}
    assert all(r["spike_count"] is None and r["stim_amp_pa"] is None for r in vc)
    assert vc[0]["stim_amp_mv"] is not None
    gf = _rows("2020_07_29_0062.abf")
    assert gf[0]["stimulus_kind"] == "hold"
    assert gf[0]["stim_start_s"] is None
    assert gf[0]["v_baseline_mv"] is not None
