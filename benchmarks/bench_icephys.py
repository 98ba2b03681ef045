"""Benchmark: per-cell feature extraction on 171116sh_0018.abf.

Prints the median and p90 of ``extract_features`` (default parameters, so
sweep QC passes and the cell features, tau fits included, are computed) in an
ingest worker's process, with the malloc settings ``stage_file`` applies
(:mod:`transforms.allocator`), and first with glibc's defaults; then the
median of decoding (``read_abf``) and of decode + features per cell, and the
ratio to a naive baseline measured in the same run: the IPFX approach of
filtering each whole sweep separately and looping over spikes in Python for
peaks, upstrokes, thresholds and troughs.

IPFX itself, measured live in the same run on the four IPFX reference files:
IPFX 2.1.2 runs in its own venv (``$NEUROCYTE_IPFX_PYTHON``, else
``<tmp>/neurocyte-ipfx-env``, created with ``uv venv`` + ``uv pip install
ipfx==2.1.2`` when missing), timed by ``benchmarks/ipfx_timing.py``, on the same
window both ways: IPFX's own window against the project with
``stim_window="ipfx"``, and the project's default first-epoch window against
IPFX given that window. When IPFX cannot be installed, the stored reference time
is printed instead, labelled as such.

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
from transforms.icephys.extract import IcephysParams, extract_features
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


IPFX_FILES = ("171116sh_0018.abf", "17o05028_ic_steps.abf", "File_axon_5.abf", "190619B_0003.abf")


def ipfx_python() -> Path | None:
    """A Python with ipfx 2.1.2: ``$NEUROCYTE_IPFX_PYTHON`` or a venv made here with uv."""
    import shutil
    import subprocess
    import tempfile

    given = os.environ.get("NEUROCYTE_IPFX_PYTHON")
    if given:
        return Path(given)
    env = Path(tempfile.gettempdir()) / "neurocyte-ipfx-env"
    py = env / "bin" / "python"
    check = [str(py), "-c", "import ipfx"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return py
    uv = shutil.which("uv")
    if uv is None:
        return None
    for cmd in (
        [uv, "venv", "--quiet", "--python", "3.11", str(env)],
        [uv, "pip", "install", "--quiet", "--python", str(py), "ipfx==2.1.2"],
    ):
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            return None
    return py if subprocess.run(check, capture_output=True).returncode == 0 else None


def _project_window(rec: IcephysRecording) -> tuple[float, float]:
    """The most common long-square window of the project's default analysis."""
    rows = extract_features(rec).sweeps.to_pylist()
    wins = [
        (r["stim_start_s"], r["stim_end_s"]) for r in rows if r["stimulus_kind"] == "long_square"
    ]
    return max(set(wins), key=wins.count)


def compare_ipfx() -> None:
    """Project vs IPFX, same run, same file, same window (both ways)."""
    import subprocess

    py = ipfx_python()
    if py is None:
        ref = json.loads((ABF / "ipfx_reference.json").read_text())
        print(
            "IPFX could not be installed: STORED reference only (not measured in this run): "
            f"{float(ref[FILE]['ipfx_seconds']) * 1e3:.0f} ms for {FILE}"
        )
        return
    script = Path(__file__).with_name("ipfx_timing.py")
    print(f"IPFX 2.1.2 measured live ({py}); median of 7 runs each, wall / CPU, load {_load()}")
    ratios: dict[str, list[float]] = {"ipfx": [], "first_epoch": []}
    for name in IPFX_FILES:
        rec = read_abf(ABF / name)
        start, end = _project_window(rec)
        for label, window, params in (
            ("ipfx", "ipfx", IcephysParams(stim_window="ipfx")),
            ("first_epoch", f"{start},{end}", IcephysParams()),
        ):
            extract_features(rec, params=params)
            ours = timed(lambda r=rec, p=params: extract_features(r, params=p), 15)  # type: ignore[misc]
            cpu0 = time.process_time()
            for _ in range(5):
                extract_features(rec, params=params)
            ours_cpu = (time.process_time() - cpu0) / 5
            out = subprocess.run(
                [str(py), str(script), str(ABF / name), "--window", window],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                print(f"  {name} {label}: IPFX failed: {out.stderr.strip()[-300:]}")
                continue
            ipfx = json.loads(out.stdout.strip().splitlines()[-1])
            med = float(np.median(ours))
            ratio = ipfx["median_s"] / med
            ratios[label].append(ratio)
            w0, w1 = ipfx["window_s"]
            print(
                f"  {name:<24} {label:<11} window {w0:.4f}-{w1:.4f} s: project {med * 1e3:6.1f} ms"
                f" ({ours_cpu * 1e3:5.1f} CPU), IPFX {ipfx['median_s'] * 1e3:6.1f} ms"
                f" ({ipfx['cpu_median_s'] * 1e3:5.1f} CPU, {ipfx['spikes']} spikes)"
                f" -> x{ratio:.1f} (CPU x{ipfx['cpu_median_s'] / ours_cpu:.1f})"
            )
    for label, values in ratios.items():
        if values:
            print(
                f"  speed-up vs IPFX, {label} window: median x{float(np.median(values)):.1f} "
                f"(range x{min(values):.1f}-x{max(values):.1f}, target >= x10)"
            )
    print(
        "  note: the project's default also runs sweep QC and gates the cell features on it;"
        " IPFX's analysis does no sweep QC"
    )


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"


def main() -> None:
    print(f"load average {_load()} (1/5 min) on {os.cpu_count()} cores")
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
    naive_med = float(np.median(naive))
    print(f"naive per-spike loops (same run) median: {naive_med * 1e3:.1f} ms")
    print(f"  -> speed-up x{naive_med / med:.1f}")
    compare_ipfx()


if __name__ == "__main__":
    main()
