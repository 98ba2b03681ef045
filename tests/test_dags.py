"""DAG integrity and an end-to-end run of neurocyte_ingest with dag.test() on SQLite."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers import land, query

sys.path.insert(0, str(REPO_ROOT / "scripts"))


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import run_dag

    home = tmp_path_factory.mktemp("airflow")
    run_dag.prepare_airflow_home(home)
    return home


@pytest.fixture(scope="module")
def dagbag(airflow_home: Path):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO_ROOT / "dags"))


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
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(REPO_ROOT / "dags")!r})
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

    # A second run finds nothing new: the sensor soft-fails, nothing changes.
    dagrun = dag.test(run_conf={"settle_s": 0, "max_wait_s": 0})
    assert str(dagrun.state) in {"success", "skipped"}
    assert query(lake, "SELECT count(*) FROM icephys_sweeps")[0][0] == 34
