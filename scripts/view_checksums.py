"""Checksums of every published view after ingesting the shared corpus and the demo.

Run with the repo as the working directory:
    python scripts/view_checksums.py OUT_JSON [--work DIR]
Columns that differ by run (attempt ids, timestamps, batch ids, QC page names) are
left out; every other value of every row counts, rows sorted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VOLATILE = {"ingest_id", "batch_id", "qc_report", "started_at", "finished_at", "published_at"}


def run(args, env):
    r = subprocess.run(
        [sys.executable, "-m", "transforms.cli", *args], env=env, capture_output=True, text=True
    )
    if r.returncode not in (0,):
        print(r.stdout, r.stderr)
        raise SystemExit(f"failed: {args}")
    return r.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument(
        "--work",
        default=str(Path(tempfile.gettempdir()) / "nc-checksums"),
        help="scratch folder; keep it the same between runs (source paths are compared)",
    )
    ap.add_argument("--shared", default=os.environ.get("NEUROCYTE_SHARED", "../shared"))
    a = ap.parse_args()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    shared = Path(a.shared).resolve()
    lake, landing = work / "lake", work / "landing"
    env = {**os.environ, "NEUROCYTE_LAKE": str(lake), "NEUROCYTE_LANDING": str(landing)}
    env.pop("NEUROCYTE_CATALOG", None)
    run(["demo-data", "--landing", str(landing)], env)
    run(["ingest", str(landing), "--no-publish"], env)
    corpus = work / "corpus"
    for sub, cond in (("abf", "WT"), ("nwb", "WT")):
        d = corpus / "lab1" / cond / "P14"
        d.mkdir(parents=True, exist_ok=True)
        for f in sorted((shared / "data" / sub).iterdir()):
            if f.suffix in (".abf", ".nwb"):
                shutil.copy(f, d / f.name)
    mea = corpus / "lab1" / "mea" / "DIV3"
    mea.mkdir(parents=True)
    for f in (shared / "data" / "mea").iterdir():
        shutil.copy(f, mea / f.name)
    run(["ingest", str(corpus), "--landing", str(corpus)], env)
    import duckdb

    con = duckdb.connect(str(lake / "catalog.duckdb"), read_only=True)
    views = [
        r[0]
        for r in con.sql(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1"
        ).fetchall()
    ]
    out = {}
    for v in views:
        # view and column names come from the catalog itself, not from input
        probe = f"SELECT * FROM {v} LIMIT 0"  # noqa: S608
        cols = [c for c in con.sql(probe).columns if c not in VOLATILE]
        sel = ", ".join(f'"{c}"' for c in cols)
        rows = con.sql(f"SELECT {sel} FROM {v}").fetchall()  # noqa: S608
        lines = sorted(json.dumps(r, default=str) for r in rows)
        h = hashlib.sha256("\n".join(lines).encode()).hexdigest()
        out[v] = {"rows": len(rows), "columns": len(cols), "sha256": h}
        print(f"{v:<28} {len(rows):>8} rows  {h[:16]}")
    Path(a.out).write_text(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
