"""Benchmark: the per-cell and per-plate endpoints of the Neurocyte page on a demo lake.

Builds the demo lake (``neurocyte demo-data``: 8 simulated cells and the
quarantined gain-error file), adds the shared NWB cell (``99111002.nwb``) and a
synthetic 12-well plate (60 s), then calls every endpoint a cell or plate page
uses through the real FastAPI app (TestClient, no network): the first call
(cold: the raw file decoded) and the median and p90 of 15 further calls. Target:
each answers within 300 ms for the demo lake's recordings. The baseline in the same
run is the first call, before the process's decoded-recording cache holds the file.

Run: ``uv run python benchmarks/bench_pages.py``
"""

from __future__ import annotations

import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))

from transforms.pipeline import ingest_paths
from transforms.synth.demo import generate_demo
from transforms.synth.plate import generate_plate

SHARED = ROOT.parent / "shared" / "data"
TARGET_MS = 300.0
REPEATS = 15


def timed(client, url: str) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    r = client.get(url)
    first = (time.perf_counter() - t0) * 1000
    if r.status_code != 200:
        raise SystemExit(f"{url}: {r.status_code} {r.text[:300]}")
    runs = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        client.get(url)
        runs.append((time.perf_counter() - t0) * 1000)
    runs.sort()
    return first, statistics.median(runs), runs[int(0.9 * (len(runs) - 1))]


def main() -> None:
    from fastapi.testclient import TestClient

    root = Path(tempfile.mkdtemp(prefix="bench-pages-"))
    try:
        landing, lake = root / "landing", root / "lake"
        generate_demo(landing)
        nwb = SHARED / "nwb" / "99111002.nwb"
        if nwb.is_file():
            dest = landing / "bench" / "WT" / "P21" / nwb.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(nwb, dest)
        ingest_paths([landing], lake=str(lake), landing=str(landing))
        plate = generate_plate(root / "plate", n_wells=12, duration_s=60.0, seed=3, write_spk=False)
        ingest_paths(
            [plate.raw_path],
            lake=str(lake),
            lab="bench",
            timepoint="DIV14",
            plate_map=plate.plate_map_path,
        )
        app = importlib.import_module("neurocyte_plugin").create_app(str(lake), require_auth=False)
        with TestClient(app) as client:
            cells = client.get("/api/cells").json()["cells"]
            plates = client.get("/api/plates").json()["plates"]
            rows = []
            for c in cells:
                fid = c["file_id"]
                page = client.get(f"/api/cells/{fid}").json()
                spiking = [s for s in page["sweeps"] if (s.get("spike_count") or 0) > 0]
                sweep = (spiking or page["sweeps"])[0]["sweep_number"]
                for url in (
                    f"/api/cells/{fid}",
                    f"/api/cells/{fid}/sweeps/{sweep}",
                    f"/api/cells/{fid}/sweeps",
                ):
                    rows.append((c["file_name"], url.split(fid)[1] or "/", *timed(client, url)))
            for p in plates:
                fid = p["file_id"]
                for url in (
                    f"/api/plates/{fid}",
                    f"/api/plates/{fid}/heatmap",
                    f"/api/plates/{fid}/raster",
                    f"/api/plates/{fid}/network-bursts",
                    f"/api/plates/{fid}/by-div",
                ):
                    rows.append((p["file_name"], url.split(fid)[1] or "/", *timed(client, url)))
        print(f"{'recording':34} {'endpoint':18} {'first ms':>9} {'median ms':>10} {'p90 ms':>8}")
        worst = 0.0
        for name, ep, first, med, p90 in rows:
            worst = max(worst, med)
            print(f"{name[:34]:34} {ep[:18]:18} {first:9.1f} {med:10.1f} {p90:8.1f}")
        verdict = "within" if worst <= TARGET_MS else "OVER"
        print(f"worst median {worst:.1f} ms: {verdict} the {TARGET_MS:.0f} ms target")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
