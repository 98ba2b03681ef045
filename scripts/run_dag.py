"""Run a Neurocyte DAG once, in-process, with ``dag.test()`` (no scheduler).

Used by ``make demo`` and the DAG tests. The Airflow home, its SQLite
metadata DB and the DAG folder are set up by the caller's environment
(``AIRFLOW_HOME``); the metadata DB is migrated here if needed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def prepare_airflow_home(home: Path) -> None:
    """Point Airflow at ``home`` (SQLite) and the project's DAGs; migrate the DB."""
    home.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home}/airflow.db")
    if not (home / ".migrated").exists():
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (home / ".migrated").touch()


def run(dag_id: str, *, conf: dict | None = None) -> str:
    """Parse the DAG folder, run ``dag_id`` once with ``dag.test()``; return the state."""
    from airflow.dag_processing.dagbag import BundleDagBag

    # As Airflow's DAG processor loads a bundle: its folder on sys.path, so the DAG
    # files import their task package (dags/neurocyte_tasks) by name.
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    bag = BundleDagBag(dag_folder=folder, bundle_path=folder)
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise SystemExit(f"no DAG {dag_id!r} in {os.environ['AIRFLOW__CORE__DAGS_FOLDER']}")
    dagrun = dag.test(run_conf=conf)
    return str(dagrun.state)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dag_id")
    parser.add_argument("--airflow-home", default=os.environ.get("AIRFLOW_HOME", "airflow_home"))
    parser.add_argument("--conf", default="{}", help="JSON run conf / params")
    args = parser.parse_args()
    import json

    prepare_airflow_home(Path(args.airflow_home).resolve())
    state = run(args.dag_id, conf=json.loads(args.conf))
    print(f"dag run state: {state}")
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
