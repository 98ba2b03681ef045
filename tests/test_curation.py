"""Curation through the plugin's API: a real lake, real Delta commits, the real catalog.

A curator (an Airflow user whose role grants the Neurocyte curator role) excludes a
well, a sweep, restores, notes and tries to accept a published file; a viewer may
not write. Every action must be a row of the append-only ``curation_log`` Delta
table, the catalog's views must leave excluded rows out (and the ``excluded`` view
list them with their reasons) while the Delta tables keep every row. Every API
endpoint answers 401 without a login.
"""

from __future__ import annotations

import importlib
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from tests.conftest import ABF_DIR, REPO_ROOT
from transforms import spec
from transforms.serve import pages

REAL_ABF = "171116sh_0018.abf"


def _plugin() -> Any:
    plugins = str(REPO_ROOT / "plugins")
    if plugins not in sys.path:
        sys.path.insert(0, plugins)
    return importlib.import_module("neurocyte_plugin")


@pytest.fixture(scope="module", autouse=True)
def _airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Airflow's DB prepared before the plugin imports Airflow (see tests/airflow_env)."""
    from tests.airflow_env import prepare

    return prepare(tmp_path_factory.mktemp("airflow"))


@dataclass(frozen=True)
class Lake:
    lake: Path
    plate_id: str
    cell_id: str


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    from transforms.pipeline import ingest_paths
    from transforms.synth.plate import generate_plate

    root = tmp_path_factory.mktemp("curation")
    landing, lake = root / "landing", root / "lake"
    dest = landing / "labA" / "WT" / "P14" / REAL_ABF
    dest.parent.mkdir(parents=True)
    shutil.copyfile(ABF_DIR / REAL_ABF, dest)
    cells = ingest_paths([landing], lake=str(lake), landing=str(landing))
    plate = generate_plate(root / "plate", n_wells=12, duration_s=3.0, seed=7, write_spk=False)
    mea = ingest_paths(
        [plate.raw_path],
        lake=str(lake),
        lab="labM",
        timepoint="DIV14",
        plate_map=plate.plate_map_path,
    )
    (cell,) = cells.outcomes
    (pl,) = mea.outcomes
    assert cell.status == pl.status == "published"
    return Lake(lake, pl.file_id, cell.file_id)


def _user(name: str, role: str) -> Any:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return SimpleAuthManagerUser(username=name, role=role)


@pytest.fixture()
def as_user(lake: Lake):
    """A TestClient whose Airflow user (resolved by Airflow's own get_user) is given."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.testclient import TestClient

    clients = []

    def make(name: str, role: str) -> Any:
        app = _plugin().create_app(str(lake.lake))
        app.dependency_overrides[get_user] = lambda: _user(name, role)
        c = TestClient(app)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def _query(lake: Lake, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con = pages.open_catalog(str(lake.lake))
    assert con is not None
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _log_rows(lake: Lake) -> list[dict[str, Any]]:
    uri = spec.table_uri(spec.CURATION_LOG, str(lake.lake))
    if not DeltaTable.is_deltatable(uri):
        return []
    return DeltaTable(uri).to_pyarrow_table().to_pylist()


def test_excluding_a_well_drops_it_from_the_views_and_logs_who_when_why(
    lake: Lake, as_user
) -> None:
    curator = as_user("carol", "op")
    well = "B2"
    (cond,) = _query(
        lake,
        "SELECT condition FROM mea_well_metrics WHERE file_id = ? AND well = ?",
        [lake.plate_id, well],
    )[0]
    before = {
        (s["condition"]): s["n"][0]
        for s in curator.get("/api/trajectory/mean_firing_rate_hz").json()["series"]
    }
    n_rows_delta = DeltaTable(spec.table_uri(spec.MEA_WELL_METRICS, str(lake.lake))).count()
    r = curator.post(
        "/api/curation",
        json={
            "action": "exclude",
            "target_kind": "well",
            "file_id": lake.plate_id,
            "well": well,
            "reason": "bubble over the electrodes",
        },
    )
    assert r.status_code == 201, r.text
    rows = _log_rows(lake)
    mine = [x for x in rows if x["action"] == "exclude" and x["well"] == well]
    assert len(mine) == 1
    assert mine[0]["curator"] == "carol" and mine[0]["curator_roles"] == "op"
    assert mine[0]["reason"] == "bubble over the electrodes" and mine[0]["acted_at"] is not None
    # the published views leave the well out, every MEA table alike
    for view in ("mea_well_metrics", "mea_electrode_metrics", "mea_spikes", "mea_recordings"):
        (n,) = _query(
            lake,
            f"SELECT count(*) FROM {view} WHERE file_id = ? AND well = ?",
            [lake.plate_id, well],
        )[0]
        assert n == 0, view
    after = {
        s["condition"]: s["n"][0]
        for s in curator.get("/api/trajectory/mean_firing_rate_hz").json()["series"]
    }
    assert after[cond] == before[cond] - 1
    (n_wells,) = _query(
        lake,
        "SELECT sum(n_wells) FROM well_metrics_by_condition WHERE condition = ?",
        [cond],
    )[0]
    assert n_wells == after[cond]
    # the excluded view lists it with its reason; the Delta table still holds it
    listed = curator.get("/api/excluded").json()["excluded"]
    assert [(x["well"], x["reason"], x["curator"]) for x in listed] == [
        (well, "bubble over the electrodes", "carol")
    ]
    assert DeltaTable(spec.table_uri(spec.MEA_WELL_METRICS, str(lake.lake))).count() == (
        n_rows_delta
    )
    # a restore is a later row: the well is back, both rows stay
    r = curator.post(
        "/api/curation",
        json={
            "action": "restore",
            "target_kind": "well",
            "file_id": lake.plate_id,
            "well": well,
            "reason": "the bubble was on another plate",
        },
    )
    assert r.status_code == 201, r.text
    (n,) = _query(
        lake,
        "SELECT count(*) FROM mea_well_metrics WHERE file_id = ? AND well = ?",
        [lake.plate_id, well],
    )[0]
    assert n == 1
    assert curator.get("/api/excluded").json()["excluded"] == []
    kinds = [x["action"] for x in _log_rows(lake) if x["well"] == well]
    assert sorted(kinds) == ["exclude", "restore"]
    # append-only: every commit of the table is an append (nothing rewritten)
    history = DeltaTable(spec.table_uri(spec.CURATION_LOG, str(lake.lake))).history()
    ops = {h["operation"] for h in history}
    assert ops <= {"WRITE", "CREATE TABLE"}, ops


def test_excluding_a_sweep_drops_it_from_sweeps_and_the_fi_curve(lake: Lake, as_user) -> None:
    curator = as_user("carol", "admin")
    sweeps = [
        r[0]
        for r in _query(
            lake,
            "SELECT sweep_number FROM icephys_sweeps WHERE file_id = ? ORDER BY 1",
            [lake.cell_id],
        )
    ]
    target = sweeps[1]
    r = curator.post(
        "/api/curation",
        json={
            "action": "exclude",
            "target_kind": "sweep",
            "file_id": lake.cell_id,
            "sweep_number": target,
            "reason": "seal lost",
        },
    )
    assert r.status_code == 201, r.text
    left = [
        r[0]
        for r in _query(
            lake,
            "SELECT sweep_number FROM icephys_sweeps WHERE file_id = ? ORDER BY 1",
            [lake.cell_id],
        )
    ]
    assert left == [s for s in sweeps if s != target]
    (spikes,) = _query(
        lake,
        "SELECT count(*) FROM icephys_spikes WHERE file_id = ? AND sweep_number = ?",
        [lake.cell_id, target],
    )[0]
    assert spikes == 0
    fi = curator.get("/api/fi", params={"file_id": lake.cell_id}).json()["curves"]
    assert all(target not in c["sweep_number"] for c in fi)


def test_notes_and_refusals(lake: Lake, as_user) -> None:
    curator = as_user("carol", "op")
    r = curator.post(
        "/api/curation",
        json={
            "action": "note",
            "target_kind": "recording",
            "file_id": lake.cell_id,
            "reason": "series resistance crept up after sweep 10",
        },
    )
    assert r.status_code == 201, r.text
    notes = curator.get("/api/curation", params={"file_id": lake.cell_id}).json()["actions"]
    assert notes[0]["action"] == "note" and "series resistance" in notes[0]["reason"]
    n_before = len(_log_rows(lake))
    viewer = as_user("victor", "viewer")
    exclude = {
        "action": "exclude",
        "target_kind": "recording",
        "file_id": lake.cell_id,
        "reason": "x",
    }
    r = viewer.post("/api/curation", json=exclude)
    assert r.status_code == 403 and "curator" in r.json()["detail"]
    assert viewer.get("/api/me").json() == {"user": "victor", "roles": ["viewer"], "curator": False}
    # a reason is required; the target must exist; only a quarantined file is accepted
    assert curator.post("/api/curation", json={**exclude, "reason": ""}).status_code == 422
    r = curator.post(
        "/api/curation",
        json={**exclude, "target_kind": "well", "well": "H9", "file_id": lake.plate_id},
    )
    assert r.status_code == 404 and "no well H9" in r.json()["detail"]
    r = curator.post("/api/curation", json={**exclude, "action": "accept_quarantined"})
    assert r.status_code == 404 and "not quarantined" in r.json()["detail"]
    r = curator.post("/api/curation", json={**exclude, "file_id": "a" * 64})
    assert r.status_code == 404
    assert len(_log_rows(lake)) == n_before


def test_every_endpoint_requires_an_airflow_login(lake: Lake) -> None:
    from fastapi.routing import APIRoute
    from fastapi.testclient import TestClient

    app = _plugin().create_app(str(lake.lake))
    # the HTML shells and their static files hold no data
    public = {"/", "/{page}.html", "/static/{name}", "/vendor/plotly.min.js"}
    checked = 0
    with TestClient(app) as c:
        for route in app.routes:
            if not isinstance(route, APIRoute) or route.path in public:
                continue
            url = re.sub(r"\{file_id\}", "a" * 64, route.path)
            url = re.sub(r"\{[^}]+\}", "x", url)
            for method in route.methods:
                r = c.request(method, url, json={})
                assert r.status_code == 401, (method, route.path, r.status_code)
                checked += 1
    assert checked >= 15


def test_concurrent_actions_are_all_logged_in_order(lake: Lake, as_user) -> None:
    from concurrent.futures import ThreadPoolExecutor

    clients = [as_user(f"c{k}", "op") for k in range(3)]
    before = len(_log_rows(lake))

    def note(k: int) -> int:
        r = clients[k].post(
            "/api/curation",
            json={
                "action": "note",
                "target_kind": "recording",
                "file_id": lake.plate_id,
                "reason": f"note {k}",
            },
        )
        return r.status_code

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(note, range(3))) == [201, 201, 201]
    rows = _log_rows(lake)
    assert len(rows) == before + 3
    seqs = [r["log_seq"] for r in rows]
    assert len(set(seqs)) == len(seqs)  # one order, no ties within one api-server
    (n,) = _query(lake, "SELECT count(*) FROM curation_log WHERE reason LIKE 'note %'")[0]
    assert n == 3  # the republished catalog holds every action


def test_accepting_a_quarantined_file_publishes_its_rows(tmp_path: Path) -> None:
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.testclient import TestClient

    from transforms.pipeline import ingest_paths
    from transforms.synth.demo import generate_demo

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    generate_demo(landing, cells_per_group=1)
    bad = next(landing.rglob("*gain-error.abf"))
    (out,) = ingest_paths([bad], lake=str(lake), landing=str(landing)).outcomes
    assert out.status == "quarantined"
    app = _plugin().create_app(str(lake))
    app.dependency_overrides[get_user] = lambda: _user("rita", "op")
    with TestClient(app) as c:
        assert c.get("/api/cells").json()["cells"] == []
        r = c.post(
            "/api/curation",
            json={
                "action": "accept_quarantined",
                "target_kind": "recording",
                "file_id": out.file_id,
                "reason": "gain set wrong in the rig file; values are a known x10 error",
            },
        )
        assert r.status_code == 201, r.text
        cells = c.get("/api/cells").json()["cells"]
        assert [x["file_id"] for x in cells] == [out.file_id]
        lake_ = Lake(lake, "0" * 64, out.file_id)
        (n_sql,) = _query(
            lake_, "SELECT count(*) FROM icephys_sweeps WHERE file_id = ?", [out.file_id]
        )[0]
        assert n_sql == out.rows["icephys_sweeps"]
        (status, reason) = _query(
            lake_,
            "SELECT status, reason FROM ingest_log WHERE file_id = ? ORDER BY log_seq DESC",
            [out.file_id],
        )[0]
        assert status == "published" and "accepted after review by rita" in reason
        # the quarantined row stays on record
        kinds = [r[0] for r in _query(lake_, "SELECT status FROM ingest_log", [])]
        assert sorted(kinds) == ["published", "quarantined"]
        # once published, it cannot be accepted again
        r = c.post(
            "/api/curation",
            json={
                "action": "accept_quarantined",
                "target_kind": "recording",
                "file_id": out.file_id,
                "reason": "again",
            },
        )
        assert r.status_code == 404 and "not quarantined" in r.json()["detail"]
