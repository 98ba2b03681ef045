"""Kill campaign with a concurrent reader: >= 50 SIGKILLs, publishes among them.

Writers (``crash_worker.py``) ingest a small landing zone into one lake, half the
time as forced re-ingests (each commit then replaces the files and prunes the old
rows), and are SIGKILLed at random points of three kinds:

* ``delay``: a random time into the run (staging, the gate, commits, publish);
* ``delta_log``: right after a random number of new ``_delta_log`` entries (between
  the Delta commits of the protocol);
* ``publish``: a worker that only rebuilds the catalog, killed while it writes the
  new catalog file (its temporary file exists) or a random moment later.

Throughout, a separate reader process (``catalog_reader.py``) opens the published
catalog read-only in a loop and checks that every file ``published`` names is whole
and alone in every data view. The next worker is started (to READY) while the
current one runs, so the campaign fits in minutes on 2 cores. At the end an
uninterrupted run must converge to the checksum of a clean run on a fresh lake.

``NEUROCYTE_KILL_CAMPAIGN_KILLS`` (default 50) and ``NEUROCYTE_CRASH_SEED`` control
the run; ``-s`` prints ``KILL-CAMPAIGN {...}``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ABF_DIR, REPO_ROOT
from tests.reliability import (
    check_published,
    check_tables_readable,
    delta_log_entries,
    published_checksum,
    spawn_worker,
    worker_env,
)
from transforms import spec
from transforms.lake.catalog import publish

GOOD = ["File_axon_7.abf", "File_axon_5.abf"]
READER = Path(__file__).with_name("catalog_reader.py")


def _landing(root: Path) -> Path:
    folder = root / "labA" / "WT" / "P14"
    folder.mkdir(parents=True)
    for name in GOOD:
        shutil.copyfile(ABF_DIR / name, folder / name)
    (folder / "garbage.abf").write_bytes(random.Random(5).randbytes(3000))
    return root


def _read_until(proc, word: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == word:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode} before {word}")
    proc.kill()
    raise AssertionError(f"worker not {word} in time")


def _start(lake: Path, landing: Path, *, kind: str, force: bool, go: Path, log: Path):
    args = [str(lake)]
    if kind == "publish":
        args += ["--publish-only"]
    else:
        args += [str(landing), "--landing", str(landing), "--batch-size", "2"]
        args += ["--force"] if force else []
    proc = spawn_worker(*args, "--go-file", str(go), log=log)
    return proc


def _wait(cond, proc, deadline: float) -> None:
    while not cond() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)


def _kill(
    proc,
    go: Path,
    lake: Path,
    rng: random.Random,
    *,
    kind: str,
    run_s: float,
    publish_s: float,
    commits: int,
) -> dict:
    _read_until(proc, "READY")
    base = delta_log_entries(lake)
    go.touch()
    _read_until(proc, "GO")
    t0 = time.monotonic()
    if kind == "delay":
        target = rng.uniform(0.0, run_s)
        _wait(lambda: time.monotonic() - t0 >= target, proc, t0 + target)
        point = f"{target:.2f}s"
    elif kind == "delta_log":
        n = rng.randint(1, max(1, commits))
        _wait(lambda: delta_log_entries(lake) >= base + n, proc, t0 + 4 * run_s + 30)
        point = f"after {n} new _delta_log entries"
    else:
        tmp = f".{spec.CATALOG_FILE}.{proc.pid}.tmp"
        if rng.random() < 0.5:
            _wait(lambda: (lake / tmp).exists(), proc, t0 + 4 * publish_s + 30)
            point = "catalog temp file written"
        else:
            target = rng.uniform(0.0, publish_s)
            _wait(lambda: time.monotonic() - t0 >= target, proc, t0 + target)
            point = f"publish +{target:.2f}s"
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    return {"kind": kind, "point": point, "killed": killed}


def _run_to_end(lake: Path, landing: Path, *, log: Path, publish_only: bool = False) -> float:
    go = lake.parent / f"go-{time.monotonic_ns()}"
    proc = _start(
        lake, landing, kind="publish" if publish_only else "ingest", force=False, go=go, log=log
    )
    _read_until(proc, "READY")
    go.touch()
    t0 = time.monotonic()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "DONE" in out, log.read_text()[-3000:]
    return time.monotonic() - t0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kill_campaign_with_publishes_and_a_concurrent_reader(tmp_path: Path) -> None:
    kills_wanted = int(os.environ.get("NEUROCYTE_KILL_CAMPAIGN_KILLS", "50"))
    seed = int(os.environ.get("NEUROCYTE_CRASH_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    started = time.monotonic()
    landing = _landing(tmp_path / "landing")
    log = tmp_path / "worker.log"

    clean = tmp_path / "clean" / "lake"
    clean.parent.mkdir()
    run_s = _run_to_end(clean, landing, log=log)
    publish_s = _run_to_end(clean, landing, log=log, publish_only=True)
    commits = delta_log_entries(clean)
    want, want_counts = published_checksum(clean)

    lake = tmp_path / "lake"
    _run_to_end(lake, landing, log=log)  # the reader has a catalog to read from the start
    stop = tmp_path / "stop-reader"
    reader = subprocess.Popen(
        [sys.executable, str(READER), str(lake), str(stop)],
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "reader.log", "ab"),  # noqa: SIM115 - the child owns it
        env=worker_env(),
        cwd=str(REPO_ROOT),
        text=True,
    )
    _read_until(reader, "READY")

    events: list[dict] = []
    kinds = ["delay", "delta_log", "publish"]

    def plan():
        kind = rng.choice(kinds)
        go = tmp_path / f"go-{len(events)}-{rng.random()}"
        force = rng.random() < 0.5
        return kind, go, _start(lake, landing, kind=kind, force=force, go=go, log=log)

    nxt = plan()
    attempts = 0
    while sum(e["killed"] for e in events) < kills_wanted and attempts < 3 * kills_wanted:
        attempts += 1
        kind, go, proc = nxt
        nxt = plan()  # warms up (imports, GX) while this one runs
        event = _kill(
            proc, go, lake, rng, kind=kind, run_s=run_s, publish_s=publish_s, commits=commits
        )
        check_tables_readable(lake)
        events.append(event)
        print(f"kill {len(events)} seed={seed}: {event}", flush=True)
    nxt[2].kill()
    nxt[2].wait(timeout=60)
    nxt[2].stdout.close()

    _run_to_end(lake, landing, log=log)  # uninterrupted: converges
    stop.touch()
    out, _ = reader.communicate(timeout=300)
    seen = json.loads(next(x[7:] for x in out.splitlines() if x.startswith("READER ")))
    publish(lake=str(lake))
    final = check_published(lake)
    got, got_counts = published_checksum(lake)
    summary = {
        "seed": seed,
        "runs": len(events),
        "kills": sum(e["killed"] for e in events),
        "kills_by_kind": {k: sum(e["killed"] and e["kind"] == k for e in events) for k in kinds},
        "reader_checks": seen["checks"],
        "reader_checks_with_problems": seen["checks_with_problems"],
        "reader_errors": seen["errors"],
        "files_published": final.files,
        "rows_checked": final.rows,
        "rows_lost": final.rows_lost,
        "rows_duplicated": final.rows_duplicated,
        "converged": got == want,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    print("KILL-CAMPAIGN " + json.dumps(summary), flush=True)
    assert summary["kills"] >= kills_wanted, summary
    assert summary["kills_by_kind"]["publish"] > 0, summary
    assert seen["checks"] > 0 and seen["checks_with_problems"] == 0, seen
    assert not seen["errors"], seen
    assert not final.problems, final.problems
    assert got_counts == want_counts and got == want, f"did not converge (seed={seed})"
