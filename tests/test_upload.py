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
from collections.abc import Iterator
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


def _client(lake: Path, landing: Path | str, role: str) -> Any:
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
        # an unfinished upload dropped: its session and bytes are gone, nothing landed
        uid = c.post("/api/uploads", json=body).json()["upload_id"]
        assert (
            c.put(f"/api/uploads/{uid}", params={"offset": 0}, content=b"x" * 4).status_code == 200
        )
        assert c.delete(f"/api/uploads/{uid}").status_code == 204
        assert c.get(f"/api/uploads/{uid}").status_code == 400
        assert [p.name for p in (landing / ".uploads").iterdir() if uid in p.name] == []
    with _client(lake, landing, "viewer") as viewer:
        assert viewer.delete(f"/api/uploads/{uid}").status_code == 403


@pytest.mark.slow
def test_upload_to_an_s3_landing_zone_in_multipart_parts_resumes_and_publishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 12-well .raw plate (~29 MB) and its plate map uploaded to an S3 landing zone on a
    real S3-protocol server (moto in server mode): the plate goes up as a multipart
    upload, 8 MiB per part; a part cut off by a dropped connection is discarded and
    resent, a chunk at the wrong offset gets 409 and the size to resume at, a non-final
    chunk under S3's 5 MiB minimum is refused. The object appears only when complete,
    with its sidecar; the server never holds a part in memory; the same ingest the DAG
    runs then publishes it from S3, and the upload's status follows it to published."""
    import tracemalloc

    from tests.s3server import moto_server
    from transforms.lake import storage
    from transforms.lake.catalog import publish
    from transforms.lake.storage import sha256
    from transforms.pipeline import commit_batch, stage_file
    from transforms.pipeline.discover import new_files
    from transforms.serve import upload
    from transforms.synth.plate import generate_plate

    plate = generate_plate(tmp_path / "plate", n_wells=12, duration_s=1.5, seed=11, write_spk=False)
    data_path, map_path = plate.raw_path, plate.plate_map_path
    size = data_path.stat().st_size
    part = upload.S3_PART_BYTES
    assert size > 3 * part
    lake = tmp_path / "lake"
    with moto_server(log=tmp_path / "moto.log") as s3:
        s3.create_bucket("uplanding")
        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        landing = "s3://uplanding/zone"
        client = s3.client()
        with _client(lake, landing, "op") as c2, open(data_path, "rb") as fh:
            r = c2.post(
                "/api/uploads",
                json={
                    "file_name": data_path.name,
                    "size_bytes": size,
                    "lab": "labS",
                    "condition": "WT",
                    "timepoint": "DIV14",
                    "sidecar": {"notes": "uploaded to S3"},
                },
            )
            assert r.status_code == 201, r.text
            session = r.json()
            uid = session["upload_id"]
            assert session["chunk_bytes"] == part
            # part 1
            r = c2.put(f"/api/uploads/{uid}", params={"offset": 0}, content=fh.read(part))
            assert r.status_code == 200, r.text
            assert r.json()["received_bytes"] == part and r.json()["stage"] == "uploading"
            # a part cut off mid-way (the connection dropped): discarded whole
            writer = upload.open_chunk(landing, uid, offset=part)
            writer.write(fh.read(part // 2))
            writer.abort()
            assert upload.status(landing, uid)["received_bytes"] == part
            # a client that lost track sends at the wrong offset: 409, resume at `part`
            r = c2.put(f"/api/uploads/{uid}", params={"offset": 0}, content=b"x" * part)
            assert r.status_code == 409
            assert r.json()["detail"]["received_bytes"] == part
            # a non-final chunk under S3's minimum part size is refused
            fh.seek(part)
            r = c2.put(f"/api/uploads/{uid}", params={"offset": part}, content=fh.read(1 << 20))
            assert r.status_code == 400 and "at least" in r.json()["detail"]
            assert c2.get(f"/api/uploads/{uid}").json()["received_bytes"] == part
            # nothing visible in the landing zone before the last part
            keys = [
                o["Key"] for o in client.list_objects_v2(Bucket="uplanding").get("Contents", [])
            ]
            assert not [k for k in keys if k.endswith(".raw")], keys
            # the rest, streamed in 64 KiB pieces: the server's memory stays far below a part
            offset = part
            fh.seek(offset)
            tracemalloc.start()
            while offset < size:
                n = min(part, size - offset)
                remaining = n

                def pieces(total: int = n) -> Iterator[bytes]:
                    left = total
                    while left:
                        piece = fh.read(min(1 << 16, left))
                        left -= len(piece)
                        yield piece

                state = upload.append(landing, uid, offset=offset, chunks=pieces())
                offset += remaining
                assert state["received_bytes"] == offset
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert peak < part // 2, peak
            assert state["done"]
            dest = f"{landing}/labS/WT/DIV14/{data_path.name}"
            st_id = state["file_id"]
            assert st_id == sha256(data_path) == sha256(dest)
            head = client.head_object(
                Bucket="uplanding", Key=f"zone/labS/WT/DIV14/{data_path.name}"
            )
            assert head["ETag"].strip('"').endswith(f"-{-(-size // part)}")  # a multipart object
            side = client.get_object(
                Bucket="uplanding", Key=f"zone/labS/WT/DIV14/{data_path.name}.meta.json"
            )
            assert json.loads(side["Body"].read()) == {"notes": "uploaded to S3"}
            # the plate map: one part, the last
            m = c2.post(
                "/api/uploads",
                json={
                    "file_name": map_path.name,
                    "size_bytes": map_path.stat().st_size,
                    "lab": "labS",
                    "condition": "WT",
                    "timepoint": "DIV14",
                },
            ).json()
            r = c2.put(
                f"/api/uploads/{m['upload_id']}",
                params={"offset": 0},
                content=map_path.read_bytes(),
            )
            assert r.status_code == 200 and r.json()["done"], r.text
            # an abandoned upload is dropped with its parts
            other = c2.post(
                "/api/uploads",
                json={
                    "file_name": "abandoned.abf",
                    "size_bytes": 2 * part,
                    "lab": "labS",
                    "condition": "WT",
                    "timepoint": "DIV14",
                },
            ).json()
            r = c2.put(
                f"/api/uploads/{other['upload_id']}", params={"offset": 0}, content=b"\0" * part
            )
            assert r.status_code == 200
            assert c2.delete(f"/api/uploads/{other['upload_id']}").status_code == 204
            assert client.list_multipart_uploads(Bucket="uplanding").get("Uploads", []) == []
            # the DAG's steps on the S3 landing zone: the page's run names the landed file,
            # so it is read at once although it is younger than settle_s
            monkeypatch.setenv("NEUROCYTE_LANDING", landing)
            monkeypatch.setenv("NEUROCYTE_LAKE", str(lake))
            assert new_files(settle_s=3600) == []
            found = new_files(settle_s=3600, complete=[session["destination"]])
            assert [(c.file_name, c.file_id) for c in found] == [(data_path.name, st_id)]
            staged = []
            for cand in found:
                with storage.localized(cand.path) as (local, local_landing):
                    staged.append(stage_file(local, landing=local_landing, source_uri=cand.path))
            outcomes = commit_batch(staged)
            assert [o.status for o in outcomes] == ["published"], outcomes
            publish(lake=str(lake))
            st = c2.get(f"/api/uploads/{uid}").json()
            assert st["stage"] == "published", st
            plate_page = c2.get(f"/api/plates/{st_id}").json()
            assert {w["condition"] for w in plate_page["wells"]} == {"WT", "KO"}  # its plate map


def _serve(app: Any) -> tuple[Any, Any, int]:
    """The app on a real uvicorn server on 127.0.0.1 (a thread); (server, thread, port)."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return server, thread, port


def _dropped_put(port: int, path: str, body: bytes, *, announced: int) -> None:
    """A PUT announcing ``announced`` bytes whose connection drops after ``body``."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {announced}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        s.sendall(head.encode() + body)


def _received(client: Any, uid: str, expected: int) -> int:
    """The session's received bytes once the server has handled the disconnect."""
    import time

    deadline = time.monotonic() + 15
    while True:
        got = int(client.get(f"/api/uploads/{uid}").json()["received_bytes"])
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


@pytest.mark.parametrize("zone", ["local", "s3"])
def test_a_connection_dropped_mid_chunk_resumes(
    zone: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over a real HTTP server, a PUT whose connection drops mid-body: a local landing zone
    keeps the bytes that arrived (the client resumes there), an S3 one discards the cut-off
    part whole (S3 parts are atomic); resuming at ``received_bytes`` completes the file
    byte for byte."""
    import contextlib

    import httpx

    from tests.s3server import moto_server
    from transforms.lake.storage import sha256
    from transforms.serve import upload

    data = (REAL_ABF.read_bytes() * 8)[: 7 * 1024 * 1024]  # over S3's 5 MiB minimum part
    cut = 3 * 1024 * 1024
    with contextlib.ExitStack() as stack:
        if zone == "s3":
            s3 = stack.enter_context(moto_server(log=tmp_path / "moto.log"))
            s3.create_bucket("droplanding")
            for key, value in s3.env().items():
                monkeypatch.setenv(key, value)
            landing = "s3://droplanding/zone"
        else:
            landing = str(tmp_path / "landing")
        test_client = stack.enter_context(_client(tmp_path / "lake", landing, "op"))
        app = test_client.app
        server, thread, port = _serve(app)
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=60) as c:
                session = c.post(
                    "/api/uploads",
                    json={
                        "file_name": "dropped.abf",
                        "size_bytes": len(data),
                        "lab": "labD",
                        "condition": "WT",
                        "timepoint": "P7",
                    },
                ).json()
                uid = session["upload_id"]
                _dropped_put(port, f"/api/uploads/{uid}?offset=0", data[:cut], announced=len(data))
                expected = cut if zone == "local" else 0
                assert _received(c, uid, expected) == expected
                if expected:  # a client restarting from 0: 409 and where to resume
                    r = c.put(f"/api/uploads/{uid}", params={"offset": 0}, content=data)
                    assert r.status_code == 409
                    assert r.json()["detail"]["received_bytes"] == expected
                else:  # a chunk too small to be an S3 part (and not the last): refused
                    r = c.put(f"/api/uploads/{uid}", params={"offset": 0}, content=data[:10])
                    assert r.status_code == 400
                    assert _received(c, uid, 0) == 0
                r = c.put(
                    f"/api/uploads/{uid}", params={"offset": expected}, content=data[expected:]
                )
                assert r.status_code == 200, r.text
                done = r.json()
                assert done["done"] and done["received_bytes"] == len(data)
            dest = f"{landing}/labD/WT/P7/dropped.abf"
            assert done["file_id"] == sha256(dest) == upload.status(landing, uid)["file_id"]
        finally:
            server.should_exit = True
            thread.join(timeout=10)
