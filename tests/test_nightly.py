"""Nightly upkeep: stale re-ingest after a transform version bump, compaction, vacuum."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers import land, query
from transforms import spec
from transforms.lake import delta as lakeio
from transforms.lake import maintenance
from transforms.pipeline import ingest_paths

DAGS = REPO_ROOT / "dags"

sys.path.insert(0, str(REPO_ROOT / "scripts"))


def _files(table: str, lake: Path) -> int:
    return len(lakeio.snapshot_files(table, lake=str(lake))[1])


def test_stale_files_after_version_bump(tmp_path: Path, monkeypatch) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    path = land(landing, "171116sh_0018.abf")
    ingest_paths([landing], lake=str(lake), landing=str(landing), publish=False)
    assert maintenance.stale_files(lake=str(lake)) == []
    stored = spec.TRANSFORM_VERSION
    monkeypatch.setattr(spec, "TRANSFORM_VERSION", "9.9.9")
    stale = maintenance.stale_files(lake=str(lake))
    assert [(s.file_name, s.transform_version, s.exists) for s in stale] == [
        ("171116sh_0018.abf", stored, True)
    ]
    assert stale[0].path == str(path.resolve())


def test_compaction_turns_many_small_files_into_few(tmp_path: Path) -> None:
    import pyarrow as pa

    lake = tmp_path / "lake"
    for i in range(30):  # 30 commits of one row each: 30 small files
        lakeio.append_log(
            pa.Table.from_pylist(
                [
                    {
                        "file_id": f"{i:064x}",
                        "ingest_id": f"{i:032x}",
                        "source_path": f"/x/{i}.abf",
                        "file_name": f"{i}.abf",
                        "status": "failed",
                        "transform_version": spec.TRANSFORM_VERSION,
                        "started_at": pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py(),
                        "finished_at": pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py(),
                    }
                ],
                schema=lakeio.INGEST_LOG_SCHEMA,
            ),
            lake=str(lake),
        )
    before = _files(spec.INGEST_LOG, lake)
    assert before == 30
    dry = maintenance.maintain_table(spec.INGEST_LOG, lake=str(lake))  # dry_run default
    assert dry.dry_run and dry.files_after == 30 and _files(spec.INGEST_LOG, lake) == 30
    rep = maintenance.maintain_table(spec.INGEST_LOG, lake=str(lake), mode="zorder", dry_run=False)
    assert rep.files_before == 30
    assert rep.files_after == 1 == _files(spec.INGEST_LOG, lake)
    assert rep.checkpoint
    assert rep.vacuumed == 0  # removed files are kept for the retention period
    log = lakeio.read_table(spec.INGEST_LOG, lake=str(lake))
    assert log is not None and log.num_rows == 30
    print(f"compaction: {rep.files_before} -> {rep.files_after} files")


def test_zorder_never_uses_partition_columns() -> None:
    for table in spec.ALL_TABLES:
        assert not set(maintenance.zorder_columns(table)) & set(spec.PARTITION_COLUMNS)


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import run_dag

    home = tmp_path_factory.mktemp("airflow")
    run_dag.prepare_airflow_home(home)
    return home


def test_nightly_dag_reingests_after_version_bump_and_compacts(
    airflow_home: Path, tmp_path: Path, monkeypatch
) -> None:
    from airflow.dag_processing.dagbag import BundleDagBag

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    land(landing, "171116sh_0018.abf")
    land(landing, "File_axon_5.abf")
    monkeypatch.setenv("NEUROCYTE_LAKE", str(lake))
    monkeypatch.setenv("NEUROCYTE_LANDING", str(landing))
    ingest_paths([landing / "labA/WT/P14/171116sh_0018.abf"], lake=str(lake), landing=str(landing))
    old = dict(query(lake, "SELECT file_name, transform_version FROM icephys_recordings"))
    assert old == {"171116sh_0018.abf": spec.TRANSFORM_VERSION}
    files_before = _files(spec.INGEST_LOG, lake)

    # The code moves on: the nightly run (dag.test runs tasks in this process)
    # must re-ingest the stale file and pick up the one never ingested.
    monkeypatch.setattr(spec, "TRANSFORM_VERSION", "0.2.0-test")
    dag = BundleDagBag(dag_folder=DAGS, bundle_path=DAGS).get_dag("neurocyte_nightly")
    run = dag.test(run_conf={"settle_s": 0, "batch_size": 1, "retention_hours": 168})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    rows = query(lake, "SELECT file_name, transform_version FROM icephys_recordings ORDER BY 1")
    assert rows == [("171116sh_0018.abf", "0.2.0-test"), ("File_axon_5.abf", "0.2.0-test")]
    # superseded rows are pruned, and the tables were compacted after the run
    assert lakeio.count_rows("icephys_sweeps", lake=str(lake)) == 17 + 9
    assert maintenance.stale_files(lake=str(lake)) == []
    assert _files(spec.INGEST_LOG, lake) == 1 < files_before + 2
