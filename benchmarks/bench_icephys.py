"""Benchmark: per-cell feature extraction on 171116sh_0018.abf.

Prints the median and p90 of ``extract_features`` (default parameters, so
sweep QC passes and the cell features, tau fits included, are computed) in an
ingest worker's process, with the malloc settings ``stage_file`` applies
(:mod:`transforms.allocator`), and first with glibc's defaults; then the
median of decoding (``read_abf``) and of decode + features per cell, the
ratio to IPFX 2.1.2's time on the same file (``ipfx_seconds`` in the reference
JSON) and the ratio to a naive baseline measured in the same run: the IPFX
approach of filtering each whole sweep separately and looping over spikes in
Python for peaks, upstrokes, thresholds and troughs.

Run: ``uv run python benchmarks/bench_icephys.py``
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

# One cell is one task on one core: a multithreaded BLAS only adds thread
# start-up to the small matrix products (measured: 24 ms vs 17 ms median).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transforms.formats.abf import read_abf
from transforms.icephys.extract import extract_features
from transforms.icephys.filters import bessel_cutoff_khz, dvdt_mv_per_ms
from transforms.icephys.stimulus import describe_stimulus
from transforms.pipeline.allocator import retain_freed_memory
from transforms.recording.icephys import IcephysRecording

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NEUROCYTE_SHARED", ROOT.parent / "shared")).resolve()
ABF = SHARED / "data" / "abf"
FILE = "171116sh_0018.abf"


def naive_spikes(rec: IcephysRecording) -> int:
    """Per-sweep, per-spike Python loops (the pattern this project replaces)."""
    total = 0
    for sweep in rec.sweeps:
        stim = describe_stimulus(sweep)
        if stim.start_index is None or stim.end_index is None:
            continue
        rate = sweep.sampling_rate_hz
        v = sweep.response
        d = dvdt_mv_per_ms(v, sampling_rate_hz=rate, cutoff_khz=bessel_cutoff_khz(rate))
        s0, s1 = stim.start_index, stim.end_index
        put = [k for k in range(s0, s1 - 1) if d[k] < 20.0 <= d[k + 1]]
        if not put:
            continue
        ends = [*put[1:], s1]
        peaks = [int(np.argmax(v[a:b])) + a for a, b in zip(put, ends, strict=True)]
        keep = [(a, p) for a, p in zip(put, peaks, strict=True) if v[p] >= -30 and v[p] - v[a] >= 2]
        ups = [int(np.argmax(d[a:p])) + a for a, p in keep]
        if not ups:
            continue
        target = 0.05 * float(np.mean([d[u] for u in ups]))
        prev = 0
        for u in ups:
            k = u
            while k > prev and d[k] > target:
                k -= 1
            prev = u
        nxt = [a for a, _ in keep[1:]] + [s1]
        troughs = [int(np.argmin(v[p:b])) + p for (_, p), b in zip(keep, nxt, strict=True)]
        total += len(troughs)
    return total


def timed(fn, n: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return np.array(out)


def main() -> None:
    ref = json.loads((ABF / "ipfx_reference.json").read_text())
    ipfx_s = float(ref[FILE]["ipfx_seconds"])
    rec = read_abf(ABF / FILE)
    extract_features(rec)  # warm-up: imports, filter design cache
    # glibc's default malloc first (it cannot be restored once tuned), then the
    # settings every ingest worker runs with (stage_file applies them)
    plain = timed(lambda: extract_features(rec), 100)
    tuned = retain_freed_memory()
    extract_features(rec)
    fast = timed(lambda: extract_features(rec), 100)
    decode = timed(lambda: read_abf(ABF / FILE), 15)
    both = timed(lambda: extract_features(read_abf(ABF / FILE)), 15)
    naive = timed(lambda: naive_spikes(rec), 3)
    med, p90 = float(np.median(fast)), float(np.percentile(fast, 90))
    print(f"file: {FILE} ({len(rec.sweeps)} sweeps, {rec.sweeps[0].n_samples} samples each)")
    settings = ", ".join(f"{k}={v >> 20} MB" for k, v in tuned.items()) if tuned else "not applied"
    print(f"ingest-worker malloc settings: {settings}")
    print(
        f"extract_features median: {med * 1e3:.2f} ms  p90: {p90 * 1e3:.2f} ms  (target <= 20 ms)"
    )
    print(
        f"  with glibc's default malloc: median {float(np.median(plain)) * 1e3:.2f} ms"
        f"  p90 {float(np.percentile(plain, 90)) * 1e3:.2f} ms"
    )
    print(f"read_abf (decode) median: {float(np.median(decode)) * 1e3:.2f} ms")
    print(
        f"decode + features per cell median: {float(np.median(both)) * 1e3:.2f} ms"
        f"  p90: {float(np.percentile(both, 90)) * 1e3:.2f} ms"
    )
    print(f"IPFX 2.1.2 reference: {ipfx_s * 1e3:.0f} ms  -> speed-up x{ipfx_s / med:.1f}")
    naive_med = float(np.median(naive))
    print(f"naive per-spike loops (same run) median: {naive_med * 1e3:.1f} ms")
    print(f"  -> speed-up x{naive_med / med:.1f}")


if __name__ == "__main__":
    main()
