"""Eight writer processes append and replace files in one lake at the same moment.

Each writer ingests a file of its own (an append) and force re-ingests one
file shared by all (a replacement: append + commit point + prune of the other
attempts), so every Delta table sees eight concurrent commits of each kind.
Afterwards: no commit is lost (every writer's own file is published), no
writer failed, and the published content holds every file exactly once,
whole, under one ingest_id.

The same runs against an ``s3://`` lake on the local S3 server
(``tests/s3server.py``, moto in server mode).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import ABF_DIR
from tests.reliability import (
    check_published,
    check_tables_readable,
    lake_published,
    small_abf,
    spawn_worker,
    worker_env,
)
from transforms.lake.catalog import publish
from transforms.lake.storage import sha256 as sha256_file

#: The full run (``-m slow``) uses 8 writers; the default suite 4 (2 shared cores).
WRITERS = 8
DEFAULT_WRITERS = 4
SHARED = "File_axon_7.abf"


def _writers(lake: str, files: list[Path], shared: Path, *, env, tmp: Path) -> list[list[dict]]:
    """Start one writer per file, release them together, return their outcomes."""
    go, log = tmp / "go", tmp / "writers.log"
    procs = [
        spawn_worker(
            lake,
            str(own),
            str(shared),
            "--force",
            "--no-publish",
            "--batch-size",
            "2",
            "--go-file",
            str(go),
            *("--lab", "labC", "--condition", "WT", "--timepoint", "P7"),
            env=env,
            log=log,
        )
        for own in files
    ]
    for p in procs:  # every writer imported and warmed up ...
        line = p.stdout.readline()
        assert line.strip() == "READY", log.read_text()[-3000:]
    go.touch()  # ... then all start at once
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0 and "DONE" in out, log.read_text()[-3000:]
        results.append([json.loads(x[8:]) for x in out.splitlines() if x.startswith("OUTCOME ")])
    return results


def _inputs(tmp: Path, n: int) -> tuple[list[Path], Path]:
    files = [small_abf(tmp / "in" / f"writer{i}.abf", seed=100 + i) for i in range(n)]
    shared = tmp / "in" / SHARED
    shutil.copyfile(ABF_DIR / SHARED, shared)
    return files, shared


def _assert_no_lost_commit(results, files: list[Path], shared: Path) -> dict:
    own_ids = {sha256_file(f) for f in files}
    statuses = [o["status"] for r in results for o in r]
    # On a local lake the shared file's lease lets one writer at a time replace it:
    # the others report it as a duplicate being ingested, never as failed.
    leased = [o for r in results for o in r if "being ingested by another run" in o["reason"]]
    failed = [
        o["reason"] for r in results for o in r if o["status"] != "published" and o not in leased
    ]
    published_own = {o["file_id"] for r in results for o in r if o["status"] == "published"}
    summary = {
        "writers": len(results),
        "attempts": len(statuses),
        "published_attempts": statuses.count("published"),
        "failed_attempts": len(failed),
        "left_to_the_lease_holder": len(leased),
    }
    print("CONCURRENCY-ATTEMPTS " + json.dumps(summary), flush=True)
    assert not failed, failed  # a conflict must be retried, never turn into a failure
    assert own_ids <= published_own
    assert sha256_file(shared) in published_own
    return summary


def _local(tmp_path: Path, n: int) -> None:
    files, shared = _inputs(tmp_path, n)
    lake = tmp_path / "lake"
    results = _writers(str(lake), files, shared, env=worker_env(), tmp=tmp_path)
    summary = _assert_no_lost_commit(results, files, shared)
    check_tables_readable(lake)
    publish(lake=str(lake))
    _report_and_check("CONCURRENCY-LOCAL", summary, check_published(lake), n)


def _report_and_check(label: str, summary: dict, result, n: int) -> None:
    """Print the run's figures, then demand every file whole: n distinct files plus the
    shared one, no lost, partial or duplicated file (the replace race included)."""
    summary.update(
        files=result.files,
        rows=result.rows,
        rows_lost=result.rows_lost,
        rows_duplicated=result.rows_duplicated,
    )
    print(f"{label} " + json.dumps(summary), flush=True)
    assert result.files == n + 1
    assert not result.problems, result.problems


def _s3(tmp_path: Path, n: int) -> None:
    from tests.s3server import moto_server

    files, shared = _inputs(tmp_path, n)
    with moto_server(log=tmp_path / "moto.log") as s3:
        s3.create_bucket("lake-concurrency")
        lake = "s3://lake-concurrency"
        env = worker_env(**s3.env())
        results = _writers(lake, files, shared, env=env, tmp=tmp_path)
        summary = _assert_no_lost_commit(results, files, shared)
        mp = pytest.MonkeyPatch()
        try:
            for k, v in s3.env().items():
                mp.setenv(k, v)
            result = lake_published(lake)
        finally:
            mp.undo()
    _report_and_check("CONCURRENCY-S3", summary, result, n)


@pytest.mark.timeout(900)
def test_concurrent_writers_append_and_replace_on_a_local_lake(tmp_path: Path) -> None:
    _local(tmp_path, DEFAULT_WRITERS)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_eight_writers_append_and_replace_on_a_local_lake(tmp_path: Path) -> None:
    _local(tmp_path, WRITERS)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_eight_writers_append_and_replace_on_an_s3_lake(tmp_path: Path) -> None:
    _s3(tmp_path, WRITERS)


def test_replace_race_interleaved_keeps_the_latest_published_attempt(tmp_path: Path) -> None:
    """The interleaving the 8-writer run hits, step by step with the real lake functions.

    Two writers replace one file. Each runs commit_batch's steps (append to
    every table, ingest_log commit point, prune superseded) but A's prune
    comes after B's commit point, which concurrent writers do at random.
    """
    from transforms.lake import delta as lakeio
    from transforms.lake import storage
    from transforms.pipeline import record, stage_file

    src = tmp_path / SHARED
    shutil.copyfile(ABF_DIR / SHARED, src)
    lake = str(tmp_path / "lake")
    kw = {"lake": lake, "lab": "labC", "condition": "WT", "timepoint": "P7", "force": True}
    # no lease: the commit protocol alone must hold (an s3:// lake has no leases)
    a, b = stage_file(src, **kw, lease=False), stage_file(src, **kw, lease=False)
    assert a.status == b.status == "staged", (a.reason, b.reason)

    def append_and_commit(o) -> None:  # commit_batch steps 1-2 for one writer
        for name in o.rows:
            rows = storage.read_parquet(storage.join(o.staging, f"{name}.parquet"))
            lakeio.append_rows(name, rows, lake=lake)
        o.status = "published"
        record(o, lake=lake)

    def prune(o) -> None:  # commit_batch step 3
        for name in o.rows:
            lakeio.prune_superseded_many(name, keep={o.file_id: o.ingest_id}, lake=lake)

    append_and_commit(a)
    append_and_commit(b)  # B's commit point is the later one: B is the published attempt
    prune(a)
    prune(b)
    publish(lake=lake)
    result = check_published(tmp_path / "lake")
    assert result.files == 1
    assert not result.problems, result.problems
