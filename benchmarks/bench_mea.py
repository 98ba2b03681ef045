"""Benchmark: a full 768-channel, 12.5 kHz plate (12-well layout) from .raw to spikes.

Prints: generation time (setup, untimed target), streaming detection time and its
real-time factor, peak RSS of the detection (ru_maxrss, measured in a fresh child
process so setup does not count), and the ratio to a plain baseline (whole-array
float64 ``sosfilt`` + threshold crossings) run on a window of the same data (the
baseline holds its whole window in memory, so it is limited to ``--baseline-s``).

    uv run python benchmarks/bench_mea.py --duration-s 300 --out-dir /tmp
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import signal

REPO = Path(__file__).resolve().parents[1]


def _detect_child(raw_path: str, threads: int) -> None:
    import resource

    from transforms.mea.detect import detect_spikes
    from transforms.readers.axion import open_axion

    f = open_axion(raw_path)
    t0 = time.perf_counter()
    table = detect_spikes(f, n_threads=threads)
    elapsed = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "spikes": len(table), "peak_rss_mb": rss_mb}))


def _baseline(raw_path: Path, seconds: float) -> tuple[float, int]:
    from transforms.mea.detect import DetectionParams
    from transforms.readers.axion import open_axion

    f = open_axion(raw_path)
    p = DetectionParams()
    x = f.read(0.0, seconds).astype(np.float64).T  # (channels, samples)
    t0 = time.perf_counter()
    sos = p.sos(f.sampling_rate_hz)
    y = signal.sosfilt(sos, x, axis=1)
    sigma = np.median(np.abs(y - np.median(y, axis=1, keepdims=True)), axis=1) / 0.6745
    below = y < -(p.threshold_k * sigma)[:, None]
    n = int(np.count_nonzero(below[:, 1:] & ~below[:, :-1]))
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-s", type=float, default=300.0)
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baseline-s", type=float, default=30.0)
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _detect_child(args.child, args.threads)
        return
    sys.path.insert(0, str(REPO))
    from transforms.mea.synth import generate_plate

    work = Path(tempfile.mkdtemp(prefix="bench_mea_", dir=args.out_dir))
    try:
        t0 = time.perf_counter()
        plate = generate_plate(
            work, n_wells=12, duration_s=args.duration_s, snr=6.0, seed=0, write_spk=False
        )
        gen_s = time.perf_counter() - t0
        size_gb = plate.raw_path.stat().st_size / 1e9
        print(
            f"plate: 768 ch x 12.5 kHz x {args.duration_s:g} s, .raw {size_gb:.2f} GB, "
            f"generated in {gen_s:.1f} s (setup, untimed)"
        )
        # warm the page cache once so both runs read from memory alike
        with plate.raw_path.open("rb") as fh:
            while fh.read(1 << 26):
                pass
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(plate.raw_path),
                "--threads",
                str(args.threads),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        res = json.loads(out.stdout.strip().splitlines()[-1])
        rt = args.duration_s / res["seconds"]
        print(
            f"streaming detect ({args.threads} threads): {res['seconds']:.2f} s, "
            f"{rt:.1f}x real time, {res['spikes']} spikes, peak RSS {res['peak_rss_mb']:.0f} MB"
        )
        print(f"target: >= 30x real time ({args.duration_s / 30:.1f} s), peak RSS <= 1500 MB")
        win = min(args.baseline_s, args.duration_s)
        base_s, base_n = _baseline(plate.raw_path, win)
        per_s_stream = res["seconds"] / args.duration_s
        per_s_base = base_s / win
        print(
            f"baseline (whole-array float64 sosfilt + threshold, {win:g} s window, "
            f"{win * 768 * 12500 * 8 / 1e9:.1f} GB float64): {base_s:.2f} s, "
            f"{base_n} crossings; streaming is {per_s_base / per_s_stream:.2f}x faster "
            "per second of data"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
