"""Point in-process Airflow at a migrated metadata DB before anything imports it.

Airflow binds its configuration and metadata DB when it is first imported. A test
that imports it only for the Neurocyte plugin would otherwise bind the default
``~/airflow`` (no tables), and a later test running a DAG in-process in the same
session (``scripts/run_dag.prepare_airflow_home``) would query that empty DB. Test
modules using the plugin call :func:`prepare` from a module fixture first, as the
DAG tests do.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def prepare(home: Path) -> Path:
    """``run_dag.prepare_airflow_home(home)``: AIRFLOW_HOME, DAGs, plugins, a migrated DB."""
    scripts = str(REPO_ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    import run_dag

    run_dag.prepare_airflow_home(home)
    return home
