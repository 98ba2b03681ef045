"""neurocyte_ingest: landing zone -> decode + features -> QC gate -> Delta -> catalog.

Thin wiring only: every task body imports and calls ``transforms``; nothing
expensive happens at parse time. Tasks exchange paths and ids, never arrays.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.bases.sensor import PokeReturnValue

DEFAULT_ARGS = {
    "owner": "neurocyte",
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


@dag(
    dag_id="neurocyte_ingest",
    description="Ingest new recordings from the landing zone into the QC-gated lake",
    schedule=timedelta(minutes=15),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        "force": Param(False, type="boolean", description="re-ingest content already attempted"),
        "settle_s": Param(30, type="number", description="seconds a file must be unchanged"),
        "max_wait_s": Param(
            600, type="number", description="how long to wait for new files (0: check once)"
        ),
    },
    tags=["neurocyte", "ingest"],
    doc_md=__doc__,
)
def neurocyte_ingest() -> None:
    @task.sensor(poke_interval=30, timeout=600, mode="reschedule", soft_fail=True)
    def wait_for_files() -> PokeReturnValue:
        """Succeed with the new files' paths and ids once any settled file is new."""
        from transforms.discover import new_files

        params = get_current_context()["params"]
        found = new_files(
            settle_s=float(params["settle_s"]), include_attempted=bool(params["force"])
        )
        if not found and float(params["max_wait_s"]) <= 0:
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException("no new files in the landing zone")
        return PokeReturnValue(is_done=bool(found), xcom_value=[c.as_dict() for c in found])

    @task(map_index_template="{{ file_name }}")
    def extract(candidate: dict[str, Any]) -> dict[str, Any]:
        """Decode one file and extract its features; stage rows as Parquet."""
        from transforms.ingest import stage_file

        context = get_current_context()
        context["file_name"] = candidate["file_name"]  # type: ignore[typeddict-unknown-key]
        outcome = stage_file(candidate["path"], force=bool(context["params"]["force"]))
        print(f"file_id={outcome.file_id} {outcome.file_name}: {outcome.status} {outcome.reason}")
        return outcome.as_dict()

    @task(map_index_template="{{ file_name }}")
    def gate_and_commit(outcome: dict[str, Any]) -> dict[str, Any]:
        """Validate with Great Expectations; append to Delta or quarantine; log."""
        from transforms.ingest import commit_staged

        get_current_context()["file_name"] = outcome["file_name"]  # type: ignore[typeddict-unknown-key]
        result = commit_staged(outcome)
        print(f"file_id={result.file_id} {result.file_name}: {result.status} {result.reason}")
        return result.as_dict()

    @task(trigger_rule="none_failed_min_one_success")
    def publish(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
        """Rebuild the DuckDB catalog over the new snapshots and the QC Data Docs."""
        from transforms import qc
        from transforms.publish import publish as publish_catalog

        result = publish_catalog()
        docs = qc.build_data_docs()
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o["status"]] = counts.get(o["status"], 0) + 1
        print(f"catalog {result.catalog}: {result.versions}; outcomes {counts}; QC docs {docs}")
        return {"catalog": str(result.catalog), "docs": str(docs), "counts": counts}

    staged = extract.expand(candidate=wait_for_files())
    committed = gate_and_commit.expand(outcome=staged)
    publish(committed)


neurocyte_ingest()
