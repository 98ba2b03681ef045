"""Read-only means read-only: the analyst's connection reads the lake's views and nothing else."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.conftest import MEA_DIR, REPO_ROOT
from tests.helpers import land
from tests.reliability import worker_env
from transforms import spec
from transforms.lake.catalog import connect
from transforms.pipeline import ingest_paths

SPIKE_LIST = MEA_DIR / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"
PLATE_MAP = MEA_DIR / "exampleRecording_1012016_plate1_expLog.csv"

#: The README's example queries (Querying section), each must still return rows.
README_QUERIES = [
    "SELECT condition, timepoint, avg(rheobase_pa) FROM icephys_cell_features GROUP BY ALL",
    "SELECT * FROM mea_well_metrics",
    """SELECT condition, timepoint, count(*) AS wells,
           avg(weighted_mean_firing_rate_hz) AS wmfr_hz, avg(sttc) AS sttc
       FROM mea_well_metrics GROUP BY ALL ORDER BY ALL""",
    """SELECT condition, timepoint, avg(weighted_mean_firing_rate_hz) AS wmfr_hz,
           stddev(weighted_mean_firing_rate_hz) AS sd_hz, count(*) AS wells
       FROM mea_well_metrics WHERE n_active_electrodes > 0
       GROUP BY ALL ORDER BY timepoint, condition""",
    """SELECT r.cell_id, s.condition, s.stim_amp_pa, s.avg_rate_hz
       FROM icephys_sweeps s JOIN icephys_recordings r USING (file_id) ORDER BY 1, 3""",
    "SELECT file_name, status, reason FROM ingest_log",
    "SELECT * FROM cells",
    "SELECT * FROM well_metrics_by_condition",
    "SELECT * FROM qc_summary",
    "SELECT * FROM published",
]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ro")
    landing, lake = root / "landing", root / "lake"
    land(landing, "171116sh_0018.abf")
    plate = landing / "labM" / "ctl" / "DIV3"
    plate.mkdir(parents=True)
    with gzip.open(SPIKE_LIST, "rt") as fh:
        (plate / "p_spike_list.csv").write_text("".join(next(fh) for _ in range(3000)))
    shutil.copyfile(PLATE_MAP, plate / "p_expLog.csv")
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert summary.counts() == {"published": 2}, [(o.file_name, o.reason) for o in summary.outcomes]
    return lake


def test_readme_queries_and_views_still_work(lake: Path) -> None:
    con = connect(lake=str(lake))
    try:
        for sql in README_QUERIES:
            assert con.execute(sql).fetchall(), sql
    finally:
        con.close()


@pytest.mark.parametrize(
    "stmt",
    [
        "COPY (SELECT 1 AS a) TO '{out}/out.csv'",
        "COPY (SELECT * FROM published) TO '{out}/out.parquet' (FORMAT parquet)",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_csv('/etc/*')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_text('{lake}/tables/../../../../../../etc/passwd')",
        "SELECT * FROM read_text('{lake}/catalog.duckdb')",
        "ATTACH '{out}/x.duckdb' AS x",
        "INSTALL httpfs",
        "LOAD httpfs",
        "EXPORT DATABASE '{out}/exported'",
        "SET enable_external_access = true",
        "SET allowed_paths = ['/etc/passwd']",
        "SET lock_configuration = false",
    ],
)
def test_the_connection_refuses_files_outside_its_views(
    lake: Path, tmp_path: Path, stmt: str
) -> None:
    sql = stmt.format(out=tmp_path, lake=lake)
    con = connect(lake=str(lake))
    try:
        with pytest.raises(duckdb.Error):
            con.execute(sql).fetchall()
        # still locked after the attempt
        with pytest.raises(duckdb.Error):
            con.execute("SELECT * FROM read_text('/etc/passwd')").fetchall()
    finally:
        con.close()
    assert list(tmp_path.iterdir()) == []


def _sql(lake: Path, query: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transforms.cli", "sql", "--lake", str(lake), query],
        capture_output=True,
        text=True,
        env=worker_env(),
        cwd=str(REPO_ROOT),
        timeout=120,
    )


def test_neurocyte_sql_cannot_write_nor_read_files(lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    written = _sql(lake, f"COPY (SELECT * FROM published) TO '{out}'")
    assert written.returncode != 0 and not out.exists()
    # a data file the views read may be read by them, but never overwritten
    (victim,) = [
        p
        for p in (lake / "tables" / spec.INGEST_LOG).glob("*.parquet")
        if not p.name.startswith(".")
    ][:1]
    before = victim.read_bytes()
    over = _sql(lake, f"COPY (SELECT 1 AS a) TO '{victim}' (FORMAT parquet, USE_TMP_FILE false)")
    assert over.returncode != 0 and "read-only" in over.stderr
    assert victim.read_bytes() == before
    leaked = _sql(lake, "SELECT * FROM read_text('/etc/passwd')")
    assert leaked.returncode != 0 and "root:" not in leaked.stdout + leaked.stderr
    ok = _sql(lake, "SELECT count(*) AS n FROM published")
    assert ok.returncode == 0 and "2" in ok.stdout, ok.stderr
