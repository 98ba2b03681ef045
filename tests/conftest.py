"""Shared fixtures: paths to the read-only sample data beside the clone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
