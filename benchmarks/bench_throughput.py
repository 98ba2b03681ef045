"""End-to-end throughput of ``neurocyte_ingest`` through the real Airflow scheduler.

1000 small patch-clamp files (3 sweeps x 0.5 s at 10 kHz, ABF1; a few cells
simulated once with ``transforms.demo.neuron.simulate``, every file with its own
recording noise so every content hash differs) land in a temporary local
landing zone; one run of the DAG (triggered with the CLI, ``settle_s=0``)
senses, plans batches, extracts, QC-gates, commits to Delta and publishes the
catalog, executed by the scheduler's **LocalExecutor** on a **PostgreSQL**
metadata DB (started here as in ``tests/airflow_cluster.py``; Debian's
``postgresql`` from ``scripts/ci_services.sh``). Without PostgreSQL or a PG
driver, it falls back to SQLite with ``parallelism = 1`` (what Airflow allows on
SQLite, the old SequentialExecutor) and says so.

Printed: files per minute (run wall time, from the run's start to its end),
the sum of the task instances' durations, and the scheduler's overhead share
``1 - sum(task durations) / (wall x parallelism)``: the part of the run's slot
time in which no task body ran (scheduling, queueing, task-process startup).

Usage: ``uv run python benchmarks/bench_throughput.py [--files 1000] [--batch 50]``.
Everything is created in a temp dir and deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import airflow_cluster as ac

DAG_ID = "neurocyte_ingest"
RATE_HZ = 10_000.0
SWEEP_S = 0.5
N_SWEEPS = 3
N_CELLS = 8
TARGET_S = 300.0


def make_files(landing: Path, n_files: int, seed: int = 11) -> float:
    """Write ``n_files`` ABF1 files under ``landing/bench/<cond>/<tp>/``; seconds taken."""
    import numpy as np

    from transforms.formats.abf1_writer import StepEpoch, command_waveform, write_abf1
    from transforms.synth.demo import _cell_params
    from transforms.synth.neuron import simulate

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    n = int(SWEEP_S * RATE_HZ)
    pre, stim = 1000, 3000  # 100 ms baseline, 300 ms step
    epochs = [
        StepEpoch(pre, 0.0),
        StepEpoch(stim, -50.0, 150.0),  # -50, +100, +250 pA
        StepEpoch(n - n // 64 - pre - stim, 0.0),
    ]
    command = command_waveform(n, N_SWEEPS, epochs)
    conditions = [("WT", "P14"), ("KO", "P14"), ("WT", "P21"), ("KO", "P21")]
    cells = [_cell_params(rng, conditions[i % 4][0]) for i in range(N_CELLS)]
    traces = simulate(
        np.tile(command, (N_CELLS, 1)),
        sampling_rate_hz=RATE_HZ,
        cells=[c for c in cells for _ in range(N_SWEEPS)],
        seed=seed,
        substeps=4,  # 25 us steps: spikes as accurate as the demo's 20 kHz
    ).reshape(N_CELLS, N_SWEEPS, n)
    start = datetime(2026, 3, 2, 9, 0, 0)
    for i in range(n_files):
        k = i % N_CELLS
        cond, tp = conditions[k % 4]
        path = landing / "bench" / cond / tp / f"cell{k}_{i:04d}.abf"
        path.parent.mkdir(parents=True, exist_ok=True)
        noisy = traces[k] + rng.normal(0.0, 0.05, traces[k].shape)  # unique bytes
        write_abf1(
            path, noisy, sampling_rate_hz=RATE_HZ, epochs=epochs,
            recorded_at=start + timedelta(seconds=i),
        )  # fmt: skip
    return time.perf_counter() - t0


def _seconds(a: datetime | str | None, b: datetime | str | None) -> float:
    """``b - a`` in seconds (SQLite hands raw-SQL timestamps back as text)."""
    if not a or not b:
        return 0.0
    a, b = (datetime.fromisoformat(x) if isinstance(x, str) else x for x in (a, b))
    return (b - a).total_seconds()


def run(n_files: int, batch: int, keep: bool) -> int:
    base = Path(tempfile.mkdtemp(prefix="neurocyte-bench-"))
    try:
        landing, lake = base / "landing", base / "lake"
        gen_s = make_files(landing, n_files)
        print(f"generated {n_files} files in {gen_s:.1f} s ({landing})")
        with contextlib.ExitStack() as stack:
            infra = stack.enter_context(ac.ServiceGroup())
            drivers = ac.pg_driver()
            if ac.postgres_bindir() is not None and drivers is not None:
                pg = stack.enter_context(ac.postgres_server(infra))
                db_url, parallelism = pg.url(drivers[0]), 2
                extra_env = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": pg.url(drivers[1])}
                mode = "LocalExecutor (parallelism 2) on PostgreSQL"
            else:
                why = "no PostgreSQL" if drivers else "no PostgreSQL driver (psycopg) installed"
                db_url, parallelism, extra_env = f"sqlite:///{base}/airflow.db", 1, {}
                mode = f"LocalExecutor (parallelism 1) on SQLite: {why}; SequentialExecutor-like"
            print(f"executor: {mode}")
            af = ac.make_airflow_home(
                base / "airflow",
                executor="LocalExecutor",
                db_url=db_url,
                parallelism=parallelism,
                extra_cfg={"core": {"max_active_tasks_per_dag": str(parallelism)}},
                secret_env=extra_env,
                env={"NEUROCYTE_LANDING": str(landing), "NEUROCYTE_LAKE": str(lake)},
            )
            t0 = time.monotonic()
            af.airflow("db", "migrate", timeout=400)
            print(f"airflow db migrate: {time.monotonic() - t0:.0f} s")
            db = ac.MetaDB(db_url)
            stack.callback(db.close)
            cluster = stack.enter_context(ac.ServiceGroup())
            api = af.start(cluster, "api-server", "api-server")
            af.start(cluster, "scheduler", "scheduler")
            af.start(cluster, "dag-processor", "dag-processor")
            ac.wait_api_ready(af, api)
            ac.wait_dag_parsed(db, DAG_ID, cluster)
            af.airflow("dags", "unpause", DAG_ID)
            run_id = "bench_throughput"
            conf = {"settle_s": 0, "max_wait_s": 0, "batch_size": batch}
            t_trigger = time.monotonic()
            ac.trigger(af, DAG_ID, run_id, conf)
            try:
                state = ac.wait_run_finished(db, DAG_ID, run_id, cluster, timeout=1800)
            except Exception:
                for s in cluster.services:
                    print(f"--- {s.name}\n{s.tail(3000)}")
                raise
            t_end = time.monotonic()
            dr = db.rows(
                "SELECT start_date, end_date, queued_at FROM dag_run "
                "WHERE dag_id = :d AND run_id = :r",
                d=DAG_ID,
                r=run_id,
            )[0]
            tis = ac.task_instances(db, DAG_ID, run_id)
        # services stopped: read the lake's outcome
        os.environ["NEUROCYTE_LAKE"] = str(lake)
        from transforms import spec
        from transforms.lake import delta as lakeio

        log = lakeio.read_table(spec.INGEST_LOG, lake=str(lake))
        statuses: dict[str, int] = {}
        for s in log["status"].to_pylist() if log is not None else []:
            statuses[s] = statuses.get(s, 0) + 1

        wall = _seconds(dr["start_date"], dr["end_date"])
        busy = sum(float(t["duration"] or 0) for t in tis)
        ran = [t for t in tis if t["duration"]]
        by_task: dict[str, list[float]] = {}
        for t in ran:
            by_task.setdefault(t["task_id"], []).append(float(t["duration"]))
        overhead = 1.0 - busy / (wall * parallelism) if wall else float("nan")
        processed = sum(statuses.values())
        print(f"run state: {state}; outcomes in ingest_log: {statuses}")
        print(
            f"task instances: {len(tis)} ({len(ran)} ran); "
            + ", ".join(
                f"{k} {len(v)}x mean {sum(v) / len(v):.1f} s" for k, v in sorted(by_task.items())
            )
        )
        print(
            f"run wall time {wall:.1f} s (trigger -> finished seen {t_end - t_trigger:.1f} s); "
            f"sum of task durations {busy:.1f} s over {parallelism} slot(s)"
        )
        print(f"throughput: {processed / wall * 60:.0f} files/min ({processed} files, {mode})")
        print(
            f"scheduler overhead share: {overhead:.0%} of slot time "
            f"(busy/wall = {busy / wall:.2f} with {parallelism} slot(s))"
        )
        ok = state == "success" and processed == n_files
        verdict = "within" if wall <= TARGET_S else "OVER"
        print(f"target <= {TARGET_S:.0f} s for the run: {verdict}; {'OK' if ok else 'FAILED'}")
        return 0 if ok else 1
    finally:
        if keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100, help="files per mapped task")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    return run(args.files, args.batch, args.keep)


if __name__ == "__main__":
    sys.exit(main())
