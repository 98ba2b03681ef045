"""neurocyte_ingest: landing zone -> decode + features -> QC gate -> Delta -> catalog.

Thin wiring only: every task body imports and calls ``transforms`` (through
``neurocyte_tasks``); nothing expensive, and no connection or Variable lookup,
happens at parse time. Tasks exchange paths and ids, never arrays.

Sensing: a local landing zone is polled by a python sensor in ``reschedule``
mode (no worker slot held between pokes); an ``s3://`` landing zone is
watched by the amazon provider's deferrable ``S3KeysUnchangedSensor`` (the
wait runs in the triggerer) until its key set has been quiet for
``settle_s``. The new set is then found by content hash and metadata digest against
``ingest_log`` (``transforms.pipeline.identity``: a renamed copy is a duplicate, a
corrected sidecar, plate map or parameter set re-publishes, a failed file is retried
once its content or metadata changes) and mapped over **batches** of at most
``batch_size`` files and about ``batch_mb`` MiB, evened out, so 1000 files are a few
task instances per step, not 1000: every task process pays its start, the DAG's parse
and the imports (Great Expectations for the gate: seconds) once per batch.

Scale-out within a plate: a continuous plate (``.raw``, NWB) larger than
``split_plate_mb`` MiB becomes one ``extract`` item per well group (one group
per ``split_plate_mb``, at most ``max_plate_parts``), all sharing one
``ingest_id``, so several workers share the plate; ``group_parts`` hands the
parts of each plate to one ``gate_and_commit``, which merges them and commits
the plate as one file (nothing of it if a part is missing).

Backfill (Airflow 3 CLI; each run re-scans the landing zone, so a backfill
picks up anything a missed interval left behind)::

    airflow backfill create --dag-id neurocyte_ingest \\
        --from-date 2026-01-01 --to-date 2026-01-02 --max-active-runs 1
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.bases.sensor import PokeReturnValue
from neurocyte_tasks.alerts import NeurocyteAlertNotifier
from neurocyte_tasks.ops import DEFAULT_ARGS

_S3_CONN = os.environ.get("NEUROCYTE_AWS_CONN_ID") or "aws_default"


def _landing_part(part: str) -> str:
    """Bucket or key prefix of the landing zone, for the S3 sensor's templates."""
    from transforms import spec
    from transforms.lake import storage

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
    default_args={**DEFAULT_ARGS, "on_failure_callback": NeurocyteAlertNotifier()},
    user_defined_macros={"landing_part": _landing_part},
    params={
        "force": Param(
            False,
            type="boolean",
            description="re-ingest files whose content and metadata are unchanged since their "
            "last attempt",
        ),
        "params_file": Param(
            "",
            type="string",
            description="parameter set (TOML path or s3:// URI) for this run's files instead "
            "of each lab's <landing>/<lab>/neurocyte.toml",
        ),
        "settle_s": Param(30, type="number", description="seconds a file must be unchanged"),
        "uploaded": Param(
            [],
            type="array",
            items={"type": "string"},
            description="landing paths (lab/condition/timepoint/name) the Neurocyte page's "
            "upload landed whole: read at once, not held back by settle_s",
        ),
        "max_wait_s": Param(
            600, type="number", description="how long to wait for new files (0: check once)"
        ),
        "batch_size": Param(
            250, type="integer", minimum=1, description="at most this many files per mapped task"
        ),
        "batch_mb": Param(
            512,
            type="number",
            exclusiveMinimum=0,
            description="at most about this many MiB of input files per mapped task",
        ),
        "split_plate_mb": Param(
            1024,
            type="number",
            minimum=0,
            description="split continuous plates larger than this (MiB) into well groups "
            "staged by several workers (0: never)",
        ),
        "max_plate_parts": Param(
            16, type="integer", minimum=1, description="at most this many well groups per plate"
        ),
    },
    tags=["neurocyte", "ingest"],
    doc_md=__doc__,
)
def neurocyte_ingest() -> None:
    @task.branch
    def choose_sensor() -> str:
        """Pick the sensor for the landing zone's storage (local or S3)."""
        from transforms import spec
        from transforms.lake import storage

        return "wait_for_s3" if storage.is_s3(spec.landing_root()) else "wait_for_files"

    @task.sensor(poke_interval=30, timeout=600, mode="reschedule", soft_fail=True)
    def wait_for_files() -> PokeReturnValue:
        """Local landing zone: succeed with the new files once any settled file is new."""
        from transforms.pipeline.discover import new_files

        params = get_current_context()["params"]
        found = new_files(
            settle_s=float(params["settle_s"]),
            include_attempted=bool(params["force"]),
            params_file=params["params_file"] or None,
            complete=list(params["uploaded"] or ()),
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
        # Not soft_fail: a trigger error (missing aiobotocore, bad credentials)
        # must fail the run, never pass as "skipped, nothing new". An idle
        # window therefore ends as a failed sensor after the timeout.
        timeout=14 * 60,
        soft_fail=False,
        deferrable=True,
    )

    @task(trigger_rule="none_failed_min_one_success")
    def plan_batches() -> list[list[dict[str, Any]]]:
        """The new files (content hash and metadata vs ingest_log) in batches; plates in parts.

        A plate over ``split_plate_mb`` is one single-item batch per well group.
        """
        from airflow.sdk.exceptions import AirflowSkipException
        from neurocyte_tasks.ops import aws_env

        from transforms.pipeline import split_candidates
        from transforms.pipeline.discover import batches, new_files

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
                        params_file=params["params_file"] or None,
                        complete=list(params["uploaded"] or ()),
                    )
                ]
        if not found:
            raise AirflowSkipException("no new files in the landing zone")
        items = split_candidates(
            found,
            split_plate_mb=float(params["split_plate_mb"]),
            max_parts=int(params["max_plate_parts"]),
        )
        whole = [c for c in items if "part" not in c]
        parts = [[c] for c in items if "part" in c]
        size, max_mb = int(params["batch_size"]), float(params["batch_mb"])
        return batches(whole, size=size, max_mb=max_mb) + parts

    @task(map_index_template="{{ batch_label }}")
    def extract(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Decode each file of the batch and extract features; stage rows as Parquet.

        A batch may be one well group of a split plate: only its wells are decoded.
        """
        from neurocyte_tasks.ops import batch_label, ingest_batch_extract

        context = get_current_context()
        context["batch_label"] = batch_label(batch)  # type: ignore[typeddict-unknown-key]
        params = context["params"]
        return ingest_batch_extract(
            batch, force=bool(params["force"]), params_file=params["params_file"] or None
        )

    @task
    def group_parts(staged: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
        """The extract outcomes regrouped for the gate: each plate's parts in one batch."""
        from transforms.pipeline import group_parts as regroup

        return regroup(list(staged))

    @task(map_index_template="{{ batch_label }}")
    def gate_and_commit(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validate with Great Expectations; append to Delta or quarantine; log."""
        from neurocyte_tasks.ops import batch_label, ingest_batch_commit

        get_current_context()["batch_label"] = batch_label(outcomes)  # type: ignore[typeddict-unknown-key]
        return ingest_batch_commit(outcomes)

    @task(trigger_rule="none_failed_min_one_success")
    def publish(committed: list[list[dict[str, Any]]]) -> dict[str, Any]:
        """Rebuild the DuckDB catalog over the new snapshots and the QC Data Docs."""
        from neurocyte_tasks.ops import count_statuses, log, publish_catalog

        counts = count_statuses(list(committed))
        log.info("outcomes %s", counts)
        return {**publish_catalog(), "counts": counts}

    sensor = wait_for_files()
    planned = plan_batches()
    choose_sensor() >> [sensor, wait_for_s3]
    [sensor, wait_for_s3] >> planned
    staged = extract.expand(batch=planned)
    committed = gate_and_commit.expand(outcomes=group_parts(staged))
    publish(committed)


neurocyte_ingest()
