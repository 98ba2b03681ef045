"""neurocyte_ingest on a real distributed Airflow: CeleryExecutor, Postgres, Redis, S3.

Every component is a real server process on 127.0.0.1, started here and stopped
here (also on failure): PostgreSQL (metadata DB and Celery result backend),
Redis (Celery broker), moto's S3 server (landing zone and lake buckets), and
Airflow's scheduler, dag-processor, triggerer (the deferrable S3 sensor waits
there), Celery worker and api-server (the Execution API the worker's tasks
talk to). Real ABF files are uploaded to the landing bucket, the DAG is
unpaused and triggered with the CLI, and the test checks that:

* the run succeeds: the deferrable S3 sensor fires in the triggerer, the new
  files are mapped over batches (two files per batch), nothing fails;
* every task that ran was executed by the Celery worker: its
  ``external_executor_id`` is a Celery task id that the result backend
  (``celery_taskmeta`` in Postgres) records as SUCCESS, and the worker's log
  received it;
* the Delta tables in the lake bucket hold exactly the files' rows, published
  in ``ingest_log`` (the bad-units file quarantined, its rows kept out).

The DuckDB catalog of an S3 lake needs DuckDB's httpfs extension, which cannot
be downloaded offline, so ``publish`` may skip; the Delta tables are read with
deltalake directly. Services come from ``scripts/ci_services.sh``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests import airflow_cluster as ac
from tests.conftest import ABF_DIR
from tests.s3server import TEST_KEY_ID, TEST_SECRET, moto_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DAG_ID = "neurocyte_ingest"
CONN_ID = "neurocyte_s3"
LANDING_BUCKET = "neurocyte-landing"
LAKE_BUCKET = "neurocyte-lake"
#: file -> (lab, condition, timepoint, expected status, icephys_sweeps rows)
FILES = {
    "171116sh_0018.abf": ("labA", "WT", "P14", "published", 17),
    "190619B_0003.abf": ("labA", "KO", "P21", "published", 10),
    "17o05024_vc_steps.abf": ("labB", "WT", "P14", "published", 7),
    "opto_aps_bad_units.abf": ("labB", "KO", "P21", "quarantined", 0),
}
RUN_TIMEOUT_S = 480


def _preflight() -> tuple[str, str]:
    missing = ac.missing_services()
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run scripts/ci_services.sh first")
    driver = ac.pg_driver()
    if driver is None:
        pytest.fail(
            "no PostgreSQL driver for Airflow's sync and async metadata-DB engines: "
            "add psycopg[binary] (v3) to the project's dependencies"
        )
    import importlib
    import importlib.util

    try:  # the locked celery must match the provider (celery 5.7 broke provider 3.26)
        importlib.import_module("airflow.providers.celery.executors.celery_executor_utils")
    except ImportError as exc:
        pytest.fail(f"the Celery provider cannot load with this celery: {exc}")
    if importlib.util.find_spec("aiobotocore") is None:
        pytest.fail(
            "the deferrable S3 sensor's trigger needs aiobotocore: add "
            "apache-airflow-providers-amazon[aiobotocore] to the project's dependencies"
        )
    return driver


def _diagnostics(services: list[ac.Service], home: Path) -> str:
    parts = [f"--- {s.name} (log {s.log}) ---\n{s.tail(2500)}" for s in services]
    for log in sorted((home / "logs").rglob("*.log"))[-6:]:
        parts.append(f"--- task log {log.relative_to(home)} ---\n{log.read_text()[-1500:]}")
    return "\n".join(parts)


def test_ingest_dag_on_celery_postgres_redis_s3(tmp_path: Path, monkeypatch) -> None:
    driver, async_driver = _preflight()
    t0 = time.monotonic()
    with (
        ac.ServiceGroup() as infra,
        ac.postgres_server(infra) as pg,
        ac.redis_server(infra) as redis,
        moto_server(log=tmp_path / "moto.log") as s3,
    ):
        for bucket in (LANDING_BUCKET, LAKE_BUCKET):
            s3.create_bucket(bucket)
        landing, lake = f"s3://{LANDING_BUCKET}", f"s3://{LAKE_BUCKET}"
        connection = {
            "conn_type": "aws",
            "login": TEST_KEY_ID,
            "password": TEST_SECRET,
            "extra": {"endpoint_url": s3.endpoint, "region_name": "us-east-1"},
        }
        af = ac.make_airflow_home(
            tmp_path / "airflow",
            executor="CeleryExecutor",
            db_url=pg.url(driver),
            extra_cfg={"celery": {"worker_concurrency": "2", "sync_parallelism": "1"}},
            secret_env={
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": pg.url(async_driver),
                "AIRFLOW__CELERY__BROKER_URL": redis.url(),
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg.url(driver),
                f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(connection),
            },
            # no AWS_* in the Airflow processes: S3 access goes through the connection
            env={
                "NEUROCYTE_AWS_CONN_ID": CONN_ID,
                "NEUROCYTE_LANDING": landing,
                "NEUROCYTE_LAKE": lake,
                "NEUROCYTE_CATALOG": str(tmp_path / "catalog" / "catalog.duckdb"),
            },
        )
        af.airflow("db", "migrate", timeout=400)
        t_migrated = time.monotonic()

        db = ac.MetaDB(pg.url(driver))
        with ac.ServiceGroup() as cluster:
            try:
                api = af.start(cluster, "api-server", "api-server")
                af.start(cluster, "scheduler", "scheduler")
                af.start(cluster, "dag-processor", "dag-processor")
                af.start(cluster, "triggerer", "triggerer")
                worker = af.start(cluster, "celery-worker", "celery", "worker")
                ac.wait_api_ready(af, api)
                ac.wait_dag_parsed(db, DAG_ID, cluster)

                for name, (lab, cond, tp, _status, _rows) in FILES.items():
                    s3.upload(ABF_DIR / name, f"{landing}/{lab}/{cond}/{tp}/{name}")

                af.airflow("dags", "unpause", DAG_ID)
                run_id = "celery_e2e"
                ac.trigger(af, DAG_ID, run_id, {"settle_s": 0, "max_wait_s": 0, "batch_size": 2})
                t_triggered = time.monotonic()
                state = ac.wait_run_finished(db, DAG_ID, run_id, cluster, RUN_TIMEOUT_S)
                t_done = time.monotonic()
                tis = ac.task_instances(db, DAG_ID, run_id)
                assert state == "success", (tis, _diagnostics(cluster.services, af.home))

                states = {(t["task_id"], t["map_index"]): t["state"] for t in tis}
                assert not {k: v for k, v in states.items() if v not in ("success", "skipped")}
                assert states[("choose_sensor", -1)] == "success"
                assert states[("wait_for_s3", -1)] == "success"  # deferred in the triggerer
                assert states[("wait_for_files", -1)] == "skipped"
                assert states[("plan_batches", -1)] == "success"
                # 4 files / batch_size 2: two mapped extract instances, both on the worker
                extract = {i: v for (task, i), v in states.items() if task == "extract"}
                assert extract == {0: "success", 1: "success"}, states
                assert "success" in {v for (t, _), v in states.items() if t == "gate_and_commit"}
                # publish: success, or skipped where DuckDB has no httpfs for an S3 lake
                assert states[("publish", -1)] in {"success", "skipped"}, states

                # every task that ran, ran on the Celery worker
                ran = [t for t in tis if t["state"] == "success"]
                # The task reports success to Airflow before its Celery task returns (the
                # supervisor still flushes logs), so the result backend may lag a little:
                # wait until every id has a final Celery state, then check it.
                ids = {t["external_executor_id"] for t in ran}
                deadline = time.monotonic() + 60
                while True:
                    celery = {
                        r["task_id"]: r["status"]
                        for r in db.rows("SELECT task_id, status FROM celery_taskmeta")
                    }
                    pending = {i for i in ids if celery.get(i) not in ("SUCCESS", "FAILURE")}
                    if not pending or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                worker_log = worker.tail(10**7)
                for t in ran:
                    cid = t["external_executor_id"]
                    assert cid, f"{t['task_id']}[{t['map_index']}] has no Celery task id"
                    assert celery.get(cid) == "SUCCESS", (t, celery)
                    assert cid in worker_log, f"worker never received {cid}"
                    assert t["queue"] == "default"
                    assert t["hostname"], t
                # the S3 sensor waited in the triggerer (deferred), not in a worker slot
                trigger_logs = list((af.home / "logs").rglob("task_id=wait_for_s3/*trigger*"))
                assert any(f"found {len(FILES)} objects" in p.read_text() for p in trigger_logs), (
                    trigger_logs
                )
            finally:
                db.close()
        # the cluster is stopped here; S3 and Postgres still run for the checks

        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("NEUROCYTE_LAKE", lake)
        _check_lake(lake)
    print(
        f"\ncelery e2e: migrate {t_migrated - t0:.0f} s, run {t_done - t_triggered:.0f} s, "
        f"total {time.monotonic() - t0:.0f} s"
    )


def _check_lake(lake: str) -> None:
    import duckdb

    from transforms import spec
    from transforms.lake import delta as lakeio

    log = lakeio.read_table(spec.INGEST_LOG, lake=lake)
    sweeps = lakeio.read_table(spec.ICEPHYS_SWEEPS, lake=lake)
    recs = lakeio.read_table(spec.ICEPHYS_RECORDINGS, lake=lake)
    assert log is not None and sweeps is not None and recs is not None
    con = duckdb.connect()
    con.register("log", log)
    con.register("sweeps", sweeps)
    con.register("recs", recs)
    statuses = dict(con.execute("SELECT file_name, status FROM log").fetchall())
    assert statuses == {name: v[3] for name, v in FILES.items()}
    con.execute(
        "CREATE VIEW pub AS SELECT file_id, ingest_id, file_name, source_path FROM log "
        "WHERE status = 'published'"
    )
    got = {
        name: (lab, cond, tp, n)
        for name, lab, cond, tp, n in con.execute(
            "SELECT p.file_name, s.lab, s.condition, s.timepoint, count(*) FROM sweeps s "
            "JOIN pub p USING (file_id, ingest_id) GROUP BY ALL"
        ).fetchall()
    }
    expected = {n: (v[0], v[1], v[2], v[4]) for n, v in FILES.items() if v[3] == "published"}
    assert got == expected
    # nothing but published rows in the tables: the quarantined file's rows never landed
    assert sweeps.num_rows == sum(v[4] for v in FILES.values())
    assert recs.num_rows == len(expected)
    paths = set(con.execute("SELECT source_path FROM pub").fetchall())
    assert paths == {
        (f"s3://{LANDING_BUCKET}/{v[0]}/{v[1]}/{v[2]}/{n}",)
        for n, v in FILES.items()
        if v[3] == "published"
    }
