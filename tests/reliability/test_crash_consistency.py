"""Crash consistency: SIGKILL a real ingest at random points, many times over.

A worker process (``crash_worker.py``) ingests a landing zone (good files, one
that fails QC, one unreadable) into a lake, half the time as a forced
re-ingest (so commits replace published files and prune superseded rows). The
test kills it with SIGKILL either after a random delay or right after a random
number of new ``_delta_log`` entries appear (i.e. between the Delta commits of
the protocol). After every kill: every table is readable, the catalog left
behind (if any) opens, and after republishing, every published file has all
its rows, once, under one ingest_id, and no row of the QC-failed file is
visible. Finally an uninterrupted re-run must converge to exactly the
published content of a clean run on a fresh lake (checksum).

``NEUROCYTE_CRASH_KILLS`` (default 2; ``-m slow`` runs 25) and
``NEUROCYTE_CRASH_SEED`` control the run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import ABF_DIR
from tests.reliability import (
    check_published,
    check_tables_readable,
    delta_log_entries,
    published_checksum,
    spawn_worker,
)
from transforms.lake.catalog import publish
from transforms.lake.storage import sha256 as sha256_file

GOOD = ["File_axon_7.abf", "File_axon_5.abf"]
QC_FAIL = "opto_aps_bad_units.abf"


def _landing(root: Path) -> Path:
    folder = root / "labA" / "WT" / "P14"
    folder.mkdir(parents=True)
    for name in (*GOOD, QC_FAIL):
        shutil.copyfile(ABF_DIR / name, folder / name)
    (folder / "garbage.abf").write_bytes(random.Random(5).randbytes(3000))
    return root


def _wait_ready(proc, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == "READY":
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode} before READY")
    proc.kill()
    raise AssertionError("worker not READY in time")


def _run_to_end(lake: Path, landing: Path, *extra: str, log: Path) -> tuple[float, list[dict]]:
    proc = spawn_worker(
        str(lake), str(landing), "--landing", str(landing), "--batch-size", "2", *extra, log=log
    )
    _wait_ready(proc)
    t0 = time.monotonic()
    out, _ = proc.communicate(timeout=600)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0 and "DONE" in out, log.read_text()[-3000:]
    outcomes = [json.loads(x[8:]) for x in out.splitlines() if x.startswith("OUTCOME ")]
    return elapsed, outcomes


def _kill_once(lake, landing, rng, *, run_s, commits, log) -> dict:
    force = rng.random() < 0.5
    mode = rng.choice(["delay", "delta_log"])
    args = [str(lake), str(landing), "--landing", str(landing), "--batch-size", "2"]
    proc = spawn_worker(*args, *(["--force"] if force else []), log=log)
    _wait_ready(proc)
    base = delta_log_entries(lake)
    if mode == "delay":
        target = rng.uniform(0.0, run_s)
        deadline = time.monotonic() + target
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        point = f"{target:.2f}s"
    else:
        target = rng.randint(1, max(1, commits))
        deadline = time.monotonic() + 4 * run_s + 30
        while (
            delta_log_entries(lake) < base + target
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.002)
        point = f"after {target} new _delta_log entries"
    finished = proc.poll() is not None
    if not finished:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    return {
        "mode": mode,
        "force": force,
        "point": point,
        "killed": not finished,
        "new_log_entries": delta_log_entries(lake) - base,
    }


def _check_after_crash(lake: Path, qc_fail_id: str) -> dict:
    check_tables_readable(lake)
    stale = None
    if (lake / "catalog.duckdb").exists():  # the catalog the killed run left behind
        stale = check_published(lake, forbidden={qc_fail_id})
        assert not stale.problems, stale.problems
    publish(lake=str(lake))
    fresh = check_published(lake, forbidden={qc_fail_id})
    assert not fresh.problems, fresh.problems
    return {"files": fresh.files, "rows": fresh.rows, "stale_catalog_ok": stale is not None}


def _crash_campaign(tmp_path: Path, kills: int) -> dict:
    seed = int(os.environ.get("NEUROCYTE_CRASH_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    landing = _landing(tmp_path / "landing")
    qc_fail_id = sha256_file(ABF_DIR / QC_FAIL)
    log = tmp_path / "worker.log"

    clean = tmp_path / "clean_lake"
    run_s, outcomes = _run_to_end(clean, landing, log=log)
    statuses = sorted(o["status"] for o in outcomes)
    assert statuses == ["failed", "published", "published", "quarantined"]
    commits = delta_log_entries(clean)
    want, want_counts = published_checksum(clean)
    assert check_published(clean, forbidden={qc_fail_id}).problems == []

    lake = tmp_path / "lake"
    events = []
    for i in range(kills):
        event = _kill_once(lake, landing, rng, run_s=run_s, commits=commits, log=log)
        event.update(_check_after_crash(lake, qc_fail_id))
        events.append(event)
        print(f"crash {i + 1}/{kills} seed={seed}: {event}", flush=True)

    _, final = _run_to_end(lake, landing, log=log)
    publish(lake=str(lake))
    result = check_published(lake, forbidden={qc_fail_id})
    got, got_counts = published_checksum(lake)
    summary = {
        "seed": seed,
        "kills": sum(e["killed"] for e in events),
        "runs_that_finished_first": sum(not e["killed"] for e in events),
        "kills_by_mode": {
            m: sum(e["killed"] and e["mode"] == m for e in events) for m in ("delay", "delta_log")
        },
        "files_published": result.files,
        "rows_checked": result.rows,
        "rows_lost": result.rows_lost,
        "rows_duplicated": result.rows_duplicated,
        "converged": got == want,
        "run_s": round(run_s, 1),
        "commits_per_clean_run": commits,
    }
    print("CRASH-SUMMARY " + json.dumps(summary), flush=True)
    assert not result.problems, result.problems
    assert got_counts == want_counts, (got_counts, want_counts, f"seed={seed}")
    assert got == want, f"re-run did not converge to the clean run (seed={seed})"
    assert {o["status"] for o in final} <= {
        "published",
        "duplicate",
        "not_retried",
        "failed",
        "quarantined",
    }
    return summary


@pytest.mark.timeout(900)
def test_sigkill_at_random_points_never_exposes_partial_files(tmp_path: Path) -> None:
    kills = int(os.environ.get("NEUROCYTE_CRASH_KILLS", "2"))
    summary = _crash_campaign(tmp_path, kills)
    assert summary["rows_lost"] == 0 and summary["rows_duplicated"] == 0


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_sigkill_campaign_many_kills(tmp_path: Path) -> None:
    kills = int(os.environ.get("NEUROCYTE_CRASH_KILLS_SLOW", "25"))
    summary = _crash_campaign(tmp_path, kills)
    assert summary["kills"] >= kills // 2  # most runs were really interrupted
