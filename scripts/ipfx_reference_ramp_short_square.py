#!/usr/bin/env python
# ruff: noqa: E501, B905, UP031, RUF059  (a research script for the separate ipfx env)
"""IPFX 2.1.2 reference values for the RAMP and SHORT-SQUARE ABF files of shared/.

This script runs in a SEPARATE environment with ``ipfx==2.1.2`` installed
(``python3.11 -m venv ipfx-env && ipfx-env/bin/pip install ipfx==2.1.2``); the
project does not depend on ipfx and never imports this file. Run:

    ipfx-env/bin/python scripts/ipfx_reference_ramp_short_square.py ../shared/data/abf \
        -o full_reference.json --trimmed tests/data/ipfx_ramp_short_square_reference.json

``--trimmed`` writes the copy the agreement test
(``tests/test_icephys_ramp_short_square.py``) reads: the same values without
IPFX's raw ``as_dict`` dump, the all-sweeps variant, the long-square
self-check and the per-spike index and current fields.

The first argument is the folder holding the ABF files (read-only) and the
existing ``ipfx_reference.json`` (used only for a self-check of the loading
conventions: the long-square first-spike features of that file are recomputed
here with the same conventions and the largest differences are recorded).

Conventions (the same as the existing long-square reference):

* voltage = pyabf ``sweepY`` (mV) of the voltage channel, current =
  pyabf ``sweepC`` (pA, the command as pyabf renders it from the epoch table),
  time = pyabf ``sweepX`` (s, every sweep starting at 0), all as float64;
* low-pass filter (IPFX ``filter`` / ``filter_frequency``, kHz):
  ``min(10, 0.8 * Nyquist)`` = 8 kHz at 20 kHz sampling, 4 kHz at 10 kHz
  (IPFX's default 10 kHz is not a valid Bessel cutoff at 20 kHz);
* stimulus onset from the command with
  ``ipfx.stim_features.get_stim_characteristics(i, t, test_pulse=False)``
  (ABF files have no Allen test pulse; the ``test_pulse=True`` default that
  IPFX's NWB pipeline uses is recorded for comparison).

Everything else follows ``ipfx.data_set_features.extract_cell_ramp_features``
and ``extract_cell_short_square_features``; see NOTES.md beside this file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import ipfx
import numpy as np
import pandas as pd
import pyabf
from ipfx import feature_record as fr
from ipfx import spike_features as spkf
from ipfx import stim_features as stf
from ipfx import stimulus_protocol_analysis as spa
from ipfx.data_set_features import extractors_for_sweeps
from ipfx.sweep import Sweep, SweepSet

warnings.filterwarnings("ignore")

# file -> (protocol kind, voltage channel, sweeps analysed, why)
FILES = {
    "17o05027_ic_ramp.abf": (
        "ramp",
        0,
        [1],
        "protocol '0111 continuous ramp'; sweep 0 has a flat 0 pA command (the cell fires "
        "spontaneously in it) and is not a ramp sweep; sweep 1 ramps 0 -> 10 pA",
    ),
    "171116sh_0016.abf": (
        "ramp",
        0,
        list(range(1, 11)),
        "protocol '0111 continuous ramp'; sweep 0 is flat at 0 pA; sweeps 1-10 each ramp "
        "10 pA from the previous sweep's end level (0->10, 10->20, ..., 90->100 pA)",
    ),
    "File_axon_6.abf": (
        "short_square",
        0,
        list(range(32)),
        "protocol 'step cclamp 2nA for 2ms'; all 32 sweeps: one 2000 pA, 2 ms pulse at 0.2156 s",
    ),
}

LONG_SQUARE_CHECK = [
    "171116sh_0018.abf",
    "17o05028_ic_steps.abf",
    "File_axon_5.abf",
    "190619B_0003.abf",
]

SSQ_WINDOW = 0.001  # ipfx.data_set_features.extract_cell_short_square_features
SSQ_THRESH_FRAC_FLOOR = 0.1  # ipfx.data_set_features.DETECTION_PARAMETERS[SHORT_SQUARE]


def filter_khz(rate_hz: float) -> float:
    return float(min(10.0, 0.8 * rate_hz / 2000.0))


def clean(x):
    """JSON-safe copy: numpy scalars -> python, NaN/inf -> None, DataFrames -> records."""
    if isinstance(x, pd.DataFrame):
        return [clean(r) for r in x.to_dict(orient="records")]
    if isinstance(x, pd.Series):
        return clean(x.to_dict())
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return [clean(v) for v in x.tolist()]
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        return f if math.isfinite(f) else None
    return x


def load_sweeps(path: Path, channel: int, sweeps: list[int]) -> tuple[pyabf.ABF, list[Sweep]]:
    abf = pyabf.ABF(str(path))
    out = []
    for n in sweeps:
        abf.setSweep(n, channel=channel)
        t = np.asarray(abf.sweepX, dtype=float)
        v = np.asarray(abf.sweepY, dtype=float)
        i = np.asarray(abf.sweepC, dtype=float)
        out.append(Sweep(t, v, i, "CurrentClamp", float(abf.sampleRate), sweep_number=n))
    return abf, out


def stim_window(sweep: Sweep) -> dict:
    """IPFX's get_stim_characteristics on the command, without and with test-pulse skipping."""
    res = {}
    for tp in (False, True):
        start, dur, amp, si, ei = stf.get_stim_characteristics(sweep.i, sweep.t, test_pulse=tp)
        res["test_pulse_%s" % tp] = {
            "start_s": start,
            "duration_s": dur,
            "end_s": (start + dur) if start is not None else None,
            "amplitude_pa": amp,
            "start_index": si,
            "end_index": ei,
        }
    return clean(res)


def sweep_summary(sweep_number: int, sweep: Sweep, spikes: pd.DataFrame, features: dict) -> dict:
    rec = {
        "sweep": sweep_number,
        "command_first_pa": float(sweep.i[0]),
        "command_last_pa": float(sweep.i[-1]),
        "command_max_pa": float(sweep.i.max()),
        "spike_count": len(spikes),
        "sweep_features": clean(features),
        "spikes": clean(spikes) if len(spikes) else [],
    }
    rec["first_spike"] = rec["spikes"][0] if rec["spikes"] else None
    return rec


def analyse_ramp(path: Path, channel: int, sweeps: list[int]) -> dict:
    abf, sw = load_sweeps(path, channel, sweeps)
    fk = filter_khz(abf.sampleRate)
    win = stim_window(sw[0])
    ramp_start = win["test_pulse_False"]["start_s"]
    ss = SweepSet(sw)
    t0 = time.perf_counter()
    # extract_cell_ramp_features: start = ramp onset of the first ramp sweep, end = None
    spx, sptx = extractors_for_sweeps(ss, start=ramp_start, filter_frequency=fk)
    an = spa.RampAnalysis(spx, sptx)
    feats = an.analyze(ss)
    as_dict = an.as_dict(feats, [dict(sweep_number=n) for n in sweeps])
    elapsed = time.perf_counter() - t0
    record = fr.build_cell_feature_record(
        {"long_squares": None, "ramps": as_dict, "short_squares": None}
    )
    record = {k: v for k, v in record.items() if k.endswith("_ramp")}
    per_sweep = [
        sweep_summary(n, s, spk, f)
        for n, s, spk, f in zip(
            sweeps, sw, feats["spikes_set"], feats["sweeps"].to_dict(orient="records")
        )
    ]
    return {
        "protocol_kind": "ramp",
        "sampling_rate_hz": float(abf.sampleRate),
        "filter_khz": fk,
        "voltage_channel": channel,
        "sweeps_used": sweeps,
        "stim_window_ipfx": win,
        "spike_detection_window_s": {
            "start": ramp_start,
            "end": None,
            "end_note": "None = end of sweep (t[-1] = %.6g s)" % sw[0].t[-1],
        },
        "detection_parameters": {
            "dv_cutoff": spx.dv_cutoff,
            "thresh_frac": spx.thresh_frac,
            "min_peak": spx.min_peak,
            "min_height": spx.min_height,
            "max_interval": spx.max_interval,
            "filter": spx.filter,
        },
        "sweeps": per_sweep,
        "cell": {
            "mean_spike_0": clean(feats["mean_spike_0"]),
            "spiking_sweep_numbers": [sweeps[k] for k in feats["spiking_sweeps"].index],
            "feature_record": clean(record),
        },
        "ipfx_as_dict": clean(as_dict),
        "ipfx_seconds": round(elapsed, 3),
    }


def ramp_all_sweeps_variant(path: Path, channel: int) -> dict:
    """What IPFX gives if every sweep of the file is handed to it as a ramp sweep.

    extract_cell_ramp_features takes the window from sweeps[0] only; here sweep 0 has a flat
    command, so get_stim_characteristics returns start=None and detection runs from t=0 in
    every sweep. Recorded to document that quirk; the main values above use the ramp sweeps.
    """
    abf = pyabf.ABF(str(path))
    sweeps = list(range(abf.sweepCount))
    abf, sw = load_sweeps(path, channel, sweeps)
    fk = filter_khz(abf.sampleRate)
    start, _, _, _, _ = stf.get_stim_characteristics(sw[0].i, sw[0].t, test_pulse=False)
    ss = SweepSet(sw)
    spx, sptx = extractors_for_sweeps(ss, start=start, filter_frequency=fk)
    an = spa.RampAnalysis(spx, sptx)
    feats = an.analyze(ss)
    return {
        "sweeps_used": sweeps,
        "start_s_from_sweep0": start,
        "spike_count_per_sweep": {str(n): len(x) for n, x in zip(sweeps, feats["spikes_set"])},
        "first_spike_threshold_t_per_sweep": {
            str(n): (float(x["threshold_t"].values[0]) if len(x) else None)
            for n, x in zip(sweeps, feats["spikes_set"])
        },
        "mean_spike_0": clean(feats["mean_spike_0"]),
    }


def analyse_short_square(path: Path, channel: int, sweeps: list[int]) -> dict:
    abf, sw = load_sweeps(path, channel, sweeps)
    fk = filter_khz(abf.sampleRate)
    win = stim_window(sw[0])
    ssq_start = win["test_pulse_False"]["start_s"]
    ss = SweepSet(sw)
    t0 = time.perf_counter()
    # extract_cell_short_square_features calls extractors_for_sweeps(est_window=[start, start+1 ms],
    # thresh_frac_floor=0.1) which calls estimate_adjusted_detection_parameters with its default
    # filter=10 kHz: invalid at 20 kHz sampling, so the same estimate is made here with filter=fk.
    dv_cutoff_est, thresh_frac_est = spkf.estimate_adjusted_detection_parameters(
        ss.v, ss.t, ssq_start, ssq_start + SSQ_WINDOW, filter=fk
    )
    spx, sptx = extractors_for_sweeps(
        ss,
        dv_cutoff=dv_cutoff_est,
        thresh_frac=thresh_frac_est,
        thresh_frac_floor=SSQ_THRESH_FRAC_FLOOR,
        filter_frequency=fk,
    )
    an = spa.ShortSquareAnalysis(spx, sptx)
    feats = an.analyze(ss)
    as_dict = an.as_dict(feats, [dict(sweep_number=n) for n in sweeps])
    elapsed = time.perf_counter() - t0
    record = fr.build_cell_feature_record(
        {"long_squares": None, "ramps": None, "short_squares": as_dict}
    )
    record = {k: v for k, v in record.items() if k.endswith("_short_square")}
    per_sweep = [
        sweep_summary(n, s, spk, f)
        for n, s, spk, f in zip(
            sweeps, sw, feats["spikes_set"], feats["sweeps"].to_dict(orient="records")
        )
    ]
    return {
        "protocol_kind": "short_square",
        "sampling_rate_hz": float(abf.sampleRate),
        "filter_khz": fk,
        "voltage_channel": channel,
        "sweeps_used": sweeps,
        "stim_window_ipfx": win,
        "detection_estimate_window_s": [ssq_start, ssq_start + SSQ_WINDOW],
        "spike_detection_window_s": {
            "start": None,
            "end": None,
            "note": "IPFX's short-square extractors get no start/end: whole sweep",
        },
        "detection_parameters": {
            "dv_cutoff_estimated": float(dv_cutoff_est),
            "thresh_frac_estimated": float(thresh_frac_est),
            "dv_cutoff": float(spx.dv_cutoff),
            "thresh_frac": float(spx.thresh_frac),
            "thresh_frac_floor": SSQ_THRESH_FRAC_FLOOR,
            "min_peak": spx.min_peak,
            "min_height": spx.min_height,
            "max_interval": spx.max_interval,
            "filter": spx.filter,
        },
        "sweeps": per_sweep,
        "cell": {
            "stimulus_amplitude": clean(feats["stimulus_amplitude"]),
            "common_amp_sweep_numbers": [sweeps[k] for k in feats["common_amp_sweeps"].index],
            "mean_spike_0": clean(feats["mean_spike_0"]),
            "feature_record": clean(record),
        },
        "ipfx_as_dict": clean(as_dict),
        "ipfx_seconds": round(elapsed, 3),
    }


def long_square_check(abf_dir: Path) -> dict:
    """Recompute the first-spike features of ipfx_reference.json with these loading conventions."""
    ref_path = abf_dir / "ipfx_reference.json"
    if not ref_path.exists():
        return {"skipped": "no ipfx_reference.json"}
    ref = json.loads(ref_path.read_text())
    out = {}
    keys = {
        "threshold_v": "threshold_v",
        "threshold_t": "threshold_t",
        "peak_v": "peak_v",
        "trough_v": "trough_v",
        "fast_trough_v": "fast_trough_v",
        "width_s": "width",
        "upstroke_v_per_s": "upstroke",
        "downstroke_v_per_s": "downstroke",
        "upstroke_downstroke_ratio": "upstroke_downstroke_ratio",
    }
    for name in LONG_SQUARE_CHECK:
        if name not in ref:
            continue
        r = ref[name]
        sweeps = [s["sweep"] for s in r["sweeps"]]
        abf, sw = load_sweeps(abf_dir / name, 0, sweeps)
        fk = filter_khz(abf.sampleRate)
        start, dur, _, _, _ = stf.get_stim_characteristics(sw[0].i, sw[0].t, test_pulse=False)
        spx, sptx = extractors_for_sweeps(
            SweepSet(sw), start=start, end=start + dur, filter_frequency=fk
        )
        worst = {}
        count_mismatch = []
        for s, rs in zip(sw, r["sweeps"]):
            spikes = spx.process(s.t, s.v, s.i)
            if len(spikes) != rs["spike_count"]:
                count_mismatch.append(rs["sweep"])
            if rs["first_spike"] and len(spikes):
                for rk, ik in keys.items():
                    a, b = rs["first_spike"][rk], spikes[ik].values[0]
                    if a is None or b is None or not np.isfinite(b):
                        continue
                    worst[rk] = max(worst.get(rk, 0.0), abs(float(a) - float(b)))
        out[name] = {
            "window_s": [start, start + dur],
            "filter_khz": fk,
            "stim_window_matches": bool(
                abs(start - r["stim_start_s"]) < 1e-9
                and abs(start + dur - r["stim_end_s"]) < 1e-9
                and fk == r["filter_khz"]
            ),
            "spike_count_mismatch_sweeps": count_mismatch,
            "max_abs_diff_first_spike": worst,
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "abf_dir", type=Path, help="folder with the shared ABF files (e.g. ../shared/data/abf)"
    )
    ap.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "ipfx_ramp_short_square_reference.json",
    )
    ap.add_argument(
        "--trimmed",
        type=Path,
        default=None,
        help="also write the trimmed copy the project's agreement test reads",
    )
    args = ap.parse_args(argv)

    result = {
        "_meta": {
            "ipfx_version": ipfx.__version__,
            "pyabf_version": pyabf.__version__,
            "numpy_version": np.__version__,
            "pandas_version": pd.__version__,
            "note": (
                "Computed by IPFX %s itself (ipfx.stimulus_protocol_analysis.RampAnalysis / "
                "ShortSquareAnalysis with extractors from ipfx.data_set_features.extractors_for_sweeps), "
                "following extract_cell_ramp_features / extract_cell_short_square_features. Data: pyabf "
                "sweepX (s), sweepY (mV), sweepC (pA command) as float64. Filter = min(10 kHz, 0.8*Nyquist) "
                "(8 kHz at 20 kHz sampling), passed as IPFX filter_frequency. Stimulus onset = "
                "stim_features.get_stim_characteristics(command, t, test_pulse=False) of the first analysed "
                "sweep (the ABF files have no test pulse; IPFX's test_pulse=True default is recorded too). "
                "RAMP: spike detection from the ramp onset to the end of the sweep (end=None, as IPFX). "
                "SHORT SQUARE: spike detection over the whole sweep (IPFX passes no start/end); dv_cutoff and "
                "thresh_frac estimated by spike_features.estimate_adjusted_detection_parameters over "
                "[onset, onset+1 ms] (with filter=the filter above, since IPFX's default 10 kHz raises at "
                "20 kHz), thresh_frac floored at 0.1; stim_amp = max(command[1:]); clipped spikes excluded "
                "from spike-train features. NaN is written as null. Spike times are seconds from sweep start."
                % ipfx.__version__
            ),
            "files_not_used": {
                "18425108_abf1.abf": "ABF1 '15 pulse AHP w_laser': the recorded current (Imemb, nA) shows a "
                "train of 20 pulses of 2 ms, ~2.57 nA, every 10 ms from 1.0 s; pyabf does "
                "not render this pulse train in sweepC (it gives a -0.05 nA step at "
                "0.25-0.5 s on the ME1 DAC), and a train is not an IPFX short square",
                "opto_aps_bad_units.abf": "optogenetic 2 ms light pulses (digital output); command flat",
                "others": "long squares (in ipfx_reference.json), voltage clamp, gap-free, 4-channel VC, "
                "invalid-date VC: no ramp or short-square current command",
            },
        },
        "long_square_convention_check": None,
    }
    for name, (kind, ch, sweeps, why) in FILES.items():
        path = args.abf_dir / name
        entry = (
            analyse_ramp(path, ch, sweeps)
            if kind == "ramp"
            else analyse_short_square(path, ch, sweeps)
        )
        entry = {"file": name, "why": why, **entry}
        if kind == "ramp":
            entry["variant_all_sweeps_as_ipfx_would"] = ramp_all_sweeps_variant(path, ch)
        result[name] = entry
        c = entry["cell"]
        print(
            name,
            kind,
            "sweeps",
            sweeps[0],
            "-",
            sweeps[-1],
            "spikes",
            sum(s["spike_count"] for s in entry["sweeps"]),
            "cell",
            json.dumps(c["feature_record"])[:300],
        )
    result["long_square_convention_check"] = long_square_check(args.abf_dir)
    print(json.dumps(result["long_square_convention_check"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    print("wrote", args.out)
    if args.trimmed is not None:
        args.trimmed.write_text(json.dumps(trim(result), indent=1, allow_nan=False) + "\n")
        print("wrote", args.trimmed)
    return 0


TRIMMED_SPIKE_FIELDS = (
    "threshold_t",
    "threshold_v",
    "threshold_i",
    "peak_t",
    "peak_v",
    "trough_t",
    "trough_v",
    "fast_trough_t",
    "fast_trough_v",
    "slow_trough_t",
    "slow_trough_v",
    "adp_v",
    "upstroke",
    "downstroke",
    "upstroke_downstroke_ratio",
    "width",
    "clipped",
    "isi_type",
)
TRIMMED_FILE_FIELDS = (
    "protocol_kind",
    "why",
    "sampling_rate_hz",
    "filter_khz",
    "sweeps_used",
    "stim_window_ipfx",
    "spike_detection_window_s",
    "detection_parameters",
)


def trim(result: dict) -> dict:
    """The reference without IPFX's raw dumps: what the agreement test compares."""
    meta = dict(result["_meta"])
    meta["trimmed"] = (
        "Trimmed by scripts/ipfx_reference_ramp_short_square.py --trimmed: ipfx_as_dict, the "
        "all-sweeps variant, the long-square self-check and per-spike index/current fields are "
        "left out; values unchanged."
    )
    out = {"_meta": meta}
    for name in FILES:
        entry = result[name]
        small = {k: entry[k] for k in TRIMMED_FILE_FIELDS}
        small["sweeps"] = [
            {
                "sweep": s["sweep"],
                "spike_count": s["spike_count"],
                "sweep_features": s["sweep_features"],
                "spikes": [{k: sp[k] for k in TRIMMED_SPIKE_FIELDS} for sp in s["spikes"]],
            }
            for s in entry["sweeps"]
        ]
        small["cell"] = entry["cell"]
        out[name] = small
    return out


if __name__ == "__main__":
    sys.exit(main())
