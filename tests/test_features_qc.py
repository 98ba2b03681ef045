"""Sweep QC: profiles, damaged copies of a real sweep, default cell features.

Bad sweeps are made from sweep 4 (0 pA) of ``171116sh_0018.abf``, a clean
sweep (fast noise ~0.08 mV RMS, baseline -61.7 mV): each damage must fail for
its own reason and the intact sweep must pass.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from functools import cache

import numpy as np
import pyabf
import pytest

from tests.conftest import ABF_DIR
from transforms.errors import InvalidArgument
from transforms.formats.abf import read_abf
from transforms.icephys.extract import IcephysFeatures, IcephysParams, extract_features
from transforms.icephys.sweep_qc import QC_PROFILES
from transforms.recording.icephys import IcephysRecording

REFERENCE = json.loads((ABF_DIR / "ipfx_reference.json").read_text())
CLEAN = "171116sh_0018.abf"
RATE_HZ = 20000.0
STIM_START, STIM_END = 2937, 12937  # first epoch, from the epoch table (test_features_stimulus)


@cache
def _recording(name: str) -> IcephysRecording:
    return read_abf(ABF_DIR / name)


@cache
def _default(name: str) -> IcephysFeatures:
    return extract_features(_recording(name))


def _with_sweep4(response: np.ndarray, **params: object) -> dict:
    """Features of sweep 4 of the clean file with its response replaced."""
    rec = _recording(CLEAN)
    s = rec.sweeps[4]
    # the command stays whole: a truncated file still holds its protocol
    damaged = replace(s, response=response)
    sweeps = tuple(damaged if x.number == 4 else x for x in rec.sweeps)
    feats = extract_features(replace(rec, sweeps=sweeps), params=IcephysParams(**params))  # type: ignore[arg-type]
    return next(r for r in feats.sweeps.to_pylist() if r["sweep_number"] == 4)


def _clean_v() -> np.ndarray:
    return _recording(CLEAN).sweeps[4].response.copy()


def test_profiles() -> None:
    assert QC_PROFILES["ipfx"].pre_noise_rms_mv_max == 0.07
    assert QC_PROFILES["ipfx"].slow_noise_rms_mv_max == 0.5
    assert QC_PROFILES["ipfx"].vm_delta_mv_max == 1.0
    d = IcephysParams().as_dict()
    assert d["qc_profile"] == "neurocyte" and d["pre_noise_rms_mv_max"] == 0.3
    assert IcephysParams(qc_profile="ipfx", vm_delta_mv_max=2.0).as_dict()["vm_delta_mv_max"] == 2.0
    with pytest.raises(InvalidArgument, match="unknown sweep QC profile"):
        IcephysParams(qc_profile="strict")


def test_intact_sweep_passes_and_ipfx_profile_fails_it_on_noise() -> None:
    v = _clean_v()
    assert _with_sweep4(v)["qc_pass"]
    row = _with_sweep4(v, qc_profile="ipfx")
    # hand computation: RMS about the mean of the 1.5 ms windows IPFX uses
    n = int(0.0015 * RATE_HZ)
    pre = v[0:n]  # the 500 ms pre-stimulus epoch is clamped to the sweep start
    post = v[-n:]
    pre_rms = float(np.sqrt(np.mean((pre - pre.mean()) ** 2)))
    post_rms = float(np.sqrt(np.mean((post - post.mean()) ** 2)))
    assert pre_rms > 0.07 and post_rms > 0.07
    assert row["qc_reasons"] == (
        f"pre_noise_rms {pre_rms:.3f} mV > 0.07;post_noise_rms {post_rms:.3f} mV > 0.07"
    )


def test_noisy_sweep_fails_on_fast_noise() -> None:
    v = _clean_v() + np.random.default_rng(7).normal(0.0, 1.0, _clean_v().size)
    reasons = _with_sweep4(v)["qc_reasons"].split(";")
    assert reasons[0].startswith("pre_noise_rms ")
    assert any(r.startswith("post_noise_rms ") for r in reasons)


def test_drifting_sweep_fails_on_vm_delta() -> None:
    v = _clean_v() + np.linspace(0.0, 10.0, _clean_v().size)  # 10 mV over 3 s
    row = _with_sweep4(v)
    assert not row["qc_pass"]
    assert row["qc_reasons"].startswith("vm_delta ")
    # baseline epoch [0, 2936) ends near +0.5 mV, last 500 ms average +9.2 mV
    delta = float(row["qc_reasons"].split()[1])
    assert 7.0 < delta < 10.0


def test_unstable_baseline_fails_on_slow_noise() -> None:
    v = _clean_v()
    t = np.arange(STIM_START) / RATE_HZ
    v[:STIM_START] += 5.0 * np.sin(2 * np.pi * 10.0 * t)  # 10 Hz, 5 mV: RMS 3.5 mV
    assert "slow_noise_rms " in _with_sweep4(v)["qc_reasons"]


def test_nan_and_truncated_sweeps() -> None:
    v = _clean_v()
    v[8000:] = np.nan  # the recording turns to NaN during the stimulus
    assert _with_sweep4(v)["qc_reasons"] == "truncated"
    short = _clean_v()[:8000]  # stops 0.4 s in, before its series' step ends at 0.647 s
    assert _with_sweep4(short)["qc_reasons"] == "truncated"
    short = _clean_v()[:2000]  # stops before any stimulus
    assert _with_sweep4(short)["qc_reasons"] == "truncated"
    assert _with_sweep4(np.full(_clean_v().size, np.nan))["qc_reasons"] == "no_data"


def test_flat_sweep() -> None:
    row = _with_sweep4(np.full(_clean_v().size, -65.0))
    assert row["qc_reasons"] == "flat" and not row["qc_pass"]


@pytest.mark.parametrize("name", ["171116sh_0018.abf", "File_axon_5.abf", "190619B_0003.abf"])
def test_clean_cells_pass_by_default(name: str) -> None:
    rows = _default(name).sweeps.to_pylist()
    passed = [r for r in rows if r["qc_pass"]]
    assert len(passed) >= 0.8 * len(rows), [r["qc_reasons"] for r in rows]
    cell = _default(name).cell.to_pylist()
    assert len(cell) == 1 and cell[0]["n_sweeps_used"] == len(passed)


def _close(ours: float | None, ref: float | None, *, rel: float = 0.0, abs_: float = 0.0) -> bool:
    if ref is None:
        return ours is None or math.isnan(ours)
    return ours is not None and math.isclose(ours, ref, rel_tol=rel, abs_tol=abs_)


@pytest.mark.parametrize("name", ["File_axon_5.abf", "190619B_0003.abf"])
def test_default_cell_features_match_ipfx_single_epoch(name: str) -> None:
    # one stimulus epoch: the default window is IPFX's, and every sweep passes
    ref = REFERENCE[name]["cell"]
    cell = _default(name).cell.to_pylist()[0]
    assert cell["rheobase_pa"] == ref["rheobase_i"]
    assert _close(cell["fi_slope_hz_per_pa"], ref["fi_fit_slope"], rel=0.05)
    assert _close(cell["sag_ratio"], ref["sag"], rel=0.05)
    assert _close(cell["vm_for_sag_mv"], ref["vm_for_sag"], abs_=1e-3)
    assert _close(cell["v_rest_mv"], ref["v_baseline"], abs_=1e-3)
    if name == "File_axon_5.abf":  # 190619B: see test_features_ipfx's module doc
        assert _close(cell["input_resistance_mohm"], ref["input_resistance"], rel=0.05)
        assert cell["tau_ms"] == pytest.approx(ref["tau"] * 1e3, rel=0.10)


def test_default_cell_features_dual_protocol() -> None:
    # first-epoch window: the window-independent features still match IPFX
    ref = REFERENCE[CLEAN]["cell"]
    cell = _default(CLEAN).cell.to_pylist()[0]
    assert cell["rheobase_pa"] == ref["rheobase_i"]
    assert _close(cell["v_rest_mv"], ref["v_baseline"], abs_=1e-3)
    assert _close(cell["vm_for_sag_mv"], ref["vm_for_sag"], abs_=1e-3)


def test_spontaneously_firing_baselines_fail_on_slow_noise() -> None:
    # 17o05028_ic_steps.abf rests near -43 mV and fires in the pre-stimulus
    # epoch of sweeps 1-9 (read with pyabf: samples above 0 mV before 0.147 s);
    # sweep 0 does not fire but its baseline climbs 12 mV (-48 to -36 mV)
    abf = pyabf.ABF(str(ABF_DIR / "17o05028_ic_steps.abf"))
    firing, ranges = [], []
    for n in range(abf.sweepCount):
        abf.setSweep(n)
        pre = abf.sweepY[: STIM_START - 1]
        ranges.append(float(np.ptp(pre)))
        if (pre > 0).any():
            firing.append(n)
    assert firing == list(range(1, 10)) and ranges[0] > 10.0
    rows = _default("17o05028_ic_steps.abf").sweeps.to_pylist()
    for r in rows:
        if r["sweep_number"] <= 9:
            assert r["qc_reasons"].startswith("slow_noise_rms "), r
    cell = _default("17o05028_ic_steps.abf").cell.to_pylist()
    assert len(cell) == 1 and cell[0]["n_sweeps_used"] == sum(r["qc_pass"] for r in rows)
