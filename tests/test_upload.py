"""Resumable uploads into a real landing zone, then a real ingest, followed by status.

The upload endpoint streams a real ABF file in chunks; a chunk sent at the wrong
offset (a client that lost track after a dropped connection) is refused with 409
and the size to resume at. The completed file lands with its sidecar in
``<landing>/<lab>/<condition>/<timepoint>/``; the same ingest the DAG runs publishes
it, and the upload's status then says published (or failed, with the reason).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ABF_DIR, REPO_ROOT
from transforms.lake.storage import sha256

REAL_ABF = ABF_DIR / "171116sh_0018.abf"


@pytest.fixture(scope="module", autouse=True)
def _airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Airflow's DB prepared before the plugin imports Airflow (see tests/airflow_env)."""
    from tests.airflow_env import prepare

    return prepare(tmp_path_factory.mktemp("airflow"))


def _client(lake: Path, landing: Path, role: str) -> Any:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.testclient import TestClient

    plugins = str(REPO_ROOT / "plugins")
    if plugins not in sys.path:
        sys.path.insert(0, plugins)
    app = importlib.import_module("neurocyte_plugin").create_app(str(lake), landing=str(landing))
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="uma", role=role)
    return TestClient(app)


def test_upload_resumes_lands_with_its_sidecar_and_is_followed_to_published(
    tmp_path: Path,
) -> None:
    from transforms.pipeline import ingest_paths

    lake, landing = tmp_path / "lake", tmp_path / "landing"
    data = REAL_ABF.read_bytes()
    half = len(data) // 2
    with _client(lake, landing, "op") as c:
        r = c.post(
            "/api/uploads",
            json={
                "file_name": REAL_ABF.name,
                "size_bytes": len(data),
                "lab": "labU",
                "condition": "KO",
                "timepoint": "P21",
                "sidecar": {"cell_id": "up-1", "species": "Mus musculus", "notes": ""},
            },
        )
        assert r.status_code == 201, r.text
        uid = r.json()["upload_id"]
        r = c.put(f"/api/uploads/{uid}", params={"offset": 0}, content=data[:half])
        assert r.status_code == 200 and r.json()["received_bytes"] == half
        assert r.json()["stage"] == "uploading"
        # the connection dropped; the client retries from 0: refused, told where to resume
        r = c.put(f"/api/uploads/{uid}", params={"offset": 0}, content=data)
        assert r.status_code == 409
        assert c.get(f"/api/uploads/{uid}").json()["received_bytes"] == half
        # nothing partial is visible in the landing zone meanwhile
        assert [p for p in landing.rglob("*.abf") if ".uploads" not in p.parts] == []
        r = c.put(f"/api/uploads/{uid}", params={"offset": half}, content=data[half:])
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["received_bytes"] == len(data) and done["done"]
        assert done["stage"].startswith("landed")
        dest = landing / "labU" / "KO" / "P21" / REAL_ABF.name
        assert dest.read_bytes() == data
        sidecar = json.loads(dest.with_name(dest.name + ".meta.json").read_text())
        assert sidecar == {"cell_id": "up-1", "species": "Mus musculus"}
        # the ingest DAG's work (the same function), then the page follows the file
        ingest_paths([landing], lake=str(lake), landing=str(landing))
        st = c.get(f"/api/uploads/{uid}").json()
        assert st["stage"] == "published" and st["file_id"] == sha256(dest)
        cells = c.get("/api/cells").json()["cells"]
        assert [x["cell_id"] for x in cells] == ["up-1"]


def test_a_bad_upload_is_followed_to_failed_with_its_reason(tmp_path: Path) -> None:
    from transforms.pipeline import ingest_paths

    lake, landing = tmp_path / "lake", tmp_path / "landing"
    junk = bytes(range(256)) * 40
    with _client(lake, landing, "admin") as c:
        uid = c.post(
            "/api/uploads",
            json={
                "file_name": "junk.abf",
                "size_bytes": len(junk),
                "lab": "labU",
                "condition": "WT",
                "timepoint": "P7",
            },
        ).json()["upload_id"]
        assert c.put(f"/api/uploads/{uid}", params={"offset": 0}, content=junk).json()["done"]
        ingest_paths([landing], lake=str(lake), landing=str(landing))
        st = c.get(f"/api/uploads/{uid}").json()
        assert st["stage"] == "failed" and "junk.abf" in st["reason"]
        assert c.get("/api/cells").json()["cells"] == []


def test_upload_refusals(tmp_path: Path) -> None:
    lake, landing = tmp_path / "lake", tmp_path / "landing"
    body = {"file_name": "a.abf", "size_bytes": 10, "lab": "l", "condition": "c", "timepoint": "t"}
    with _client(lake, landing, "viewer") as viewer:
        assert viewer.post("/api/uploads", json=body).status_code == 403
    with _client(lake, landing, "op") as c:
        assert c.post("/api/uploads", json={**body, "lab": "../etc"}).status_code == 400
        assert c.post("/api/uploads", json={**body, "file_name": "../x.abf"}).status_code == 400
        assert c.post("/api/uploads", json={**body, "file_name": "notes.txt"}).status_code == 400
        r = c.post("/api/uploads", json={**body, "sidecar": {"password": "x"}})
        assert r.status_code == 400 and "sidecar" in r.json()["detail"]
        uid = c.post("/api/uploads", json=body).json()["upload_id"]
        r = c.put(f"/api/uploads/{uid}", params={"offset": 0}, content=b"x" * 11)
        assert r.status_code == 400 and "more than" in r.json()["detail"]
        assert c.get(f"/api/uploads/{uid}").json()["received_bytes"] == 0
        assert c.get("/api/uploads/" + "f" * 32).status_code == 400
