"""Scale-out within a plate: a plate staged in well groups commits the rows of a whole ingest."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable

from tests.conftest import REPO_ROOT
from tests.helpers import query
from transforms import spec
from transforms.lake import delta as lakeio
from transforms.pipeline import commit_batch, ingest_paths, plate_parts, stage_file

DAGS = REPO_ROOT / "dags"

MEA_TABLES = (
    spec.MEA_RECORDINGS,
    spec.MEA_SPIKES,
    spec.MEA_ELECTRODE_METRICS,
    spec.MEA_WELL_METRICS,
    spec.MEA_BURSTS,
    spec.MEA_NETWORK_BURSTS,
)
SPLIT_MB = 10.0  # the 24-well, 4 s plate is ~37 MiB: 4 well groups
A1, B2 = "a1" * 16, "b2" * 16  # ingest ids (hex)


@pytest.fixture(scope="module")
def plate(tmp_path_factory: pytest.TempPathFactory):
    from transforms.synth.plate import generate_plate

    out = tmp_path_factory.mktemp("plate")
    return generate_plate(out, n_wells=24, duration_s=4.0, snr=8.0, seed=5, write_nwb=True)


@pytest.fixture(scope="module")
def landing(plate, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plate (raw and NWB) with its experiment log in a landing folder."""
    root = tmp_path_factory.mktemp("landing")
    folder = root / "labS" / "ctl" / "DIV14"
    folder.mkdir(parents=True)
    for src in (plate.raw_path, plate.nwb_path, plate.plate_map_path):
        shutil.copyfile(src, folder / src.name)
    return root


def _file(landing: Path, suffix: str) -> Path:
    (path,) = (landing / "labS" / "ctl" / "DIV14").glob(f"*{suffix}")
    return path


def published_rows(lake: Path) -> dict[str, list[tuple]]:
    """Every MEA table's published rows, sorted, without the attempt's id."""
    out = {}
    for table in MEA_TABLES:
        rows = query(lake, f"SELECT * EXCLUDE (ingest_id) FROM {table}")
        out[table] = sorted(rows, key=repr)
    return out


@pytest.fixture(scope="module")
def whole_rows(landing: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Both plates ingested whole: the reference rows."""
    lake = tmp_path_factory.mktemp("whole") / "lake"
    summary = ingest_paths(
        [_file(landing, ".raw"), _file(landing, ".nwb")], lake=str(lake), landing=str(landing)
    )
    assert summary.counts() == {"published": 2}, [o.reason for o in summary.outcomes]
    rows = published_rows(lake)
    assert all(rows[t] for t in MEA_TABLES if t != spec.MEA_NETWORK_BURSTS)
    return rows


def test_well_groups_cut_on_filter_lanes_only() -> None:
    from transforms.pipeline.decode_mea import well_groups
    from transforms.recording.plate import LAYOUTS

    layout = LAYOUTS[24]  # 16 electrodes per well: a 64-channel lane is 4 wells
    groups = well_groups(layout.electrodes, layout, 4)
    assert [len(g.wells) for g in groups] == [8, 4, 8, 4] or [len(g.wells) for g in groups] == [
        4,
        8,
        4,
        8,
    ]
    assert sum((g.wells for g in groups), ()) == layout.wells
    assert all(len(g.electrodes) % 64 == 0 for g in groups)
    # more parts than lanes: the extra parts are empty, nothing is lost
    many = well_groups(layout.electrodes, layout, 10)
    assert len(many) == 10 and sum((g.wells for g in many), ()) == layout.wells
    assert sum(1 for g in many if g.wells) == 6
    # a wiring interleaving the wells leaves no cut: one group, the whole plate
    interleaved = tuple(
        f"{w}_{c}{r}" for (c, r) in layout.electrode_positions for w in layout.wells
    )
    groups = well_groups(interleaved, layout, 4)
    assert groups[0].electrodes == interleaved and not any(g.wells for g in groups[1:])


@pytest.mark.parametrize("suffix", [".raw", ".nwb"])
def test_split_plate_publishes_the_rows_of_a_whole_ingest(
    tmp_path: Path, landing: Path, whole_rows: dict, suffix: str
) -> None:
    path = _file(landing, suffix)
    n = plate_parts(path.name, path.stat().st_size, split_plate_mb=SPLIT_MB)
    assert n == 4 if suffix == ".raw" else n >= 1
    lake = tmp_path / "lake"
    summary = ingest_paths(
        [path], lake=str(lake), landing=str(landing), split_plate_mb=0.01, max_parts=4
    )
    (o,) = summary.outcomes
    assert o.status == "published" and o.n_parts == 4, o.reason
    log = query(lake, "SELECT status, count(*) FROM ingest_log GROUP BY ALL")
    assert log == [("published", 1)]
    mine = published_rows(lake)
    ref = _rows_of(whole_rows, o.file_id, lake)
    for table in MEA_TABLES:
        assert mine[table] == ref[table], table
    assert not list((lake / "_staging").glob("*/*")), "staged parts left behind"


def test_split_plate_committed_slice_by_slice_publishes_the_same_rows(
    tmp_path: Path, landing: Path, whole_rows: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts bigger than a slice are read back batch by batch, cast to the parts'
    common schema, gated and appended slice by slice: the same rows as one piece."""
    from transforms.pipeline import commit

    spikes = len(whole_rows[spec.MEA_SPIKES]) // 2  # the reference lake holds two plates
    slice_rows = max(8, spikes // 10)  # each of the 4 parts' spikes spans slices
    monkeypatch.setattr(commit, "SLICE_ROWS", slice_rows)
    path = _file(landing, ".raw")
    lake = tmp_path / "lake"
    summary = ingest_paths(
        [path], lake=str(lake), landing=str(landing), split_plate_mb=0.01, max_parts=4
    )
    (o,) = summary.outcomes
    assert o.status == "published" and o.n_parts == 4, o.reason
    assert o.rows[spec.MEA_SPIKES] == spikes > 4 * slice_rows
    mine = published_rows(lake)
    ref = _rows_of(whole_rows, o.file_id, lake)
    for table in MEA_TABLES:
        assert mine[table] == ref[table], table
    appends = [
        h
        for h in DeltaTable(spec.table_uri(spec.MEA_SPIKES, str(lake))).history()
        if h.get("neurocyte.operation") == f"append {spec.MEA_SPIKES}"
    ]
    assert len(appends) >= 10  # one commit per slice


def _col(lake: Path, table: str, name: str) -> int:
    cols = [r[0] for r in query(lake, f"SELECT column_name FROM (DESCRIBE {table})")]
    return cols.index(name)


def _rows_of(rows: dict, file_id: str, lake: Path) -> dict[str, list[tuple]]:
    """The reference rows of one file (the reference lake holds two)."""
    out = {}
    for table, table_rows in rows.items():
        i = _col(lake, table, "file_id")
        out[table] = [r for r in table_rows if r[i] == file_id]
    return out


def test_missing_part_fails_the_file_and_publishes_nothing(tmp_path: Path, landing: Path) -> None:
    path = _file(landing, ".raw")
    lake = tmp_path / "lake"
    staged = [
        stage_file(path, lake=str(lake), landing=str(landing), part=k, n_parts=4, ingest_id=A1)
        for k in (0, 1, 3)
    ]
    assert [o.status for o in staged] == ["staged"] * 3
    assert lakeio.read_table(spec.INGEST_LOG, lake=str(lake)) is None  # parts log nothing
    (o,) = commit_batch(staged, lake=str(lake))
    assert o.status == "failed"
    assert (
        o.reason
        == f"{path.name}: split plate not committed: well group 3 of 4 missing (never staged)"
    )
    log = lakeio.read_table(spec.INGEST_LOG, lake=str(lake))
    assert log is not None and log.num_rows == 1
    assert log["status"].to_pylist() == ["failed"] and log["reason"].to_pylist() == [o.reason]
    for table in MEA_TABLES:
        rows = lakeio.read_table(table, lake=str(lake))
        assert rows is None or rows.num_rows == 0, table
    assert not (lake / "_staging" / A1).exists()

    # a part that failed to stage fails the file the same way
    ok = [
        stage_file(path, lake=str(lake), landing=str(landing), part=k, n_parts=2, ingest_id=B2)
        for k in (0,)
    ]
    gone = stage_file(tmp_path / "nowhere.raw", lake=str(lake), part=1, n_parts=2, ingest_id=B2)
    (o,) = commit_batch([*ok, gone], lake=str(lake))
    assert (
        o.status == "failed"
        and "well group 2 of 2 failed" in o.reason
        and "no such file" in o.reason
    )
    for table in MEA_TABLES:
        rows = lakeio.read_table(table, lake=str(lake))
        assert rows is None or rows.num_rows == 0, table


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import run_dag

    home = tmp_path_factory.mktemp("airflow")
    run_dag.prepare_airflow_home(home)
    return home


def test_dag_splits_a_large_plate_over_extract_tasks(
    airflow_home: Path, tmp_path: Path, monkeypatch, landing: Path, whole_rows: dict
) -> None:
    from airflow.dag_processing.dagbag import BundleDagBag

    lake = tmp_path / "lake"
    monkeypatch.setenv("NEUROCYTE_LAKE", str(lake))
    monkeypatch.setenv("NEUROCYTE_LANDING", str(landing))
    raw, nwb = _file(landing, ".raw"), _file(landing, ".nwb")
    n_raw = plate_parts(raw.name, raw.stat().st_size, split_plate_mb=SPLIT_MB)
    n_nwb = plate_parts(nwb.name, nwb.stat().st_size, split_plate_mb=SPLIT_MB)
    assert n_raw == 4

    dag = BundleDagBag(dag_folder=DAGS, bundle_path=DAGS).get_dag("neurocyte_ingest")
    dagrun = dag.test(run_conf={"settle_s": 0, "max_wait_s": 0, "split_plate_mb": SPLIT_MB})
    assert str(dagrun.state) == "success"
    tis = dagrun.get_task_instances()
    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in tis}
    extracts = [k for k in states if k[0] == "extract"]
    assert len(extracts) == n_raw + n_nwb and all(states[k] == "success" for k in extracts), states
    assert states[("publish", -1)] == "success", states

    log = query(lake, "SELECT file_name, status FROM ingest_log ORDER BY ALL")
    assert log == sorted([(raw.name, "published"), (nwb.name, "published")])
    assert published_rows(lake) == whole_rows
