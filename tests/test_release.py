"""Releases: a curated selection frozen, reproduced after new ingests, opened elsewhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from tests.helpers import land, query
from transforms.cli import main
from transforms.errors import LakeError, SpecError
from transforms.pipeline import ingest_paths
from transforms.serve.release import make_release, reproduce_release

#: the plugin imports Airflow: its DB is prepared first (tests/conftest.airflow_db)
pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    landing = tmp_path / "landing"
    land(landing, "File_axon_5.abf", lab="labA", condition="KO", timepoint="P21")
    land(landing, "171116sh_0018.abf", lab="labA", condition="WT", timepoint="P21")
    land(landing, "File_axon_6.abf", lab="labB", condition="WT", timepoint="P14")
    bad = landing / "labA" / "WT" / "P21" / "broken.abf"
    bad.write_bytes(b"\x00" * 700)  # a failed file: never part of a release
    lake = tmp_path / "lake"
    counts = ingest_paths([landing], lake=str(lake), landing=str(landing)).counts()
    assert counts == {"published": 3, "failed": 1}
    return lake


def test_release_reproduces_after_new_ingests_and_travels(
    lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["release", "labA-v1", "--where", "lab = 'labA'", "--lake", str(lake)])
    assert code == 0, capsys.readouterr()
    rel = lake / "releases" / "labA-v1"
    manifest = json.loads((rel / "manifest.json").read_text())
    want = {r[0] for r in query(lake, "SELECT file_id FROM icephys_recordings WHERE lab = 'labA'")}
    assert set(manifest["file_ids"]) == want and len(want) == 2
    assert manifest["delta_versions"]["ingest_log"] >= 0
    assert manifest["curation"]["status"] == "published"
    for rel_path, entry in manifest["files"].items():
        assert (rel / rel_path).stat().st_size == entry["bytes"]
    assert "tables/icephys_sweeps.parquet" in manifest["reproducible"]
    nwb = sorted(k for k in manifest["files"] if k.startswith("dandiset/"))
    assert len(nwb) == 2 and manifest["nwb_skipped"] == {}
    fid = min(want)
    cell = query(lake, "SELECT cell_id FROM icephys_recordings WHERE file_id = ?", [fid])[0][0]
    label = cell.replace("_", "-")
    assert f"dandiset/sub-{label}/sub-{label}_ses-{fid[:12]}_icephys.nwb" in nwb

    # new ingests into the selected lab (and a re-ingest of a selected file) ...
    landing = tmp_path / "landing"
    land(landing, "File_axon_7.abf", lab="labA", condition="KO", timepoint="P21")
    ingest_paths([landing / "labA"], lake=str(lake), landing=str(landing), force=True)
    assert len(query(lake, "SELECT * FROM icephys_recordings WHERE lab = 'labA'")) == 3
    # ... and the release still rebuilds bit for bit from its recorded versions
    got = reproduce_release("labA-v1", lake=str(lake))
    assert got == {k: manifest["files"][k]["sha256"] for k in manifest["reproducible"]}
    assert main(["release", "labA-v1", "--reproduce", "--lake", str(lake)]) == 0

    # the release opens anywhere with plain DuckDB
    moved = tmp_path / "elsewhere" / "labA-v1"
    shutil.copytree(rel, moved)
    con = duckdb.connect(str(moved / "catalog.duckdb"), read_only=True)
    ids = {r[0] for r in con.execute("SELECT file_id FROM icephys_recordings").fetchall()}
    n_sweeps = con.execute("SELECT count(*) FROM icephys_sweeps").fetchone()
    con.close()
    assert ids == want
    assert n_sweeps is not None and n_sweeps[0] == manifest["rows"]["icephys_sweeps"] > 0


def test_release_refuses_overwrites_and_empty_selections(lake: Path) -> None:
    make_release("r1", where="condition = 'WT'", lake=str(lake))
    with pytest.raises(LakeError, match="never overwritten"):
        make_release("r1", where="condition = 'WT'", lake=str(lake))
    with pytest.raises(SpecError, match="selects no published recording"):
        make_release("r2", where="lab = 'nobody'", lake=str(lake))
    with pytest.raises(SpecError, match="one boolean expression"):
        make_release("r3", where="true; DROP VIEW published", lake=str(lake))
    with pytest.raises(SpecError, match="--where"):
        make_release("r4", where="read_text('/etc/passwd') IS NOT NULL", lake=str(lake))
    with pytest.raises(SpecError, match="invalid"):
        make_release("../escape", where="true", lake=str(lake))


def test_page_lists_releases_for_download(lake: Path) -> None:
    import hashlib
    import importlib
    import sys

    from fastapi.testclient import TestClient

    from tests.conftest import REPO_ROOT

    rel = make_release("wt", where="condition = 'WT'", lake=str(lake))
    sys.path.insert(0, str(REPO_ROOT / "plugins"))
    app = importlib.import_module("neurocyte_plugin").create_app(str(lake), require_auth=False)
    with TestClient(app) as client:
        (listed,) = client.get("/api/releases").json()["releases"]
        assert listed["name"] == "wt" and listed["n_recordings"] == len(rel.manifest["file_ids"])
        entry = next(f for f in listed["files"] if f["path"] == "tables/icephys_sweeps.parquet")
        got = client.get("/releases/wt/tables/icephys_sweeps.parquet")
        assert got.status_code == 200
        assert hashlib.sha256(got.content).hexdigest() == entry["sha256"]
        assert client.get("/releases/wt/manifest.json").json()["name"] == "wt"
        assert client.get("/releases/wt/../catalog.duckdb").status_code == 404
        assert client.get("/releases/wt/tables/nothing.parquet").status_code == 404
        assert client.get("/releases/nope/manifest.json").status_code == 404
