"""The CLI and the ingest DAG (real ``dag.test()`` on SQLite) follow one identity rule.

The same landing zone is ingested into two lakes, one by ``neurocyte_ingest``, one by
``ingest_paths`` (what ``neurocyte ingest`` runs); after each change to the metadata both
must attempt exactly the same files with the same outcomes.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest

from tests.conftest import ABF_DIR, REPO_ROOT
from tests.reliability import small_abf
from transforms import spec
from transforms.lake import delta as lakeio
from transforms.pipeline import ingest_paths

DAGS = REPO_ROOT / "dags"
sys.path.insert(0, str(REPO_ROOT / "scripts"))


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory):
    import run_dag

    run_dag.prepare_airflow_home(tmp_path_factory.mktemp("airflow"))  # before Airflow loads
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=DAGS, bundle_path=DAGS)


def _attempts_since(lake: Path, seq: int) -> tuple[dict[str, str], int]:
    """Files attempted (published, quarantined, failed) after log_seq ``seq``."""
    log = lakeio.read_table(spec.INGEST_LOG, lake=str(lake))
    if log is None:
        return {}, seq
    new = log.filter(pc.greater(log["log_seq"], seq))
    out = {
        name: status
        for name, status in zip(
            new["file_name"].to_pylist(), new["status"].to_pylist(), strict=True
        )
        if status in ("published", "quarantined", "failed")
    }
    return out, int(pc.max(log["log_seq"]).as_py() or seq)


def _sidecar(path: Path, **values: str) -> None:
    path.with_name(path.name + spec.SIDECAR_SUFFIX).write_text(json.dumps(values))


@pytest.mark.slow  # 40 s: three DAG runs
def test_cli_and_dag_attempt_the_same_files(tmp_path: Path, monkeypatch, dagbag) -> None:
    landing = tmp_path / "landing"
    lake_dag, lake_cli = tmp_path / "lake_dag", tmp_path / "lake_cli"
    folder = landing / "labA" / "WT" / "P14"
    cells = [small_abf(folder / f"cell{i}.abf", seed=40 + i) for i in range(2)]
    bad = Path(shutil.copyfile(ABF_DIR / "opto_aps_bad_units.abf", folder / "opto.abf"))
    (folder / "broken.abf").write_bytes(b"ABF2" + b"\0" * 100)
    monkeypatch.setenv(spec.ENV_LAKE, str(lake_dag))
    monkeypatch.setenv(spec.ENV_LANDING, str(landing))
    dag = dagbag.get_dag("neurocyte_ingest")
    conf = {"settle_s": 0, "max_wait_s": 0}
    seq = {"dag": 0, "cli": 0}

    def both() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        run = dag.test(run_conf=conf)
        assert str(run.state) in {"success", "skipped"}
        by_dag, seq["dag"] = _attempts_since(lake_dag, seq["dag"])
        summary = ingest_paths([landing], lake=str(lake_cli), landing=str(landing))
        by_cli, seq["cli"] = _attempts_since(lake_cli, seq["cli"])
        return by_dag, by_cli, {o.file_name: o.status for o in summary.outcomes}

    by_dag, by_cli, _ = both()
    expected = {
        "cell0.abf": "published",
        "cell1.abf": "published",
        "opto.abf": "quarantined",
        "broken.abf": "failed",
    }
    assert by_dag == by_cli == expected

    # nothing changed: neither attempts anything; the CLI says why, file by file
    by_dag, by_cli, cli = both()
    assert by_dag == by_cli == {}
    assert cli == {
        "cell0.abf": "duplicate",
        "cell1.abf": "duplicate",
        "opto.abf": "not_retried",
        "broken.abf": "not_retried",
    }

    # a corrected sidecar re-publishes that file; a quarantined file whose sidecar
    # changed is retried; a failed file uploaded again, whole, is retried
    _sidecar(cells[1], notes="corrected")
    _sidecar(bad, notes="gain checked")
    small_abf(folder / "broken.abf", seed=49)
    by_dag, by_cli, cli = both()
    assert (
        by_dag
        == by_cli
        == {
            "cell1.abf": "published",
            "opto.abf": "quarantined",
            "broken.abf": "published",
        }
    )
    assert cli["cell0.abf"] == "duplicate"

    # both lakes publish the same metadata
    for lake in (lake_dag, lake_cli):
        log = lakeio.read_table(spec.INGEST_LOG, lake=str(lake))
        assert log is not None
        published = {
            (n, d)
            for n, s, d in zip(
                log["file_name"].to_pylist(),
                log["status"].to_pylist(),
                log["metadata_digest"].to_pylist(),
                strict=True,
            )
            if s == "published"
        }
        assert len(published) == 4 and all(d and len(d) == 64 for _, d in published)
