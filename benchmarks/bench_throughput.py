"""End-to-end throughput of ``neurocyte_ingest`` through the real Airflow scheduler.

N distinct files (default 1000) land in a temporary local landing zone; one run of
the DAG (triggered with the CLI, ``settle_s=0``) senses, plans batches, extracts,
QC-gates, commits to Delta and publishes the catalog, executed by the scheduler's
**LocalExecutor** on a **PostgreSQL** metadata DB (started here as in
``tests/airflow_cluster.py``; Debian's ``postgresql`` from ``scripts/ci_services.sh``).
Without PostgreSQL or a PG driver, it falls back to SQLite with ``parallelism = 1``
(what Airflow allows on SQLite, the old SequentialExecutor) and says so.

The files (``--source``):

* ``corpus`` (default): the shared ABF corpus in turn, each file a variant whose every
  sample moved by one least-significant bit at random (``bench_e2e.distinct_icephys``):
  real-like recordings of every kind the corpus holds (including the ones that fail or
  are quarantined), each distinct, so nothing is cached across files.
* ``synthetic``: small simulated files (3 sweeps x 0.5 s at 10 kHz, ABF1, each with its
  own recording noise).

Printed: the time from the trigger (the run's ``queued_at``) to ``publish`` done, in
files per minute; where the time goes (per task: count, mean and summed duration, and
the queue wait of its task instances; the DAG file's parse time in a fresh process;
the scheduler's overhead share ``1 - sum(task durations) / (wall x parallelism)``);
the machine's load before, during and after. Baselines measured in the same run on the
same files: ``neurocyte ingest`` of all of them in one cold process (and of one file,
for the fixed cost), and the ideal DAG wall time from those (the fixed cost once, plus
the CLI's marginal cost per file spread over the executor's slots).

Target (issue 17): 1,000 distinct real-like ABF files in <= 3 min on 2 cores.

Usage: ``uv run python benchmarks/bench_throughput.py [--files 1000] [--batch 25]
[--source corpus|synthetic] [--no-baseline]``; ``--files 20`` is a quick smoke run.
Everything is created in a temp dir and deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_e2e

from tests import airflow_cluster as ac

DAG_ID = "neurocyte_ingest"
RATE_HZ = 10_000.0
SWEEP_S = 0.5
N_SWEEPS = 3
N_CELLS = 8
TARGET_S = 180.0  # issue 17: 1,000 distinct real-like files in <= 3 min


def make_corpus_files(landing: Path, n_files: int, *, offset: int = 20_000) -> float:
    """``n_files`` distinct corpus variants under ``landing/bench/WT/DIV14/``; seconds taken."""
    t0 = time.perf_counter()
    bench_e2e.distinct_icephys(landing / "bench" / "WT" / "DIV14", n_files, offset=offset)
    return time.perf_counter() - t0


def make_files(landing: Path, n_files: int, seed: int = 11) -> float:
    """``n_files`` small simulated ABF1 files under ``landing/bench/<cond>/<tp>/``; seconds."""
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


def sessions_cpu_s(sessions: set[int]) -> float:
    """CPU seconds (user + system) of every process in these sessions, and of the
    children they reaped (``/proc/<pid>/stat`` fields 14-17): the Airflow services, the
    task processes their workers forked and the metadata DB."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited meanwhile
            continue
        fields = text[text.rindex(")") + 2 :].split()  # from field 3 (state) on
        if int(fields[3]) in sessions:  # field 6: session id
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / tick


def children_cpu_s() -> float:
    """CPU seconds of this process's terminated, reaped children (and theirs)."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def parse_time_s(af: ac.AirflowHome) -> tuple[float, float]:
    """(import of ``airflow.sdk``, parse of the ingest DAG file) in a fresh process.

    Every task process of the DAG pays both before its body runs.
    """
    dag_file = str(REPO / "dags" / f"{DAG_ID}.py")
    code = (
        "import time, runpy; t0 = time.perf_counter(); import airflow.sdk; "
        f"t1 = time.perf_counter(); runpy.run_path({dag_file!r}); t2 = time.perf_counter(); "
        "print(t1 - t0, t2 - t1)"
    )
    env = {**af.env, "PYTHONPATH": str(REPO / "dags")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    sdk_s, dag_s = out.stdout.split()[-2:]
    return float(sdk_s), float(dag_s)


def cli_baseline(landing: Path, base: Path, n_files: int) -> tuple[float, float, float, float]:
    """The same files through ``neurocyte ingest`` in one cold process, and one file alone.

    Returns (wall of all files, wall of one file = the fixed cost, marginal per file,
    CPU of all files).
    """
    files = sorted(landing.rglob("*.abf"))
    one = bench_e2e.run_process(
        [bench_e2e.NEUROCYTE, "ingest", str(files[0]), "--landing", str(landing),
         "--lake", str(base / "lake_cli1")]
    )  # fmt: skip
    every = bench_e2e.run_process(
        [bench_e2e.NEUROCYTE, "ingest", str(landing), "--landing", str(landing),
         "--lake", str(base / "lake_cli")]
    )  # fmt: skip
    marginal = (every.wall_s - one.wall_s) / max(n_files - 1, 1)
    print(
        f"baseline, same files, same run: `neurocyte ingest` of all {n_files} in one cold "
        f"process {every.wall_s:.1f} s wall, {every.cpu_s:.1f} s CPU "
        f"({bench_e2e.statuses(every.output)}; load {every.load_1min:.1f}) = "
        f"{n_files / every.wall_s * 60:.0f} files/min; of one file {one.wall_s:.1f} s wall, "
        f"{one.cpu_s:.1f} s CPU (the fixed cost); marginal {1e3 * marginal:.0f} ms/file wall"
    )
    return every.wall_s, one.wall_s, marginal, every.cpu_s


def run(
    n_files: int,
    batch: int | None,
    *,
    source: str = "corpus",
    baseline: bool = True,
    keep: bool = False,
) -> int:
    base = Path(tempfile.mkdtemp(prefix="neurocyte-bench-"))
    loads = [os.getloadavg()[0]]
    how = f"batches of {batch}" if batch else "the DAG's default batches"
    print(f"bench_throughput: {n_files} {source} files, {how}; {bench_e2e.load()}")
    try:
        landing, lake = base / "landing", base / "lake"
        make = make_corpus_files if source == "corpus" else make_files
        gen_s = make(landing, n_files)
        size_mb = sum(f.stat().st_size for f in landing.rglob("*.abf")) / 1e6
        print(f"generated {n_files} distinct files ({size_mb:.0f} MB) in {gen_s:.1f} s ({landing})")
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
            life_before = children_cpu_s()
            api = af.start(cluster, "api-server", "api-server")
            af.start(cluster, "scheduler", "scheduler")
            af.start(cluster, "dag-processor", "dag-processor")
            ac.wait_api_ready(af, api)
            ac.wait_dag_parsed(db, DAG_ID, cluster)
            af.airflow("dags", "unpause", DAG_ID)
            sdk_s, dag_s = parse_time_s(af)
            run_id = "bench_throughput"
            conf = {"settle_s": 0, "max_wait_s": 0, **({"batch_size": batch} if batch else {})}
            loads.append(os.getloadavg()[0])
            sessions = {svc.proc.pid for g in (infra, cluster) for svc in g.services}
            cpu_before = sessions_cpu_s(sessions)
            t_trigger = time.monotonic()
            ac.trigger(af, DAG_ID, run_id, conf)
            try:
                state = ac.wait_run_finished(db, DAG_ID, run_id, cluster, timeout=3600)
            except Exception:
                for s in cluster.services:
                    print(f"--- {s.name}\n{s.tail(3000)}")
                raise
            t_end = time.monotonic()
            run_cpu = sessions_cpu_s(sessions) - cpu_before
            loads.append(os.getloadavg()[0])
            dr = db.rows(
                "SELECT start_date, end_date, queued_at FROM dag_run "
                "WHERE dag_id = :d AND run_id = :r",
                d=DAG_ID,
                r=run_id,
            )[0]
            tis = db.rows(
                "SELECT task_id, map_index, state, start_date, end_date, queued_dttm, duration "
                "FROM task_instance WHERE dag_id = :d AND run_id = :r",
                d=DAG_ID,
                r=run_id,
            )
        # services stopped (and reaped): their whole lives' CPU, an upper bound of the run's
        life_cpu = children_cpu_s() - life_before
        # read the lake's outcome
        from transforms import spec
        from transforms.lake import delta as lakeio

        log = lakeio.read_table(spec.INGEST_LOG, lake=str(lake))
        statuses: dict[str, int] = {}
        for s in log["status"].to_pylist() if log is not None else []:
            statuses[s] = statuses.get(s, 0) + 1

        wall = _seconds(dr["start_date"], dr["end_date"])
        publish_end = max(
            (t["end_date"] for t in tis if t["task_id"] == "publish" and t["end_date"]),
            default=dr["end_date"],
        )
        to_published = _seconds(dr["queued_at"], publish_end)
        busy = sum(float(t["duration"] or 0) for t in tis)
        ran = [t for t in tis if t["duration"]]
        by_task: dict[str, list[dict]] = {}
        for t in ran:
            by_task.setdefault(t["task_id"], []).append(t)
        overhead = 1.0 - busy / (wall * parallelism) if wall else float("nan")
        processed = sum(statuses.values())
        print(f"run state: {state}; outcomes in ingest_log: {statuses}")
        print(
            f"parse, in a fresh process (every task process pays it): import airflow.sdk "
            f"{sdk_s:.2f} s, then the DAG file {dag_s:.2f} s"
        )
        print(f"task instances: {len(tis)} ({len(ran)} ran)")
        for task_id, rows in sorted(
            by_task.items(),
            key=lambda kv: min(_seconds(dr["start_date"], r["start_date"]) for r in kv[1]),
        ):
            durations = [float(r["duration"]) for r in rows]
            waits = [_seconds(r["queued_dttm"], r["start_date"]) for r in rows if r["queued_dttm"]]
            print(
                f"  {task_id:<16} {len(rows):>4}x  mean {statistics.mean(durations):6.1f} s  "
                f"sum {sum(durations):7.1f} s  queued->running mean "
                f"{statistics.mean(waits) if waits else float('nan'):5.1f} s"
            )
        print(
            f"run wall time {wall:.1f} s; trigger (queued_at) -> publish done {to_published:.1f} s "
            f"(CLI trigger -> finished seen {t_end - t_trigger:.1f} s); sum of task durations "
            f"{busy:.1f} s over {parallelism} slot(s)"
        )
        rate = processed / to_published * 60 if to_published else float("nan")
        print(f"throughput: {rate:.0f} files/min ({processed} files, {mode})")
        print(
            f"CPU time of the run (scheduler, executor, task processes, api-server, "
            f"dag-processor, metadata DB; trigger -> finished seen): {run_cpu:.1f} s, "
            f"{1e3 * run_cpu / max(processed, 1):.0f} ms per file; upper bound (every Airflow "
            f"service's and the DB's whole life, start-up and the CLI calls included) "
            f"{life_cpu:.1f} s"
        )
        print(
            f"scheduler overhead share: {overhead:.0%} of slot time "
            f"(busy/wall = {busy / wall:.2f} with {parallelism} slot(s))"
        )
        print(
            f"load (1 min) before generating {loads[0]:.1f}, at trigger {loads[1]:.1f}, "
            f"at the end {loads[2]:.1f} ({os.cpu_count()} cores)"
        )
        if baseline:
            cli_wall, fixed, marginal, cli_cpu = cli_baseline(landing, base, n_files)
            ideal = fixed + marginal * n_files / parallelism
            print(
                f"DAG vs one CLI process: {to_published / cli_wall:.2f}x the CLI's wall time, "
                f"{run_cpu / cli_cpu:.2f}x its CPU time; "
                f"ideal DAG (fixed {fixed:.1f} s once + {1e3 * marginal:.0f} ms/file over "
                f"{parallelism} slots) {ideal:.0f} s: the DAG takes {to_published / ideal:.2f}x it"
            )
        ok = state == "success" and processed == n_files
        verdict = "within" if to_published <= TARGET_S else "OVER"
        print(
            f"target <= {TARGET_S:.0f} s for {n_files} files (trigger -> published): {verdict}; "
            f"{'OK' if ok else 'FAILED'}; {bench_e2e.load()}"
        )
        return 0 if ok else 1
    finally:
        if keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument(
        "--batch", type=int, help="at most this many files per mapped task (default: the DAG's)"
    )
    parser.add_argument("--source", choices=("corpus", "synthetic"), default="corpus")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the CLI baseline on the same files"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    return run(
        args.files, args.batch, source=args.source, baseline=not args.no_baseline, keep=args.keep
    )


if __name__ == "__main__":
    sys.exit(main())
