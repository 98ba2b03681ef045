"""Benchmark: lossless raw archive of a realistic synthetic plate vs mtscomp-style delta+zlib.

The plate: a 12-well, 768-channel, 12.5 kHz ``.raw`` (``transforms/synth/plate.py``:
1/f + white noise, spikes, silent / Poisson / bursting wells) at Axion's voltage
scale (0.058 µV per count). Its noise (0.6-1.6 µV RMS per electrode, 70 % of it
1/f-like) is calibrated on the two ratios measured on real Axion int16 data (16
channels x 2 s of a 24-well plate): mtscomp-style delta+zlib 2.04x and pcodec 2.74x;
this plate gives 2.00x and 2.69x (24 wells, 3 s). Then a few channels are made
silent (flat, a disconnected electrode) and a few noisy (+20 µV RMS white noise, a bad contact).

Measured in the same run, on the same samples:

* codecs at chunk level (1 s x one well, channels as rows), one thread: pcodec
  levels 4 and 8 (and 8 on the chunk stored time-major, the layout readers want),
  delta + blosc(zstd, bit-shuffle) levels 5 and 9;
* the archive (``transforms.formats.raw_archive``, pcodec level 8 + CRC32C): ratio,
  compression with 2 workers (including verification: read-back and source re-read),
  full decompression, a 2-s window of one well;
* the baseline, mtscomp-style: 1 s x all channels chunks, delta along time,
  zlib level 6, 2 threads: ratio, compression, decompression, a 2-s window of one
  well (whole chunks must be decompressed);
* spike detection from the original ``.raw`` and from the archive, alternated, best of
  ``--repeats``.

The load average is printed before and after: the target machine has 2 cores, and
above a load of 2 every wall-time figure is slowed; CPU seconds (all threads) are
printed beside wall times for decompression and detection, as they are less sensitive to
other processes.

    uv run python benchmarks/bench_archive.py --duration-s 20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

N_SILENT = 6
N_NOISY = 6
NOISY_EXTRA_UV = 20.0


def realistic_plate(out: Path, duration_s: float, seed: int) -> Path:
    """The synthetic plate with a few silent and a few noisy channels."""
    from transforms.formats.axion import open_axion, write_axion_raw
    from transforms.synth.plate import generate_plate

    plate = generate_plate(
        out / "gen",
        n_wells=12,
        duration_s=duration_s,
        seed=seed,
        noise_rms_uv=(0.6, 1.6),
        write_spk=False,
    )
    src = open_axion(plate.raw_path)
    rng = np.random.default_rng(seed + 1)
    picks = rng.choice(len(src.electrodes), N_SILENT + N_NOISY, replace=False)
    silent, noisy = picks[:N_SILENT], picks[N_SILENT:]
    extra_counts = NOISY_EXTRA_UV / abs(src.voltage_scale_uv_per_count)
    step = round(src.sampling_rate_hz)

    def chunks() -> Iterator[np.ndarray]:
        for k in range(0, src.n_samples, step):
            block = src.read_counts(k, k + step).astype(np.int32)
            block[:, silent] = 0
            block[:, noisy] += np.round(
                rng.standard_normal((block.shape[0], len(noisy))) * extra_counts
            ).astype(np.int32)
            yield np.clip(block, -32768, 32767).astype(np.int16)

    path = write_axion_raw(
        out / "plate.raw",
        chunks(),
        layout=src.layout,
        sampling_rate_hz=src.sampling_rate_hz,
        voltage_scale_uv_per_count=src.voltage_scale_uv_per_count,
        electrodes=src.electrodes,
        recorded_at=src.recorded_at,
    )
    shutil.rmtree(out / "gen")
    return path


def _mts_encode(block: np.ndarray) -> bytes:
    delta = np.diff(block, axis=0, prepend=np.zeros((1, block.shape[1]), block.dtype))
    return zlib.compress(delta.astype(block.dtype).tobytes(), 6)


def _mts_decode(blob: bytes, shape: tuple[int, int]) -> np.ndarray:
    delta = np.frombuffer(zlib.decompress(blob), dtype=np.int16).reshape(shape)
    return np.cumsum(delta, axis=0, dtype=np.int16)


def baseline(counts: np.ndarray, fs: int, duration_s: float, well_cols: np.ndarray) -> dict:
    """mtscomp-style: 1 s x all channels, delta along time, zlib 6, 2 threads."""
    blocks = [counts[k : k + fs] for k in range(0, len(counts), fs)]
    with ThreadPoolExecutor(2) as pool:
        t0 = time.perf_counter()
        blobs = list(pool.map(_mts_encode, blocks))
        t_enc = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        back = list(
            pool.map(
                lambda a: _mts_decode(*a),
                [(b, x.shape) for b, x in zip(blobs, blocks, strict=True)],
            )
        )
        t_dec, c_dec = time.perf_counter() - t0, time.process_time() - c0
    assert all(np.array_equal(a, b) for a, b in zip(back, blocks, strict=True))
    windows = []
    for start_s in np.linspace(0, max(0.0, duration_s - 2.5), 10):
        t0 = time.perf_counter()
        k0, k1 = round(start_s * fs), round((start_s + 2.0) * fs)
        parts = [_mts_decode(blobs[i], blocks[i].shape) for i in range(k0 // fs, -(-k1 // fs))]
        np.concatenate(parts)[k0 - (k0 // fs) * fs : k1 - (k0 // fs) * fs][:, well_cols]
        windows.append(time.perf_counter() - t0)
    stored = sum(len(b) for b in blobs)
    return {
        "ratio": counts.nbytes / stored,
        "compress_x_realtime": duration_s / t_enc,
        "decompress_x_realtime": duration_s / t_dec,
        "decompress_cpu_s_per_plate_s": c_dec / duration_s,
        "window_2s_one_well_ms": 1e3 * float(np.median(windows)),
    }


def codec_table(counts: np.ndarray, fs: int, wells: list[np.ndarray], duration_s: float) -> dict:
    """Each candidate on 1 s x one well chunks (channels as rows), one thread."""
    import numcodecs

    chunks = [
        np.ascontiguousarray(counts[k : k + fs, cols].T)
        for k in range(0, len(counts), fs)
        for cols in wells
    ]

    def delta_blosc(level: int) -> tuple[Callable, Callable]:
        codec = numcodecs.Blosc(cname="zstd", clevel=level, shuffle=numcodecs.Blosc.BITSHUFFLE)

        def enc(c: np.ndarray) -> bytes:
            return codec.encode(np.diff(c, axis=1, prepend=np.zeros((len(c), 1), c.dtype)))

        def dec(b: bytes, shape: tuple[int, int]) -> np.ndarray:
            d = np.frombuffer(codec.decode(b), dtype=np.int16).reshape(shape)
            return np.cumsum(d, axis=1, dtype=np.int16)

        return enc, dec

    def pco(level: int) -> tuple[Callable, Callable]:
        codec = numcodecs.PCodec(level=level)
        return codec.encode, lambda b, shape: np.asarray(codec.decode(b)).reshape(shape)

    def pco_time_major(level: int) -> tuple[Callable, Callable]:
        """The same chunks stored (samples, channels), as readers want them (no transpose
        on reading, but pcodec's deltas then run across channels)."""
        codec = numcodecs.PCodec(level=level)

        def enc(c: np.ndarray) -> bytes:
            return codec.encode(np.ascontiguousarray(c.T))

        def dec(b: bytes, shape: tuple[int, int]) -> np.ndarray:
            return np.asarray(codec.decode(b)).reshape(shape[::-1]).T

        return enc, dec

    numcodecs.blosc.set_nthreads(1)
    candidates = {
        "pcodec-4": pco(4),
        "pcodec-8": pco(8),
        "pcodec-8 stored (samples, channels)": pco_time_major(8),
        "delta+blosc-zstd5-bitshuffle": delta_blosc(5),
        "delta+blosc-zstd9-bitshuffle": delta_blosc(9),
    }
    table = {}
    for name, (enc, dec) in candidates.items():
        t0 = time.perf_counter()
        blobs = [enc(c) for c in chunks]
        t_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = [dec(b, c.shape) for b, c in zip(blobs, chunks, strict=True)]
        t_dec = time.perf_counter() - t0
        assert all(np.array_equal(a, b) for a, b in zip(back, chunks, strict=True)), name
        table[name] = {
            "ratio": round(counts.nbytes / sum(len(b) for b in blobs), 3),
            "compress_x_realtime_1_thread": round(duration_s / t_enc, 1),
            "decompress_x_realtime_1_thread": round(duration_s / t_dec, 1),
        }
    return table


def _timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """Wall and CPU seconds (all threads of the process) of ``fn()``, and its result."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - t0, time.process_time() - c0, result


def archive_figures(raw: Path, root: Path, duration_s: float, *, repeats: int) -> dict:
    from transforms.formats.axion import open_axion
    from transforms.formats.raw_archive import open_raw_archive, write_archive
    from transforms.mea.detect import detect_spikes

    src = open_axion(raw)
    dest = root / ("0" * 64 + ".zarr")
    t0 = time.perf_counter()
    info = write_archive(
        src, dest, file_id="0" * 64, source_name=raw.name, source_kind="axion_raw", workers=2
    )
    t_write = time.perf_counter() - t0
    fs = round(src.sampling_rate_hz)
    out: dict = {"ratio": info.ratio, "compress_verify_x_realtime": duration_s / t_write}
    buf = np.empty((fs, len(src.electrodes)), dtype=np.int16)

    def full_read() -> None:
        with open_raw_archive(dest) as arc:  # a fresh archive: nothing cached
            for k in range(0, arc.n_samples, fs):
                arc.read_counts(k, k + fs, out=buf)

    reads = [_timed(full_read)[:2] for _ in range(repeats)]
    wall, cpu = min(reads)
    out["decompress_x_realtime"] = duration_s / wall
    out["decompress_cpu_s_per_plate_s"] = cpu / duration_s
    with open_raw_archive(dest, cache_mb=0) as arc:  # every window decompressed
        rng = np.random.default_rng(0)
        times = []
        for _ in range(20):
            well = str(rng.choice(arc.layout.wells))
            start = float(rng.uniform(0, max(0.0, duration_s - 2.0)))
            t0 = time.perf_counter()
            arc.read(start, start + 2.0, wells=[well])
            times.append(time.perf_counter() - t0)
    out["window_2s_one_well_ms"] = 1e3 * float(np.median(times))
    out["window_2s_one_well_ms_max"] = 1e3 * float(np.max(times))

    def from_archive() -> object:
        with open_raw_archive(dest) as arc:
            return detect_spikes(arc, n_threads=2)

    # alternated, so that a change of machine load hits both alike; best of `repeats`
    runs_raw, runs_arc = [], []
    for _ in range(repeats):
        runs_raw.append(_timed(lambda: detect_spikes(src, n_threads=2)))
        runs_arc.append(_timed(from_archive))
    best_raw, best_arc = min(runs_raw, key=lambda r: r[0]), min(runs_arc, key=lambda r: r[0])
    out["detect_from_raw_s"], out["detect_from_raw_cpu_s"] = best_raw[0], best_raw[1]
    out["detect_from_archive_s"], out["detect_from_archive_cpu_s"] = best_arc[0], best_arc[1]
    out["same_spikes"] = bool(best_arc[2].equals(best_raw[2]))  # type: ignore[attr-defined]
    return out


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration-s", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=3, help="best of N for reads and detection")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_archive_", dir=args.out_dir))
    try:
        raw = realistic_plate(root, args.duration_s, args.seed)
        from transforms.formats.axion import open_axion

        src = open_axion(raw)
        fs = round(src.sampling_rate_hz)
        counts = src.read_counts(0, src.n_samples)
        wells: dict[str, list[int]] = {}
        for i, e in enumerate(src.electrodes):
            wells.setdefault(e.split("_", 1)[0], []).append(i)
        well_cols = [np.asarray(c) for c in wells.values()]
        print(
            f"plate: {len(src.electrodes)} channels x {args.duration_s:g} s at {fs} Hz, "
            f"{counts.nbytes / 1e6:.0f} MB of int16 ({N_SILENT} silent, {N_NOISY} noisy channels)"
        )
        codecs = codec_table(counts, fs, well_cols, args.duration_s)
        for name, row in codecs.items():
            print(f"  codec {name:36s} {row}")
        print(f"load average before: {_load()}")
        base = baseline(counts, fs, args.duration_s, well_cols[1])
        arch = archive_figures(raw, root, args.duration_s, repeats=args.repeats)
        print(f"load average after: {_load()} (2 cores; above 2 every wall-time figure is slowed)")
        print(f"baseline mtscomp-style delta+zlib6, 2 threads: {json.dumps(base)}")
        print(f"archive zarr v3 pcodec-8 + crc32c, 2 workers:  {json.dumps(arch)}")
        print(
            f"archive vs baseline: ratio x{arch['ratio'] / base['ratio']:.2f}, decompression "
            f"x{arch['decompress_x_realtime'] / base['decompress_x_realtime']:.2f}, 2-s window "
            f"x{base['window_2s_one_well_ms'] / arch['window_2s_one_well_ms']:.1f} faster; "
            f"detection from archive / from .raw: "
            f"{arch['detect_from_archive_s'] / arch['detect_from_raw_s']:.2f} wall, "
            f"{arch['detect_from_archive_cpu_s'] / arch['detect_from_raw_cpu_s']:.2f} CPU"
        )
        targets = {
            "ratio >= 2.5": arch["ratio"] >= 2.5,
            "decompression >= 100x real time": arch["decompress_x_realtime"] >= 100,
            "compression >= 4x real time": arch["compress_verify_x_realtime"] >= 4,
            "2-s window of one well <= 50 ms": arch["window_2s_one_well_ms"] <= 50,
            "detection from archive within 20 %": arch["detect_from_archive_s"]
            <= 1.2 * arch["detect_from_raw_s"],
        }
        print("targets: " + json.dumps(targets))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
