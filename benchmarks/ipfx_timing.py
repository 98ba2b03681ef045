#!/usr/bin/env python
"""Time IPFX 2.1.2's long-square analysis of one ABF file, in IPFX's own environment.

``bench_icephys.py`` runs this with the Python of a separate venv holding
``ipfx==2.1.2`` (the project does not depend on IPFX) and compares its time with
the project's, measured in the same run on the same file:

* ``--window ipfx``: IPFX finds its stimulus window itself
  (``stim_features.get_stim_characteristics``, first to last command change);
* ``--window START,END``: IPFX is given the window (s), e.g. the project's
  default first-epoch window.

Loading conventions as the IPFX reference (``ipfx_reference.json``): pyabf
``sweepY`` (mV), ``sweepC`` (pA), ``sweepX`` (s) of the current-clamp sweeps;
Bessel filter ``min(10, 0.8 * Nyquist)`` kHz; ``LongSquareAnalysis`` with
``subthresh_min_amp=-100``. Timed: the spike and spike-train extractors and the
analysis on sweeps already in memory (the file read is not timed on either
side). Prints one JSON object: median wall and CPU time and all wall times (s),
spike count, window.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import pyabf
from ipfx import stim_features as stf
from ipfx import stimulus_protocol_analysis as spa
from ipfx.data_set_features import extractors_for_sweeps
from ipfx.error import FeatureError
from ipfx.sweep import Sweep, SweepSet

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("abf")
    parser.add_argument("--channel", type=int, default=0)
    parser.add_argument("--window", default="ipfx", help="'ipfx' or START,END in seconds")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    abf = pyabf.ABF(args.abf)
    rate = float(abf.sampleRate)
    fk = min(10.0, 0.8 * rate / 2000.0)
    sweeps = []
    for n in abf.sweepList:
        abf.setSweep(n, channel=args.channel)
        t = np.asarray(abf.sweepX, dtype=np.float64)
        v = np.asarray(abf.sweepY, dtype=np.float64)
        i = np.asarray(abf.sweepC, dtype=np.float64)
        sweeps.append(Sweep(t, v, i, "CurrentClamp", rate, sweep_number=n))

    def once() -> tuple[float, float, int, tuple[float, float]]:
        started, cpu = time.perf_counter(), time.process_time()
        ss = SweepSet(sweeps)
        if args.window == "ipfx":
            start, dur = None, None
            for s in sweeps:  # IPFX: the window of the sweeps that have a stimulus
                st, du, _amp, _i0, _i1 = stf.get_stim_characteristics(s.i, s.t, test_pulse=False)
                if st is not None and du:
                    start, dur = st, du
                    break
            if start is None:
                raise SystemExit("no stimulus found")
            end = start + dur
        else:
            start, end = (float(x) for x in args.window.split(","))
        spx, sptx = extractors_for_sweeps(ss, start=start, end=end, filter_frequency=fk)
        analysis = spa.LongSquareAnalysis(spx, sptx, subthresh_min_amp=-100.0)
        try:
            spikes_set = analysis.analyze(ss)["spikes_set"]
        except FeatureError:  # no subthreshold sweeps: IPFX stops at the last step, as the
            spikes_set = analysis._spikes_set  # reference run did (subthreshold values None)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        sets = spikes_set.values() if isinstance(spikes_set, dict) else spikes_set
        spikes = int(sum(len(x) for x in sets))
        return elapsed, cpu, spikes, (float(start), float(end))

    once()  # warm-up (imports, first calls)
    runs = [once() for _ in range(args.repeat)]
    times = [r[0] for r in runs]
    print(
        json.dumps(
            {
                "median_s": statistics.median(times),
                "cpu_median_s": statistics.median(r[1] for r in runs),
                "times_s": times,
                "spikes": runs[0][2],
                "window_s": runs[0][3],
                "filter_khz": fk,
            }
        )
    )


if __name__ == "__main__":
    main()
