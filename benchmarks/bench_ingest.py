"""Decode + features + Delta write for many patch-clamp cells, on one core.

Target (issue 3): 1000 cells like ``171116sh_0018.abf`` (17 sweeps x 3 s at
20 kHz) within 60 s on one core. The cells are the real file decoded again and
again (each with its own file_id), so decoding is measured honestly; rows are
written the way the ingest commits them (batches of files, one Delta commit
per table per batch). The baseline, measured in the same run on a subset, is
the naive path: one Delta commit per table per cell.

Usage: ``uv run python benchmarks/bench_ingest.py [--cells 1000] [--batch 100]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("NEUROCYTE_SHARED", REPO.parent / "shared"))
CELL = SHARED / "data" / "abf" / "171116sh_0018.abf"


def _pin_one_core() -> str:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        return "pinned to one core"
    return "not pinned (no sched_setaffinity)"


def run(n_cells: int, batch: int, lake: str) -> tuple[float, dict[str, float]]:
    import pyarrow as pa

    from transforms import spec
    from transforms.formats.abf import read_abf
    from transforms.icephys.extract import extract_features
    from transforms.lake import delta as lakeio
    from transforms.lake.provenance import with_provenance
    from transforms.pipeline.decode_icephys import recording_row
    from transforms.pipeline.landing import Target

    target = Target(lab="bench", condition="WT", timepoint="P14", source=CELL.name)
    part = target.partition
    base = hashlib.sha256(CELL.read_bytes()).digest()
    size = CELL.stat().st_size
    timings = {"decode": 0.0, "features": 0.0, "rows": 0.0, "write": 0.0}
    pending: dict[str, list[pa.Table]] = {}
    t_all = time.perf_counter()
    for i in range(n_cells):
        file_id = hashlib.sha256(base + i.to_bytes(4, "little")).hexdigest()
        ingest_id = hashlib.md5(file_id.encode(), usedforsecurity=False).hexdigest()
        source = spec.SourceFile(
            uri=str(CELL), name=CELL.name, size_bytes=size, file_id=file_id, local_path=CELL
        )
        t0 = time.perf_counter()
        rec = read_abf(CELL)
        t1 = time.perf_counter()
        feats = extract_features(rec)
        t2 = time.perf_counter()
        params = feats.params.as_dict()
        tables = {
            spec.ICEPHYS_RECORDINGS: recording_row(source, rec, target),
            spec.ICEPHYS_SWEEPS: feats.sweeps,
            spec.ICEPHYS_SPIKES: feats.spikes,
            spec.ICEPHYS_CELL_FEATURES: feats.cell,
        }
        for name, rows in tables.items():
            pending.setdefault(name, []).append(
                with_provenance(
                    rows, file_id=file_id, ingest_id=ingest_id, partition=part, params=params
                )
            )
        t3 = time.perf_counter()
        timings["decode"] += t1 - t0
        timings["features"] += t2 - t1
        timings["rows"] += t3 - t2
        if (i + 1) % batch == 0 or i + 1 == n_cells:
            t4 = time.perf_counter()
            for name, parts in pending.items():
                lakeio.append_rows(name, pa.concat_tables(parts), lake=lake)
            pending.clear()
            timings["write"] += time.perf_counter() - t4
    return time.perf_counter() - t_all, timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--baseline-cells", type=int, default=50)
    args = parser.parse_args()
    pinned = _pin_one_core()
    from transforms.lake import delta as lakeio  # import cost outside the timing
    from transforms.pipeline.allocator import retain_freed_memory

    retain_freed_memory()  # as stage_file does in every ingest worker

    _ = lakeio
    with tempfile.TemporaryDirectory() as tmp:
        total, t = run(args.cells, args.batch, f"{tmp}/lake")
        base_total, _bt = run(args.baseline_cells, 1, f"{tmp}/lake_naive")
        rows = lakeio.count_rows("icephys_sweeps", lake=f"{tmp}/lake")
    per_cell_ms = 1000 * total / args.cells
    base_per_cell_ms = 1000 * base_total / args.baseline_cells
    print(f"cells: {args.cells} ({CELL.name}: 17 sweeps x 3 s, 20 kHz), {pinned}")
    print(f"total: {total:.1f} s  (target <= 60 s for 1000 cells)  -> {per_cell_ms:.1f} ms/cell")
    for k, v in t.items():
        print(f"  {k:<9} {1000 * v / args.cells:7.2f} ms/cell  ({100 * v / total:4.1f} %)")
    print(f"sweep rows written: {rows}")
    print(
        f"baseline (one Delta commit per table per cell, {args.baseline_cells} cells): "
        f"{base_per_cell_ms:.1f} ms/cell -> batched is {base_per_cell_ms / per_cell_ms:.2f}x faster"
    )
    print(f"projected for 1000 cells: {per_cell_ms:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
