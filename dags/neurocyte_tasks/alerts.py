"""Failure alerts as an Airflow notifier: one structured JSON line, POSTed to a connection.

:class:`NeurocyteAlertNotifier` is the ``on_failure_callback`` of every Neurocyte task.
It always logs one ``ALERT {json}`` line (ids, states and the error; no secrets). When
the Airflow connection ``neurocyte_alerts`` (or ``$NEUROCYTE_ALERT_CONN_ID``) exists,
the same JSON is POSTed through the HTTP provider's :class:`HttpNotifier` to the
connection's URL: an ``http`` connection whose host is the full URL (for example
``AIRFLOW_CONN_NEUROCYTE_ALERTS='{"conn_type": "http", "host": "https://hooks.example.org/x"}'``),
with any credentials in its login/password or headers in its extra, which Airflow
masks in task logs. A failed delivery is logged, never raised: the task has failed
already and its state must not change.

The HTTP provider (and aiohttp under it) is imported only when an alert is sent: every
task process parses the DAG, whose default arguments hold this notifier, and that
import cost about 0.3 s of each parse.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger("neurocyte.tasks")

ENV_ALERT_CONN_ID = "NEUROCYTE_ALERT_CONN_ID"
DEFAULT_ALERT_CONN_ID = "neurocyte_alerts"


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


def _connection_exists(conn_id: str) -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


class NeurocyteAlertNotifier(BaseNotifier):
    """Log a structured alert for a failed task; POST it to the alerts connection if set.

    Parameters
    ----------
    http_conn_id
        The connection to POST to; default ``$NEUROCYTE_ALERT_CONN_ID`` or
        ``neurocyte_alerts``. Looked up only when a task fails, never at parse time.
    """

    template_fields = ("http_conn_id",)

    def __init__(self, *, http_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.http_conn_id = (
            http_conn_id or os.environ.get(ENV_ALERT_CONN_ID) or DEFAULT_ALERT_CONN_ID
        )

    def notify(self, context: Any) -> None:
        payload = alert_payload(dict(context))
        log.error("ALERT %s", json.dumps(payload, sort_keys=True))
        try:
            if not _connection_exists(self.http_conn_id):
                return
            from airflow.providers.http.notifications.http import HttpNotifier

            HttpNotifier(
                http_conn_id=self.http_conn_id,
                method="POST",
                json=payload,
                headers={"Content-Type": "application/json"},
                extra_options={"timeout": 5},
            ).notify(context)
            log.info("ALERT delivered to connection %s", self.http_conn_id)
        except Exception as exc:
            log.error("ALERT delivery to connection %s failed: %s", self.http_conn_id, exc)
