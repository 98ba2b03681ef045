"""Reliability and security suite: shared checks on a real lake and its catalog.

Nothing here is mocked: the checks open the real Delta tables with delta-rs and
the published DuckDB catalog read-only, exactly as an analyst would.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from tests.conftest import REPO_ROOT
from transforms import spec
from transforms.lake import delta as lakeio

#: Columns that legitimately differ between two runs over the same content.
VOLATILE = {"ingest_id", "batch_id", "published_at", "finished_at", "started_at", "qc_report"}

CRASH_WORKER = Path(__file__).with_name("crash_worker.py")


def worker_env(**extra: str) -> dict[str, str]:
    """Environment of a worker subprocess: the repo importable, quiet logging."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def spawn_worker(*args: str, env: dict[str, str] | None = None, log: Path | None = None):
    """Start ``crash_worker.py`` with ``args``; stdout is a pipe (it prints READY/DONE)."""
    return subprocess.Popen(
        [sys.executable, str(CRASH_WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=open(log, "ab") if log else subprocess.DEVNULL,
        env=env or worker_env(),
        cwd=str(REPO_ROOT),
        text=True,
    )


def delta_log_entries(lake: Path) -> int:
    """Number of committed Delta log entries over every table of a local lake."""
    tables = lake / "tables"
    if not tables.is_dir():
        return 0
    return sum(1 for _ in tables.glob("*/_delta_log/*.json"))


def _catalog(lake: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(lake / spec.CATALOG_FILE), read_only=True)


def _rows_digest(rows: list[tuple]) -> str:
    h = hashlib.sha256()
    for line in sorted(repr(r) for r in rows):
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()


def published_checksum(lake: Path) -> tuple[str, dict[str, int]]:
    """SHA-256 over the sorted published rows of every data view and of ``published``.

    Excludes only columns that differ between runs by design (attempt ids,
    batch ids, timestamps of the attempt). Returns the digest and the row
    count per view.
    """
    con = _catalog(lake)
    try:
        digest = hashlib.sha256()
        counts: dict[str, int] = {}
        for view in ("published", *spec.DATA_TABLES):
            cols = [
                c
                for (c,) in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE table_name = ? "
                    "ORDER BY column_index",
                    [view],
                ).fetchall()
                if c not in VOLATILE
            ]
            select = ", ".join(f'"{c}"' for c in sorted(cols))
            rows = con.execute(f"SELECT {select} FROM {view}").fetchall()
            counts[view] = len(rows)
            digest.update(f"{view}:{','.join(sorted(cols))}:{_rows_digest(rows)}\n".encode())
        return digest.hexdigest(), counts
    finally:
        con.close()


@dataclass
class Consistency:
    """What the published views hold, file by file."""

    files: int = 0
    rows: int = 0
    rows_lost: int = 0
    rows_duplicated: int = 0
    problems: list[str] = field(default_factory=list)

    def count(self, table: str, file_id: str, n: int, need: int) -> None:
        """Record ``n`` visible rows of ``file_id`` in ``table`` where ``need`` were staged."""
        self.rows += n
        if n < need:
            self.rows_lost += need - n
            self.problems.append(f"{table}: file {file_id[:12]} has {n} of {need} rows")
        elif n > need:
            self.rows_duplicated += n - need
            self.problems.append(f"{table}: file {file_id[:12]} has {n} rows, staged {need}")


def check_tables_readable(lake: Path) -> int:
    """Read every existing Delta table in full (delta-rs); return the physical row count."""
    total = 0
    for table in spec.ALL_TABLES:
        data = lakeio.read_table(table, lake=str(lake))
        if data is not None:
            total += data.num_rows
    return total


def check_published(lake: Path, *, forbidden: set[str] = frozenset()) -> Consistency:
    """Every published file is whole, once, in every view it should be in.

    For each file in ``published``: each data view has exactly the number of
    rows its published attempt staged (``rows_json`` of that ingest_log row),
    all of one ingest_id (the published one). No row of a file in
    ``forbidden`` (files that failed QC) or of an unpublished file is visible.
    """
    con = _catalog(lake)
    out = Consistency()
    try:
        published = {
            fid: iid
            for fid, iid in con.execute("SELECT file_id, ingest_id FROM published").fetchall()
        }
        expected = (
            {
                fid: json.loads(rows or "{}")
                for fid, iid, rows in con.execute(
                    "SELECT file_id, ingest_id, rows_json FROM ingest_log "
                    "WHERE status = 'published'"
                ).fetchall()
                if published.get(fid) == iid
            }
            if published
            else {}
        )  # no ingest_log table yet: its placeholder view is empty
        out.files = len(published)
        for fid in forbidden & set(published):
            out.problems.append(f"QC-failed file {fid[:12]} is published")
        for view in spec.DATA_TABLES:
            got = {
                fid: (n, ids, first)
                for fid, n, ids, first in con.execute(
                    f"SELECT file_id, count(*), count(DISTINCT ingest_id), min(ingest_id) "
                    f"FROM {view} GROUP BY file_id"
                ).fetchall()
            }
            for fid, (n, ids, first) in got.items():
                if fid not in published:
                    out.problems.append(f"{view}: rows of unpublished file {fid[:12]}")
                if fid in forbidden:
                    out.problems.append(f"{view}: {n} rows of QC-failed file {fid[:12]}")
                if ids != 1 or (fid in published and first != published[fid]):
                    out.problems.append(f"{view}: file {fid[:12]} has {ids} ingest_ids")
            for fid, want in expected.items():
                out.count(view, fid, got.get(fid, (0, 0, None))[0], int(want.get(view, 0)))
        return out
    finally:
        con.close()


def small_abf(path: Path, *, seed: int, n_sweeps: int = 3, vm_mv: float = -70.0) -> Path:
    """A small, valid current-clamp ABF1 (distinct content per seed) via the demo writer."""
    from datetime import datetime

    import numpy as np

    from transforms.formats.abf1_writer import StepEpoch, write_abf1

    rng = np.random.default_rng(seed)
    n = 4000
    sweeps = vm_mv + rng.normal(0.0, 0.2, size=(n_sweeps, n))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_abf1(
        path,
        sweeps,
        sampling_rate_hz=20000.0,
        epochs=[StepEpoch(level_pa=0.0, delta_pa=0.0, duration_samples=2000)],
        recorded_at=datetime(2024, 1, 2, 3, 4, 5),
    )


def lake_published(lake: str) -> Consistency:
    """:func:`check_published` straight from the Delta snapshots (any lake URI, e.g. s3://).

    Applies the catalog's own rule (latest published attempt per file_id,
    rows of that ingest_id only) in an in-memory DuckDB.
    """
    con = duckdb.connect()
    out = Consistency()
    log = lakeio.read_table(spec.INGEST_LOG, lake=lake)
    if log is None:
        return out
    con.register("log", log)
    pub = con.execute(
        "SELECT file_id, ingest_id, rows_json FROM log WHERE status = 'published' "
        "QUALIFY row_number() OVER (PARTITION BY file_id ORDER BY finished_at DESC, "
        "ingest_id DESC) = 1"
    ).fetchall()
    out.files = len(pub)
    for table in spec.DATA_TABLES:
        data = lakeio.read_table(table, lake=lake, columns=["file_id", "ingest_id"])
        counts: dict[tuple[str, str], int] = {}
        if data is not None:
            con.register("t", data)
            counts = {
                (f, i): n
                for f, i, n in con.execute(
                    "SELECT file_id, ingest_id, count(*) FROM t GROUP BY ALL"
                ).fetchall()
            }
            con.unregister("t")
        for fid, iid, rows in pub:
            need = int(json.loads(rows or "{}").get(table, 0))
            out.count(table, fid, counts.get((fid, iid), 0), need)
    return out


@contextmanager
def memory_cap(extra_gb: float = 3.0):
    """Cap this process's address space at its current size + ``extra_gb`` while inside.

    A crafted header can make a reader allocate tens of GB; on a shared host
    that must end as a MemoryError in this process, never as the kernel's
    OOM killer picking a victim. The soft limit is restored on exit.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as fh:
        vm_bytes = int(fh.read().split()[0]) * resource.getpagesize()
    cap = vm_bytes + int(extra_gb * (1 << 30))
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield cap
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
