"""Shared fixtures: paths to the read-only sample data beside the clone."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Airflow binds its metadata DB when first imported. Every in-process use in this test
# session binds one DB, here, whichever test imports Airflow first (a plugin test, a
# DAG test); ``scripts/run_dag.prepare_airflow_home`` migrates it (it only sets the DB
# URL where none is set). Without this, a test that imports the plugin first binds
# ~/airflow's empty DB and a later in-process DAG run finds no tables. Tests that start
# Airflow processes give them their own DB explicitly.
_SESSION_AIRFLOW = Path(tempfile.mkdtemp(prefix="neurocyte-test-airflow-"))
os.environ.setdefault("AIRFLOW_HOME", str(_SESSION_AIRFLOW))
os.environ.setdefault(
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_SESSION_AIRFLOW}/airflow.db"
)

# The QC gate runs in-process in tests (hermetic, and a process's memory figures
# include its gate); tests/test_gate_worker.py turns the long-lived worker on.
os.environ.setdefault("NEUROCYTE_QC_WORKER", "off")

REPO_ROOT = Path(__file__).resolve().parents[1]
#: ``../shared`` beside the clone (CI puts it there); NEUROCYTE_SHARED overrides.
SHARED = Path(os.environ.get("NEUROCYTE_SHARED", REPO_ROOT.parent / "shared")).resolve()
ABF_DIR = SHARED / "data" / "abf"
NWB_DIR = SHARED / "data" / "nwb"
MEA_DIR = SHARED / "data" / "mea"
ABF_FILES = sorted(ABF_DIR.glob("*.abf"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"sample data not found at {SHARED} (set NEUROCYTE_SHARED)")
    return SHARED


@pytest.fixture(scope="module")
def airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Airflow's metadata DB prepared before a test imports the plugin (which imports
    Airflow, binding its DB): a later in-process DAG test would otherwise find no tables
    (see tests/airflow_env.py). Modules using the plugin name it in ``pytestmark``."""
    from tests.airflow_env import prepare

    return prepare(tmp_path_factory.mktemp("airflow"))
