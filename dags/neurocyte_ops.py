"""Shared task plumbing for the Neurocyte DAGs (no DAG is defined here).

* :func:`aws_env` exports an Airflow ``aws`` connection (``$NEUROCYTE_AWS_CONN_ID``)
  into the standard ``AWS_*`` variables for the duration of a ``transforms``
  call, so ``transforms`` never imports Airflow and credentials never reach
  code or logs (the hook masks the secret in task logs).
* :func:`alert_on_failure` is the ``on_failure_callback`` of every task: one
  structured JSON log line, optionally POSTed to ``$NEUROCYTE_ALERT_WEBHOOK``.
* :func:`file_log` logs a line about one file, always carrying its ``file_id``.
* :func:`ingest_batch_extract` / :func:`ingest_batch_commit` are the task bodies
  that run a *batch* of files; one bad file never fails the others.

Nothing here runs at import (parse) time beyond stdlib imports.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

log = logging.getLogger("neurocyte.tasks")

ENV_CONN_ID = "NEUROCYTE_AWS_CONN_ID"
ENV_WEBHOOK = "NEUROCYTE_ALERT_WEBHOOK"

#: Retries with exponential backoff for every task (I/O to the lake and S3).
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "neurocyte",
    "retries": 3,
    "retry_delay": timedelta(seconds=15),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


def file_log(level: int, file_id: str, file_name: str, message: str, *args: object) -> None:
    """Log one line about a file; ``file_id=<sha256>`` leads every such line."""
    log.log(level, "file_id=%s file=%s " + message, file_id or "-", file_name, *args)


def _uses_s3() -> bool:
    from transforms import spec
    from transforms.lake import storage

    return storage.is_s3(spec.landing_root()) or storage.is_s3(spec.lake_root())


@contextmanager
def aws_env(conn_id: str | None = None) -> Iterator[None]:
    """Export an ``aws`` connection into ``AWS_*`` for the block, then restore.

    Parameters
    ----------
    conn_id
        The connection id; default ``$NEUROCYTE_AWS_CONN_ID``. When neither is
        set, or neither the landing zone nor the lake is on S3, the
        environment is left as it is (ambient ``AWS_*`` variables or an
        instance role then apply).
    """
    conn_id = conn_id or os.environ.get(ENV_CONN_ID)
    if not conn_id or not _uses_s3():
        yield
        return
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id=conn_id)
    creds = hook.get_credentials()  # masks the secret in task logs
    values = {
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "AWS_SESSION_TOKEN": creds.token or "",
        "AWS_REGION": hook.conn_region_name or "us-east-1",
        "AWS_ENDPOINT_URL": hook.conn_config.get_service_endpoint_url("s3") or "",
    }
    saved = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            if value:
                os.environ[key] = value
            else:
                os.environ.pop(key, None)
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def alert_payload(context: dict[str, Any]) -> dict[str, Any]:
    """The structured alert for a failed task (no secrets: ids, states, the error)."""
    ti = context.get("ti") or context.get("task_instance")
    exc = context.get("exception")
    return {
        "event": "neurocyte.task_failed",
        "dag_id": getattr(ti, "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": getattr(ti, "run_id", None) or context.get("run_id"),
        "map_index": getattr(ti, "map_index", None),
        "try_number": getattr(ti, "try_number", None),
        "error": f"{type(exc).__name__}: {exc}" if exc is not None else None,
    }


def alert_on_failure(context: dict[str, Any]) -> None:
    """``on_failure_callback``: log a structured alert; POST it to a webhook if set.

    Set ``$NEUROCYTE_ALERT_WEBHOOK`` to an ``https://`` (or, for a local
    receiver, ``http://``) URL to receive the JSON payload of
    :func:`alert_payload`. A failing webhook is logged, never raised: the
    task has failed already and its state must not change.
    """
    payload = alert_payload(context)
    log.error("ALERT %s", json.dumps(payload, sort_keys=True))
    url = os.environ.get(ENV_WEBHOOK, "")
    if not url:
        return
    if not url.startswith(("https://", "http://")):
        log.error("ALERT webhook ignored: %s must be an http(s) URL", ENV_WEBHOOK)
        return
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
            log.info("ALERT delivered to webhook (HTTP %s)", resp.status)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        log.error("ALERT webhook delivery failed: %s", exc)


def batch_label(items: list[dict[str, Any]]) -> str:
    """How a mapped batch is named in the UI (its map index)."""
    if not items:
        return "empty"
    first = items[0]
    if len(items) == 1 and first.get("part") is not None and first.get("n_parts"):
        return f"{first['file_name']} wells {first['part'] + 1}/{first['n_parts']}"
    return f"{len(items)} files from {first['file_name']}"


def ingest_batch_extract(
    batch: list[dict[str, Any]], *, force: bool = False
) -> list[dict[str, Any]]:
    """Stage every item of a batch (decode + features); one outcome per item.

    An item is a whole file, or one well group of a split plate (``part``,
    ``n_parts`` and the plate's shared ``ingest_id``). ``stage_file`` turns any
    bad input into a ``failed`` outcome, so a bad file never stops the batch;
    errors reaching the lake itself propagate and the task is retried with
    backoff.
    """
    from transforms.lake import storage
    from transforms.pipeline.ingest import stage_file

    outcomes: list[dict[str, Any]] = []
    with aws_env():
        for cand in batch:
            part = {k: cand[k] for k in ("part", "n_parts", "ingest_id") if k in cand}
            remote = storage.is_s3(cand["path"])
            if remote and not storage.exists(cand["path"]):
                # gone since it was planned: recorded as failed, the batch goes on
                outcome = stage_file(cand["path"], source_uri=cand["path"], **part)
            else:
                with storage.localized(cand["path"]) as (local, local_landing):
                    outcome = stage_file(
                        local,
                        landing=local_landing,
                        force=force,
                        source_uri=cand["path"] if remote else None,
                        **part,
                    )
            what = f"wells {cand['part'] + 1}/{cand['n_parts']}" if "part" in part else "file"
            file_log(
                logging.INFO,
                outcome.file_id,
                outcome.file_name,
                "extract %s: %s %s",
                what,
                outcome.status,
                outcome.reason,
            )
            outcomes.append(outcome.as_dict())
    return outcomes


def ingest_batch_commit(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """QC-gate a batch's staged files together and commit them (one commit per table)."""
    from transforms.pipeline.ingest import commit_batch

    with aws_env():
        results = commit_batch(outcomes)
    for result in results:
        file_log(
            logging.INFO,
            result.file_id,
            result.file_name,
            "commit: %s %s",
            result.status,
            result.reason,
        )
    return [r.as_dict() for r in results]


def publish_catalog() -> dict[str, Any]:
    """Rebuild the DuckDB catalog and QC docs; skip (with the reason) where impossible."""
    from airflow.sdk.exceptions import AirflowSkipException

    from transforms import spec
    from transforms.errors import CatalogUnavailable
    from transforms.lake.catalog import publish
    from transforms.pipeline import qc

    with aws_env():
        try:
            result = publish()
        except CatalogUnavailable as exc:
            # The data is committed; only the catalog cannot be built here.
            raise AirflowSkipException(str(exc)) from exc
        docs = qc.build_data_docs() if not spec.is_remote(spec.lake_root()) else ""
    log.info("catalog %s: versions %s; QC docs %s", result.catalog, result.versions, docs)
    return {"catalog": str(result.catalog), "versions": result.versions, "docs": str(docs)}


def count_statuses(batches: list[list[dict[str, Any]]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for batch in batches:
        for o in batch or []:
            counts[o["status"]] = counts.get(o["status"], 0) + 1
    return counts
