"""neurocyte_ingest: landing zone -> decode + features -> QC gate -> Delta -> catalog.

Thin wiring only: every task body imports and calls ``transforms`` (through
``neurocyte_ops``); nothing expensive, and no connection or Variable lookup,
happens at parse time. Tasks exchange paths and ids, never arrays.

Sensing: a local landing zone is polled by a python sensor in ``reschedule``
mode (no worker slot held between pokes); an ``s3://`` landing zone is
watched by the amazon provider's deferrable ``S3KeysUnchangedSensor`` (the
wait runs in the triggerer) until its key set has been quiet for
``settle_s``. The new set is then found by content hash against
``ingest_log`` (a renamed copy is a duplicate) and mapped over **batches** of
``batch_size`` files, so 1000 files are 1000 / batch_size task instances per
step, not 1000.

Backfill (Airflow 3 CLI; each run re-scans the landing zone, so a backfill
picks up anything a missed interval left behind)::

    airflow backfill create --dag-id neurocyte_ingest \\
        --from-date 2026-01-01 --to-date 2026-01-02 --max-active-runs 1
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.bases.sensor import PokeReturnValue

if str(Path(__file__).parent) not in sys.path:  # the helpers beside this file
    sys.path.insert(0, str(Path(__file__).parent))
from neurocyte_ops import DEFAULT_ARGS, alert_on_failure

_S3_CONN = os.environ.get("NEUROCYTE_AWS_CONN_ID") or "aws_default"


def _landing_part(part: str) -> str:
    """Bucket or key prefix of the landing zone, for the S3 sensor's templates."""
    from transforms import spec, storage

    root = spec.landing_root()
    if not storage.is_s3(root):
        return ""
    bucket, prefix = storage.split_s3(root)
    return bucket if part == "bucket" else (prefix + "/" if prefix else "")


@dag(
    dag_id="neurocyte_ingest",
    description="Ingest new recordings from the landing zone into the QC-gated lake",
    schedule="*/15 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "on_failure_callback": alert_on_failure},
    user_defined_macros={"landing_part": _landing_part},
    params={
        "force": Param(False, type="boolean", description="re-ingest content already attempted"),
        "settle_s": Param(30, type="number", description="seconds a file must be unchanged"),
        "max_wait_s": Param(
            600, type="number", description="how long to wait for new files (0: check once)"
        ),
        "batch_size": Param(
            25, type="integer", minimum=1, description="files per mapped task instance"
        ),
    },
    tags=["neurocyte", "ingest"],
    doc_md=__doc__,
)
def neurocyte_ingest() -> None:
    @task.branch
    def choose_sensor() -> str:
        """Pick the sensor for the landing zone's storage (local or S3)."""
        from transforms import spec, storage

        return "wait_for_s3" if storage.is_s3(spec.landing_root()) else "wait_for_files"

    @task.sensor(poke_interval=30, timeout=600, mode="reschedule", soft_fail=True)
    def wait_for_files() -> PokeReturnValue:
        """Local landing zone: succeed with the new files once any settled file is new."""
        from transforms.discover import new_files

        params = get_current_context()["params"]
        found = new_files(
            settle_s=float(params["settle_s"]), include_attempted=bool(params["force"])
        )
        if not found and float(params["max_wait_s"]) <= 0:
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException("no new files in the landing zone")
        return PokeReturnValue(is_done=bool(found), xcom_value=[c.as_dict() for c in found])

    from airflow.providers.amazon.aws.sensors.s3 import S3KeysUnchangedSensor

    wait_for_s3 = S3KeysUnchangedSensor(
        task_id="wait_for_s3",
        aws_conn_id=_S3_CONN,
        bucket_name="{{ landing_part('bucket') }}",
        prefix="{{ landing_part('prefix') }}",
        inactivity_period=30,
        min_objects=1,
        poke_interval=15,
        timeout=600,
        soft_fail=True,
        deferrable=True,
    )

    @task(trigger_rule="none_failed_min_one_success")
    def plan_batches() -> list[list[dict[str, Any]]]:
        """The new files (by content hash vs ingest_log), split into batches."""
        from airflow.sdk.exceptions import AirflowSkipException
        from neurocyte_ops import aws_env

        from transforms.discover import batches, new_files

        context = get_current_context()
        params = context["params"]
        found = context["ti"].xcom_pull(task_ids="wait_for_files", default=None)
        if found is None:
            with aws_env():
                found = [
                    c.as_dict()
                    for c in new_files(
                        settle_s=float(params["settle_s"]),
                        include_attempted=bool(params["force"]),
                    )
                ]
        if not found:
            raise AirflowSkipException("no new files in the landing zone")
        return batches(found, size=int(params["batch_size"]))

    @task(map_index_template="{{ batch_label }}")
    def extract(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Decode each file of the batch and extract features; stage rows as Parquet."""
        from neurocyte_ops import ingest_batch_extract

        context = get_current_context()
        context["batch_label"] = f"{len(batch)} files from {batch[0]['file_name']}"  # type: ignore[typeddict-unknown-key]
        return ingest_batch_extract(batch, force=bool(context["params"]["force"]))

    @task(map_index_template="{{ batch_label }}")
    def gate_and_commit(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validate with Great Expectations; append to Delta or quarantine; log."""
        from neurocyte_ops import ingest_batch_commit

        label = f"{len(outcomes)} files from {outcomes[0]['file_name']}" if outcomes else "empty"
        get_current_context()["batch_label"] = label  # type: ignore[typeddict-unknown-key]
        return ingest_batch_commit(outcomes)

    @task(trigger_rule="none_failed_min_one_success")
    def publish(committed: list[list[dict[str, Any]]]) -> dict[str, Any]:
        """Rebuild the DuckDB catalog over the new snapshots and the QC Data Docs."""
        from neurocyte_ops import count_statuses, log, publish_catalog

        counts = count_statuses(list(committed))
        log.info("outcomes %s", counts)
        return {**publish_catalog(), "counts": counts}

    sensor = wait_for_files()
    planned = plan_batches()
    choose_sensor() >> [sensor, wait_for_s3]
    [sensor, wait_for_s3] >> planned
    staged = extract.expand(batch=planned)
    committed = gate_and_commit.expand(outcomes=staged)
    publish(committed)


neurocyte_ingest()
