"""DAG integrity and an end-to-end run of neurocyte_ingest with dag.test() on SQLite."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers import land, query

DAGS = REPO_ROOT / "dags"
sys.path.insert(0, str(REPO_ROOT / "scripts"))


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import run_dag

    home = tmp_path_factory.mktemp("airflow")
    run_dag.prepare_airflow_home(home)
    return home


@pytest.fixture(scope="module")
def dagbag(airflow_home: Path):
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=DAGS, bundle_path=DAGS)


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert "neurocyte_ingest" in dagbag.dag_ids


def test_every_task_retries(dagbag) -> None:
    for dag in dagbag.dags.values():
        for t in dag.tasks:
            if t.task_type.endswith("Sensor") or "sensor" in t.task_id:
                continue
            assert t.retries >= 1, f"{dag.dag_id}.{t.task_id} has no retries"


def test_dags_parse_without_connections_variables_or_heavy_imports(airflow_home: Path) -> None:
    """Parse the DAG folder in a fresh interpreter that forbids lookups at parse time."""
    import subprocess

    code = f"""
import sys
from airflow.sdk import BaseHook, Variable
def forbid(*a, **k):
    raise RuntimeError("lookup at parse time")
BaseHook.get_connection = forbid
Variable.get = forbid
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
dags = Path({str(DAGS)!r})
bag = BundleDagBag(dag_folder=dags, bundle_path=dags)
assert not bag.import_errors, bag.import_errors
HEAVY = ("pyabf", "great_expectations", "deltalake", "pynwb", "polars")
heavy = [m for m in HEAVY if m in sys.modules]
assert not heavy, f"imported at parse time: {{heavy}}"
print("ok", sorted(bag.dag_ids))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy()
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "neurocyte_ingest" in out.stdout


def test_ingest_dag_end_to_end_on_real_files(
    airflow_home: Path, tmp_path: Path, monkeypatch, dagbag
) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    land(landing, "171116sh_0018.abf")
    land(landing, "190619B_0003.abf", condition="KO", timepoint="P21")
    land(landing, "17o05024_vc_steps.abf")
    land(landing, "opto_aps_bad_units.abf")  # fails QC: quarantined, others publish
    monkeypatch.setenv("NEUROCYTE_LAKE", str(lake))
    monkeypatch.setenv("NEUROCYTE_LANDING", str(landing))

    dag = dagbag.get_dag("neurocyte_ingest")
    dagrun = dag.test(run_conf={"settle_s": 0, "max_wait_s": 0})
    assert str(dagrun.state) == "success"
    ti_states = {ti.task_id: str(ti.state) for ti in dagrun.get_task_instances()}
    assert ti_states["publish"] == "success", ti_states

    statuses = dict(query(lake, "SELECT file_name, status FROM ingest_log"))
    assert statuses == {
        "171116sh_0018.abf": "published",
        "190619B_0003.abf": "published",
        "17o05024_vc_steps.abf": "published",
        "opto_aps_bad_units.abf": "quarantined",
    }
    rows = query(
        lake,
        "SELECT condition, timepoint, count(*) FROM icephys_sweeps GROUP BY ALL ORDER BY ALL",
    )
    assert rows == [("KO", "P21", 10), ("WT", "P14", 17 + 7)]
    # publish wrote the offline QC reports: the index names every file
    index = (lake / "qc" / "reports" / "index.html").read_text()
    assert all(name in index for name in statuses)

    # A second run finds nothing new: the sensor soft-fails, nothing changes.
    dagrun = dag.test(run_conf={"settle_s": 0, "max_wait_s": 0})
    assert str(dagrun.state) in {"success", "skipped"}
    assert query(lake, "SELECT count(*) FROM icephys_sweeps")[0][0] == 34


def test_nightly_dag_schedule_and_batching(dagbag) -> None:
    nightly = dagbag.get_dag("neurocyte_nightly")
    assert nightly is not None
    assert nightly.timetable.expression == "0 2 * * *"
    ingest = dagbag.get_dag("neurocyte_ingest")
    assert "batch_size" in ingest.params
    for dag in (ingest, nightly):
        for t in dag.tasks:
            assert t.on_failure_callback, f"{dag.dag_id}.{t.task_id} has no failure alert"
    sensor = ingest.get_task("wait_for_s3")
    assert sensor.deferrable and sensor.task_type == "S3KeysUnchangedSensor"
    assert ingest.get_task("wait_for_files").mode == "reschedule"


def test_failure_alert_is_structured_and_posted(monkeypatch, caplog) -> None:
    """The failure notifier logs one JSON alert and POSTs it to the alerts connection."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from types import SimpleNamespace

    from neurocyte_tasks.alerts import NeurocyteAlertNotifier

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/hook"
    monkeypatch.setenv(
        "AIRFLOW_CONN_NEUROCYTE_ALERTS", json.dumps({"conn_type": "http", "host": url})
    )
    ti = SimpleNamespace(
        dag_id="neurocyte_ingest", task_id="extract", run_id="r1", map_index=3, try_number=4
    )
    with caplog.at_level("ERROR", logger="neurocyte.tasks"):
        NeurocyteAlertNotifier()({"ti": ti, "exception": OSError("S3 unreachable")})
    thread.join(timeout=10)
    server.server_close()
    assert received == [
        {
            "event": "neurocyte.task_failed",
            "dag_id": "neurocyte_ingest",
            "task_id": "extract",
            "run_id": "r1",
            "map_index": 3,
            "try_number": 4,
            "error": "OSError: S3 unreachable",
        }
    ]
    assert any(r.getMessage().startswith("ALERT {") for r in caplog.records)


def test_docker_compose_is_consistent() -> None:
    """YAML loads; every command exists; no literal secrets; every ${VAR} is templated."""
    import re
    import subprocess

    import yaml

    text = (REPO_ROOT / "docker-compose.yml").read_text()
    doc = yaml.safe_load(text)
    example = (REPO_ROOT / ".env.example").read_text()
    declared = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, re.M))
    used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", text))
    assert used <= declared, f"not in .env.example: {sorted(used - declared)}"
    # .env.example holds no secret values (only names, buckets and roles)
    for line in example.splitlines():
        key, _, value = line.partition("=")
        if any(w in key for w in ("PASSWORD", "SECRET", "KEY")):
            assert value == "", f".env.example sets {key}"
    airflow_cmds = subprocess.run(
        [sys.executable, "-m", "airflow", "--help"], capture_output=True, text=True, check=True
    ).stdout
    services = doc["services"]
    for name in (
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
    ):
        assert name in services, name
        sub = services[name]["command"].split()[0]
        assert re.search(rf"^\s+{re.escape(sub)}\s", airflow_cmds, re.M), f"{name}: airflow {sub}"
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for key, value in env.items():
        secret = any(w in key for w in ("PASSWORD", "SECRET", "FERNET", "JWT"))
        if secret and not key.endswith("_FILE"):
            assert str(value).startswith("${"), f"literal secret in {key}"
        for match in re.finditer(r"://([^:/@\s]+):([^@\s]+)@", str(value)):
            assert match.group(2).startswith("${"), f"literal password in {key}"
    for key in (
        "NEUROCYTE_AWS_CONN_ID",
        "NEUROCYTE_LANDING",
        "NEUROCYTE_LAKE",
        "NEUROCYTE_CATALOG",
    ):
        assert key in env, key
    conn = env["AIRFLOW_CONN_" + env["NEUROCYTE_AWS_CONN_ID"].upper()]
    assert '"conn_type": "aws"' in conn and "endpoint_url" in conn
    assert "${MINIO_ROOT_PASSWORD" in conn
    assert "redis-server" in " ".join(services["redis"]["command"])
    assert "--requirepass" in services["redis"]["command"]


def test_parsing_the_ingest_dag_does_not_import_the_http_provider() -> None:
    """Every task process parses the DAG: the alert notifier imports aiohttp only to send."""
    import subprocess

    code = (
        "import runpy, sys; runpy.run_path('dags/neurocyte_ingest.py'); "
        "print(sorted(m for m in sys.modules if m.startswith(('aiohttp', "
        "'airflow.providers.http.hooks', 'airflow.providers.http.notifications'))))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "dags")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
