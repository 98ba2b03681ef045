"""Shared task plumbing for the Neurocyte DAGs (no DAG is defined here).

* :func:`aws_env` exports an Airflow ``aws`` connection (``$NEUROCYTE_AWS_CONN_ID``)
  into the standard ``AWS_*`` variables for the duration of a ``transforms``
  call, so ``transforms`` never imports Airflow and credentials never reach
  code or logs (the hook masks the secret in task logs).
* failure alerts are :class:`neurocyte_tasks.alerts.NeurocyteAlertNotifier` (an
  Airflow notifier; its URL lives in an Airflow connection).
* :func:`file_log` logs a line about one file, always carrying its ``file_id``.
* :func:`ingest_batch_extract` / :func:`ingest_batch_commit` are the task bodies
  that run a *batch* of files; one bad file never fails the others.

Nothing here runs at import (parse) time beyond stdlib imports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

log = logging.getLogger("neurocyte.tasks")

ENV_CONN_ID = "NEUROCYTE_AWS_CONN_ID"

#: Retries with exponential backoff for every task (I/O to the lake and S3).
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "neurocyte",
    "retries": 3,
    "retry_delay": timedelta(seconds=15),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


def file_log(level: int, file_id: str, file_name: str, message: str, *args: object) -> None:
    """Log one line about a file; ``file_id=<sha256>`` leads every such line.

    The name and every text argument are escaped (a landing file's name may hold a
    newline): one file, one log line.
    """
    from transforms.untrusted import escape

    shown = tuple(escape(a) if isinstance(a, str) else a for a in args)
    log.log(level, "file_id=%s file=%s " + message, file_id or "-", escape(file_name), *shown)


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


def batch_label(items: list[dict[str, Any]]) -> str:
    """How a mapped batch is named in the UI (its map index)."""
    if not items:
        return "empty"
    first = items[0]
    if len(items) == 1 and first.get("part") is not None and first.get("n_parts"):
        return f"{first['file_name']} wells {first['part'] + 1}/{first['n_parts']}"
    return f"{len(items)} files from {first['file_name']}"


def ingest_batch_extract(
    batch: list[dict[str, Any]], *, force: bool = False, params_file: str | None = None
) -> list[dict[str, Any]]:
    """Stage every item of a batch (decode + features); one outcome per item.

    An item is a whole file, or one well group of a split plate (``part``,
    ``n_parts`` and the plate's shared ``ingest_id``). ``stage_file`` turns any
    bad input into a ``failed`` outcome, so a bad file never stops the batch;
    errors reaching the lake itself propagate and the task is retried with
    backoff. ``params_file`` is the run's parameter set (default: each lab's
    ``neurocyte.toml``).
    """
    from transforms.lake import storage
    from transforms.pipeline import gate, stage_file
    from transforms.untrusted import name_fits

    gate.warm()  # the commit task's QC worker: GX imported while this batch decodes
    outcomes: list[dict[str, Any]] = []
    with aws_env():
        for cand in batch:
            part = {k: cand[k] for k in ("part", "n_parts", "ingest_id") if k in cand}
            remote = storage.is_s3(cand["path"])
            if remote and (not name_fits(cand["file_name"]) or not storage.exists(cand["path"])):
                # gone since it was planned, or a name too long to copy locally:
                # recorded as failed, the batch goes on
                outcome = stage_file(
                    cand["path"], source_uri=cand["path"], params_file=params_file, **part
                )
            else:
                with storage.localized(cand["path"]) as (local, local_landing):
                    outcome = stage_file(
                        local,
                        landing=local_landing,
                        force=force,
                        params_file=params_file,
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
    from transforms.pipeline import commit_batch

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
    """Rebuild the DuckDB catalog, the offline QC reports and the GX Data Docs; skip
    (with the reason) where impossible."""
    from airflow.sdk.exceptions import AirflowSkipException

    from transforms import spec
    from transforms.errors import CatalogUnavailable
    from transforms.lake.catalog import publish
    from transforms.pipeline import gate
    from transforms.serve import qc_report

    with aws_env():
        try:
            result = publish()
        except CatalogUnavailable as exc:
            # The data is committed; only the catalog cannot be built here.
            raise AirflowSkipException(str(exc)) from exc
        docs = gate.build_data_docs() if not spec.is_remote(spec.lake_root()) else ""
        reports = qc_report.publish_reports()
    log.info("catalog %s: versions %s; QC reports %s", result.catalog, result.versions, reports)
    return {
        "catalog": str(result.catalog),
        "versions": result.versions,
        "qc_reports": reports,
        "docs": str(docs),
    }


def count_statuses(batches: list[list[dict[str, Any]]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for batch in batches:
        for o in batch or []:
            counts[o["status"]] = counts.get(o["status"], 0) + 1
    return counts
