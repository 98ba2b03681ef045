"""A lake copied or moved with its catalog answers the README's queries from anywhere."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.conftest import MEA_DIR, REPO_ROOT
from tests.helpers import land
from transforms import spec
from transforms.lake.catalog import CATALOG_DIR_VARIABLE, connect
from transforms.pipeline import ingest_paths

SPIKE_LIST = MEA_DIR / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"
EXP_LOG = MEA_DIR / "exampleRecording_1012016_plate1_expLog.csv"


def readme_queries() -> list[str]:
    """The README's example questions, the Python example's query and the first CLI query."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"Example questions:\s*```sql\n(.*?)```", readme, re.S)
    python = re.search(r'con\.sql\("""(.*?)"""\)', readme, re.S)
    cli = re.search(r'neurocyte sql "(SELECT [^"]+)"', readme)
    if block is None or python is None or cli is None:
        pytest.fail("README's query examples not found")
    queries = [q.strip() for q in block.group(1).split(";")]
    queries = ["\n".join(ln for ln in q.splitlines() if not ln.startswith("--")) for q in queries]
    return [q for q in queries if q.strip()] + [python.group(1).strip(), cli.group(1)]


def answers(catalog: Path) -> list[list[tuple]]:
    con = duckdb.connect(str(catalog), read_only=True)  # plain DuckDB, nothing set
    try:  # rows as a sorted list: not every example query orders its rows
        return [sorted(con.execute(q).fetchall(), key=repr) for q in readme_queries()]
    finally:
        con.close()


@pytest.fixture
def original(tmp_path: Path) -> tuple[Path, list[list[tuple]]]:
    root = tmp_path / "orig"
    landing = root / "landing"
    land(landing, "File_axon_5.abf", condition="KO", timepoint="P21")
    land(landing, "171116sh_0018.abf", condition="WT", timepoint="P21")
    bad = landing / "labA" / "KO" / "P21" / "truncated.abf"
    bad.write_bytes((landing / "labA" / "KO" / "P21" / "File_axon_5.abf").read_bytes()[:600])
    lake = root / "lake"
    assert ingest_paths([landing], lake=str(lake), landing=str(landing)).counts() == {
        "published": 2,
        "failed": 1,
    }
    summary = ingest_paths([SPIKE_LIST], lake=str(lake), lab="labM", plate_map=EXP_LOG)
    assert summary.counts() == {"published": 1}
    before = answers(lake / spec.CATALOG_FILE)
    assert all(before), "every README query answers on the original lake"
    return lake, before


def test_moved_lake_answers_readme_queries_from_another_directory(
    original: tuple[Path, list[list[tuple]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lake, before = original
    moved = tmp_path / "elsewhere" / "deep" / "lake"
    shutil.copytree(lake, moved)
    shutil.rmtree(lake.parent)  # the original is gone
    cwd = tmp_path / "somewhere_else"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # neither the old nor the new lake directory
    catalog = moved / spec.CATALOG_FILE

    con = duckdb.connect(str(catalog), read_only=True)
    definitions = " ".join(r[0] for r in con.execute("SELECT sql FROM duckdb_views()").fetchall())
    con.close()
    assert str(lake) not in definitions  # no absolute path of the old place
    assert answers(catalog) == before  # plain DuckDB, other CWD
    rel_catalog = Path("..") / "elsewhere" / "deep" / "lake" / spec.CATALOG_FILE
    assert answers(rel_catalog) == before  # opened by a relative path

    # neurocyte sql: the same answer as plain DuckDB
    query = readme_queries()[0]
    out = subprocess.run(
        [sys.executable, "-m", "transforms.cli", "sql", f"--lake={moved}", "--format=csv", query],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    rows = list(csv.reader(io.StringIO(out.stdout)))[1:]
    assert len(rows) == len(before[0]) > 0
    assert sorted(r[:2] for r in rows) == sorted([str(v) for v in r[:2]] for r in before[0])

    # the DuckDB CLI (a dev dependency), read-only, from another directory
    cli = Path(sys.executable).parent / "duckdb"
    for query, expected in zip(readme_queries(), before, strict=True):
        out = subprocess.run(
            [str(cli), "-readonly", "-csv", "-noheader", str(rel_catalog), "-c", query],
            capture_output=True,
            text=True,
            check=True,
        )
        got = list(csv.reader(io.StringIO(out.stdout)))
        assert len(got) == len(expected), (query, out.stdout, out.stderr)

    # the library connection sets the directory explicitly
    con = connect(lake=str(moved))
    assert con.execute("SELECT count(*) FROM mea_well_metrics").fetchone() == (48,)
    con.close()


def test_attached_catalog_names_the_setting_then_answers(
    original: tuple[Path, list[list[tuple]]], tmp_path: Path
) -> None:
    lake, before = original
    moved = tmp_path / "copy"
    shutil.copytree(lake, moved)
    shutil.rmtree(lake)
    con = duckdb.connect()  # in memory: no catalog file to find the lake from
    con.execute(f"ATTACH '{moved / spec.CATALOG_FILE}' AS lake (READ_ONLY)")
    con.execute("USE lake")
    with pytest.raises(duckdb.Error, match=CATALOG_DIR_VARIABLE):
        con.execute("SELECT count(*) FROM mea_well_metrics").fetchall()
    con.execute(f"SET VARIABLE {CATALOG_DIR_VARIABLE} = ?", [str(moved)])
    after = [sorted(con.execute(q).fetchall(), key=repr) for q in readme_queries()]
    assert after == before
    con.close()
