"""Benchmark: a full 768-channel, 12.5 kHz plate (12-well layout) from .raw to well metrics.

Prints: file size and generation time (setup, untimed); the read-only time of the
whole file through the same reader into a reused buffer (the floor); the wall time of
streaming detection plus every electrode, burst, well and network-burst metric (best
and each of ``--repeat`` runs) with its real-time factor and peak RSS (ru_maxrss).
Every measurement runs in a fresh child process so setup does not count; imports are
warmed there on 0.2 s of silence before the clock starts. Last, a plain baseline on
the same file: read a window, float64 ``sosfilt`` along time, MAD threshold,
crossings. The baseline holds its whole window in memory (float64), so it is limited
to ``--baseline-s`` seconds; the ratio is per second of data. CPU seconds (user +
system, all threads) are printed beside wall seconds: on the shared machine they move
less with the load.

Unless ``--no-sensitive``, the ``sensitive`` profile (zero-phase band-pass) is timed on the
whole plate too, and, if SpikeInterface is installed (``uv run --group bench``), both
it (``bandpass_filter`` + ``detect_peaks(method="by_channel")``, ``n_jobs=1``) and the
``sensitive`` detector (``n_threads=1``) run on the same µV array in memory: the first
``--si-s`` seconds of the plate, in a child process each; the ratio is measured there.

    uv run python benchmarks/bench_mea.py --duration-s 300 --out-dir /tmp
    uv run python benchmarks/bench_mea.py --raw plate.raw   # an existing 12-well plate
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import signal

REPO = Path(__file__).resolve().parents[1]


def _child(mode: str, raw_path: str, threads: int, seconds: float) -> None:
    import resource

    if mode == "cold":
        _cold(raw_path)
        return

    from transforms.formats.axion import open_axion
    from transforms.mea.detect import detect_spikes, profile_params

    f = open_axion(raw_path)
    params = profile_params("sensitive" if mode == "sensitive" else "default")
    data = None
    if mode in ("detect", "sensitive"):
        _warm_up(f, params)
    elif mode in ("si", "ours_array"):
        data = f.read_counts(0, round(seconds * f.sampling_rate_hz)).astype(np.float32)
        data *= np.float32(f.voltage_scale_uv_per_count)
        run = _si_runner(f.sampling_rate_hz, list(f.electrodes)) if mode == "si" else None
        warm = data[: round(0.2 * f.sampling_rate_hz)]
        if run is None:
            detect_spikes(
                warm, sampling_rate_hz=f.sampling_rate_hz, electrodes=f.electrodes, params=params
            )
        else:
            run(warm)
    t0 = time.perf_counter()
    c0 = time.process_time()
    extra: dict[str, float] = {}
    if mode in ("detect", "sensitive"):  # .raw -> spikes -> every electrode/well/burst metric
        from transforms.mea.metrics import compute_metrics

        spikes = detect_spikes(f, params=params, n_threads=threads)
        t1 = time.perf_counter()
        compute_metrics(spikes, layout=f.layout, duration_s=f.duration_s)
        extra = {"detect_s": t1 - t0, "metrics_s": time.perf_counter() - t1}
        n = len(spikes)
    elif mode == "read":  # the floor: every sample through the same reader, 2 s chunks
        step = round(2.0 * f.sampling_rate_hz)
        buf = np.empty((step, len(f.electrodes)), dtype=f.read_counts(0, 1).dtype)
        n = 0
        for k in range(0, f.n_samples, step):
            n += f.read_counts(k, k + step, out=buf).shape[0]
    elif data is not None and mode == "si":
        n = len(_si_runner(f.sampling_rate_hz, list(f.electrodes))(data))  # type: ignore[arg-type]
    elif data is not None:
        n = len(
            detect_spikes(
                data,
                sampling_rate_hz=f.sampling_rate_hz,
                electrodes=f.electrodes,
                params=params,
                n_threads=1,
            )
        )
    else:
        n = _baseline(f, seconds)
    elapsed = time.perf_counter() - t0
    extra["cpu_s"] = time.process_time() - c0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "n": n, "peak_rss_mb": rss_mb, **extra}))


def _cold(raw_path: str) -> None:
    """A fresh process: imports, then ``default`` and ``sensitive`` on the plate's first
    second (each first call compiles the kernels, or loads them from numba's cache)."""
    t0, c0 = time.perf_counter(), time.process_time()
    from transforms.formats.axion import open_axion
    from transforms.mea.detect import detect_spikes, profile_params

    out = {"import_s": time.process_time() - c0}
    f = open_axion(raw_path)
    f.n_samples = min(f.n_samples, round(f.sampling_rate_hz))
    for profile in ("default", "sensitive"):
        c1 = time.process_time()
        detect_spikes(f, params=profile_params(profile))
        out[f"{profile}_s"] = time.process_time() - c1
    out["cpu_s"] = time.process_time() - c0
    out["seconds"] = time.perf_counter() - t0
    print(json.dumps(out))


def _si_runner(fs: float, names: list[str]):  # type: ignore[no-untyped-def]
    """SpikeInterface's band-pass (its defaults) and per-channel peak detection, 1 job."""
    import inspect

    import spikeinterface.core as si
    from spikeinterface.preprocessing import bandpass_filter
    from spikeinterface.sortingcomponents.peak_detection import detect_peaks

    jobs = {"n_jobs": 1, "chunk_duration": "1s", "progress_bar": False}
    by_dict = "job_kwargs" in inspect.signature(detect_peaks).parameters
    job_args: dict[str, object] = {"job_kwargs": jobs} if by_dict else jobs
    ids = np.asarray(names)

    def run(x: np.ndarray):  # type: ignore[no-untyped-def]
        rec = si.NumpyRecording([x], sampling_frequency=fs, channel_ids=ids)
        return detect_peaks(bandpass_filter(rec), method="by_channel", **job_args)

    return run


def _warm_up(f, params) -> None:  # type: ignore[no-untyped-def]
    """Run the pipeline once on 0.2 s of silence, outside the timed region.

    The first ``pyarrow.array`` of a process imports pandas (~300 modules, about 1 s
    where no bytecode is cached): a per-process cost, paid by an Airflow worker once
    and not by each plate it processes.
    """
    from transforms.mea.detect import detect_spikes
    from transforms.mea.metrics import compute_metrics

    silence = np.zeros((round(0.2 * f.sampling_rate_hz), 64), dtype=np.float32)
    spikes = detect_spikes(
        silence, sampling_rate_hz=f.sampling_rate_hz, electrodes=f.electrodes[:64], params=params
    )
    compute_metrics(spikes, layout=f.layout, duration_s=0.2)


def _baseline(f, seconds: float) -> int:  # type: ignore[no-untyped-def]
    """Plain scipy: read the window, float64 sosfilt along time, MAD threshold, crossings."""
    from transforms.mea.detect import DetectionParams

    p = DetectionParams()
    x = f.read(0.0, seconds).astype(np.float64).T  # (channels, samples)
    sos = p.sos(f.sampling_rate_hz)
    y = signal.sosfilt(sos, x, axis=1)
    del x
    sigma = np.median(np.abs(y - np.median(y, axis=1, keepdims=True)), axis=1) / 0.6745
    below = y < -(p.threshold_k * sigma)[:, None]
    return int(np.count_nonzero(below[:, 1:] & ~below[:, :-1]))


def _run_child(
    mode: str, raw: Path, threads: int, seconds: float, env: dict[str, str] | None = None
) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            str(raw),
            "--threads",
            str(threads),
            "--baseline-s",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _detect_runs(mode: str, raw: Path, args: argparse.Namespace) -> dict[str, float]:
    """``--repeat`` runs of ``.raw -> spikes -> well metrics``; prints and returns the best."""
    runs = [_run_child(mode, raw, args.threads, 0.0) for _ in range(args.repeat)]
    res = min(runs, key=lambda r: r["seconds"])
    each = ", ".join(f"{r['seconds']:.2f} ({r['cpu_s']:.2f} CPU)" for r in runs)
    profile = "sensitive" if mode == "sensitive" else "default"
    print(
        f".raw -> spikes -> well metrics, {profile} profile ({args.threads} threads): best "
        f"{res['seconds']:.2f} s, {res['cpu_s']:.2f} s CPU (detection {res['detect_s']:.2f} s + "
        f"metrics {res['metrics_s']:.2f} s; runs: {each}), "
        f"{args.duration_s / res['seconds']:.1f}x real time, {res['n']} spikes, "
        f"peak RSS {max(r['peak_rss_mb'] for r in runs):.0f} MB"
    )
    return res


def _si_ratio(raw: Path, args: argparse.Namespace) -> None:
    """SpikeInterface against the ``sensitive`` detector on the same array, 1 thread each."""
    try:
        import spikeinterface  # noqa: F401
    except ImportError:
        print("SpikeInterface is not installed: run with `uv run --group bench ...`")
        return
    win = min(args.si_s, args.duration_s)
    ours = [_run_child("ours_array", raw, 1, win) for _ in range(args.repeat)]
    ref = [_run_child("si", raw, 1, win) for _ in range(args.repeat)]
    o = min(ours, key=lambda r: r["seconds"])
    r = min(ref, key=lambda r: r["seconds"])
    print(
        f"first {win:g} s in memory, 1 thread each: sensitive {o['seconds']:.2f} s, "
        f"{o['cpu_s']:.2f} s CPU ({o['n']} spikes); SpikeInterface bandpass_filter + "
        f"detect_peaks {r['seconds']:.2f} s, {r['cpu_s']:.2f} s CPU ({r['n']} peaks): "
        f"SpikeInterface / sensitive = {r['seconds'] / o['seconds']:.1f}x wall, "
        f"{r['cpu_s'] / o['cpu_s']:.1f}x CPU, best to best (target >= 5x)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-s", type=float, default=300.0)
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baseline-s", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=2, help="detection runs (best is kept)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--raw", type=Path, help="an existing 12-well .raw plate (no generation)")
    ap.add_argument(
        "--sensitive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the sensitive profile, and SpikeInterface if installed",
    )
    ap.add_argument("--si-s", type=float, default=20.0, help="seconds for SpikeInterface")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.threads, args.baseline_s)
        return
    sys.path.insert(0, str(REPO))
    from transforms.synth.plate import generate_plate

    work = Path(tempfile.mkdtemp(prefix="bench_mea_", dir=args.out_dir))
    try:
        t0 = time.perf_counter()
        if args.raw is None:
            raw_path = generate_plate(
                work, n_wells=12, duration_s=args.duration_s, snr=6.0, seed=0, write_spk=False
            ).raw_path
            how = f"generated in {time.perf_counter() - t0:.1f} s (setup, untimed)"
        else:
            raw_path, how = args.raw, f"given: {args.raw}"
            from transforms.formats.axion import open_axion

            args.duration_s = open_axion(raw_path).duration_s
        size_gb = raw_path.stat().st_size / 1e9
        print(f"plate: 768 ch x 12.5 kHz x {args.duration_s:g} s, .raw {size_gb:.2f} GB, {how}")
        # warm the page cache once so all runs read from memory alike
        with raw_path.open("rb") as fh:
            while fh.read(1 << 26):
                pass
        read = _run_child("read", raw_path, args.threads, 0.0)
        print(
            f"read only (the floor): {read['seconds']:.2f} s, peak RSS {read['peak_rss_mb']:.0f} MB"
        )
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        res = _detect_runs("detect", raw_path, args)
        print(f"target: >= 60x real time ({args.duration_s / 60:.1f} s), peak RSS <= 1500 MB")
        if args.sensitive:
            _detect_runs("sensitive", raw_path, args)
            _si_ratio(raw_path, args)
        win = min(args.baseline_s, args.duration_s)
        if win > 0:
            base = _run_child("baseline", raw_path, args.threads, win)
            per_s_stream = res["seconds"] / args.duration_s
            per_s_base = base["seconds"] / win
            print(
                f"baseline (read + float64 sosfilt + MAD threshold, first {win:g} s only: "
                f"it holds the window in memory, peak RSS {base['peak_rss_mb']:.0f} MB): "
                f"{base['seconds']:.2f} s, {args.duration_s * per_s_base:.0f} s scaled to the "
                f"plate, {base['n']} crossings; streaming is {per_s_base / per_s_stream:.2f}x "
                "faster per second of data"
            )
        with tempfile.TemporaryDirectory() as cache:  # an empty numba cache, then filled
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            cold = [_run_child("cold", raw_path, args.threads, 0.0, env) for _ in range(2)]
        for label, r in zip(("no kernel cache", "kernels cached"), cold, strict=True):
            print(
                f"cold process, {label}: imports {r['import_s']:.2f} s CPU, first 1 s of the "
                f"plate: default {r['default_s']:.2f} s CPU, then sensitive "
                f"{r['sensitive_s']:.2f} s CPU; process {r['cpu_s']:.2f} s CPU, "
                f"{r['seconds']:.2f} s wall"
            )
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
