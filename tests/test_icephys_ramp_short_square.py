"""Agreement with IPFX 2.1.2 on the shared ramp and short-square files.

The reference (``tests/data/ipfx_ramp_short_square_reference.json``) was
computed by IPFX 2.1.2 itself (``RampAnalysis`` / ``ShortSquareAnalysis``) in a
separate environment by ``scripts/ipfx_reference_ramp_short_square.py``; the
project does not depend on ipfx.

Tolerances, met by any x86-64 CPU: spike sample indices must agree exactly, so
times agree to 1e-9 s (one sample is 5e-5 s) and voltages, which are raw
samples, to 1e-6 mV; values derived from the filtered dV/dt (upstroke,
downstroke and their ratio) to a relative 1e-6, since the Bessel filter's
floating-point sums may round differently; the command current at threshold
to 1e-6 pA; mean features to the same tolerances.

Documented departures, asserted as such:

* ramps: the onset is the sweep's own (IPFX with ``test_pulse=False``); the
  flat 0 pA sweep of each file is not a ramp sweep (see :mod:`transforms.icephys.ramp`);
* short squares: the project measures latency and rate from the pulse onset;
  IPFX, which passes no window, from t = 0 (``latency_ipfx = latency + onset``,
  ``rate_ipfx = rate * (t_end - onset) / t_end``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import ABF_DIR
from tests.helpers import land, query
from transforms.formats.abf import read_abf
from transforms.icephys.extract import IcephysFeatures, IcephysParams, extract_features
from transforms.pipeline import ingest_paths

REFERENCE = json.loads(
    (Path(__file__).parent / "data" / "ipfx_ramp_short_square_reference.json").read_text()
)
FILES = sorted(k for k in REFERENCE if not k.startswith("_"))
_CACHE: dict[str, IcephysFeatures] = {}

T_ABS = 1e-9  # s
V_ABS = 1e-6  # mV
I_ABS = 1e-6  # pA
DVDT_REL = 1e-6
#: IPFX spike field -> (project spike column, tolerance kind)
SPIKE_FIELDS = {
    "threshold_t": ("threshold_t_s", "t"),
    "threshold_v": ("threshold_v_mv", "v"),
    "peak_t": ("peak_t_s", "t"),
    "peak_v": ("peak_v_mv", "v"),
    "trough_t": ("trough_t_s", "t"),
    "trough_v": ("trough_v_mv", "v"),
    "fast_trough_t": ("fast_trough_t_s", "t"),
    "fast_trough_v": ("fast_trough_v_mv", "v"),
    "slow_trough_t": ("slow_trough_t_s", "t"),
    "slow_trough_v": ("slow_trough_v_mv", "v"),
    "adp_v": ("adp_v_mv", "v"),
    "upstroke": ("upstroke_mv_per_ms", "d"),  # V/s == mV/ms
    "downstroke": ("downstroke_mv_per_ms", "d"),
    "upstroke_downstroke_ratio": ("upstroke_downstroke_ratio", "d"),
    "width": ("width_ms", "w"),
}


def features(name: str) -> IcephysFeatures:
    if name not in _CACHE:
        _CACHE[name] = extract_features(read_abf(ABF_DIR / name), params=IcephysParams())
    return _CACHE[name]


def close(ours: float | None, ref: float | None, kind: str) -> bool:
    if ref is None:
        return ours is None or math.isnan(ours)
    if ours is None:
        return False
    if kind == "t":
        return abs(ours - ref) <= T_ABS
    if kind == "v":
        return abs(ours - ref) <= V_ABS
    if kind == "i":
        return abs(ours - ref) <= I_ABS
    if kind == "w":  # width: IPFX in s, the project in ms
        return abs(ours - ref * 1e3) <= T_ABS * 1e3
    return math.isclose(ours, ref, rel_tol=DVDT_REL, abs_tol=1e-12)


def cell_column(base: str) -> tuple[str, str]:
    """IPFX's feature name (without the analysis suffix) -> column suffix, tolerance kind."""
    if base == "upstroke_downstroke_ratio":
        return base, "d"
    if base == "threshold_i":
        return "threshold_i_pa", "i"
    return (f"{base}_mv", "v") if base.endswith("_v") else (f"{base}_s", "t")


SWEEP_CASES = [(f, s["sweep"]) for f in FILES for s in REFERENCE[f]["sweeps"]]


@pytest.mark.parametrize(("name", "sweep"), SWEEP_CASES)
def test_every_spike_matches_ipfx(name: str, sweep: int) -> None:
    ref = next(s for s in REFERENCE[name]["sweeps"] if s["sweep"] == sweep)
    ours = [s for s in features(name).spikes.to_pylist() if s["sweep_number"] == sweep]
    assert len(ours) == ref["spike_count"] == len(ref["spikes"])
    for k, (mine, theirs) in enumerate(zip(ours, ref["spikes"], strict=True)):
        for field, (column, kind) in SPIKE_FIELDS.items():
            assert close(mine[column], theirs[field], kind), (k, field, mine[column], theirs[field])
        assert mine["clipped"] == theirs["clipped"]
        assert mine["isi_type"] == theirs["isi_type"]


@pytest.mark.parametrize(("name", "sweep"), SWEEP_CASES)
def test_sweep_features_match_ipfx(name: str, sweep: int) -> None:
    entry = REFERENCE[name]
    ref = next(s for s in entry["sweeps"] if s["sweep"] == sweep)["sweep_features"]
    row = next(r for r in features(name).sweeps.to_pylist() if r["sweep_number"] == sweep)
    assert row["stimulus_kind"] == entry["protocol_kind"]
    onset = entry["stim_window_ipfx"]["test_pulse_False"]["start_s"]
    assert row["stim_start_s"] == pytest.approx(onset, abs=T_ABS)
    assert row["filter_khz"] == entry["filter_khz"]
    latency, rate = row["latency_s"], row["avg_rate_hz"]
    if entry["protocol_kind"] == "short_square":
        assert row["stim_amp_pa"] == ref["stim_amp"]
        t_end = (row["duration_s"] * row["sampling_rate_hz"] - 1) / row["sampling_rate_hz"]
        latency = None if latency is None else latency + onset
        rate = rate * (t_end - onset) / t_end
    assert rate == pytest.approx(ref["avg_rate"], rel=1e-9)
    assert close(latency, ref.get("latency"), "t")
    for key in ("first_isi", "mean_isi", "median_isi"):
        assert close(row[f"{key}_s"], ref.get(key), "t"), key
    for key in ("isi_cv", "adapt"):
        assert close(row[key], ref.get(key), "d"), key


@pytest.mark.parametrize("name", FILES)
def test_cell_features_match_ipfx(name: str) -> None:
    entry = REFERENCE[name]
    kind = entry["protocol_kind"]
    rows = features(name).cell.to_pylist()
    assert [r["analysis"] for r in rows] == [kind]  # no long-square row for these files
    row = rows[0]
    assert row["n_sweeps_used"] == len(entry["sweeps_used"])
    record = entry["cell"]["feature_record"]
    for ipfx_name, ref in record.items():
        base = ipfx_name.removesuffix(f"_{kind}")
        if kind == "short_square" and base == "threshold_i":
            # IPFX overwrites threshold_i_short_square with stimulus_amplitude
            assert row["short_square_stim_amp_pa"] == ref == entry["cell"]["stimulus_amplitude"]
            continue
        column, tol = cell_column(base)
        assert close(row[f"{kind}_{column}"], ref, tol), (ipfx_name, row[f"{kind}_{column}"], ref)
    if kind == "short_square":
        assert row["short_square_n_common_amp_sweeps"] == len(
            entry["cell"]["common_amp_sweep_numbers"]
        )


def test_long_square_files_keep_a_single_long_square_row() -> None:
    rows = extract_features(read_abf(ABF_DIR / "171116sh_0018.abf")).cell.to_pylist()
    assert len(rows) == 1 and rows[0]["analysis"] == "long_square"
    assert rows[0]["rheobase_pa"] == 50.0
    assert all(v is None for k, v in rows[0].items() if k.startswith(("ramp_", "short_square_")))


def test_ramp_and_short_square_rows_reach_the_lake(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    for name in ("17o05027_ic_ramp.abf", "File_axon_6.abf"):
        land(landing, name)
    lake = tmp_path / "lake"
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert {o.status for o in summary.outcomes} == {"published"}
    rows = query(
        lake,
        "SELECT r.file_name, c.analysis, c.ramp_threshold_i_pa, c.short_square_stim_amp_pa "
        "FROM icephys_cell_features c JOIN icephys_recordings r USING (file_id) ORDER BY 1",
    )
    ramp_ref = REFERENCE["17o05027_ic_ramp.abf"]["cell"]["feature_record"]["threshold_i_ramp"]
    assert rows[0][:2] == ("17o05027_ic_ramp.abf", "ramp")
    assert rows[0][2] == pytest.approx(ramp_ref, abs=I_ABS) and rows[0][3] is None
    assert rows[1] == ("File_axon_6.abf", "short_square", None, 2000.0)
