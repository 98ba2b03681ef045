"""Landing zone and lake on an S3-protocol server (moto in server mode, 127.0.0.1).

Real ABF files are uploaded to the landing bucket, discovered by content hash,
staged under ``s3://lake/_staging``, QC-gated and committed to Delta tables in
the lake bucket; several processes commit to one table concurrently.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from tests.conftest import ABF_DIR
from tests.s3server import S3Server, moto_server
from transforms import spec
from transforms.errors import CatalogUnavailable
from transforms.lake import delta as lakeio
from transforms.lake import storage
from transforms.pipeline import commit_batch, stage_file
from transforms.pipeline.discover import new_files

LANDING = "s3://landing"
LAKE = "s3://lake"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with moto_server(log=log) as server:
        yield server


@pytest.fixture()
def zone(s3: S3Server, monkeypatch: pytest.MonkeyPatch, request) -> tuple[str, str]:
    """Fresh buckets per test, and the AWS_* env pointing at the server."""
    suffix = request.node.name.replace("_", "-").lower()[-40:].strip("-")
    landing, lake = f"{LANDING}-{suffix}", f"{LAKE}-{suffix}"
    s3.create_bucket(landing.removeprefix("s3://"))
    s3.create_bucket(lake.removeprefix("s3://"))
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(spec.ENV_LANDING, landing)
    monkeypatch.setenv(spec.ENV_LAKE, lake)
    return landing, lake


def _land(s3: S3Server, landing: str, name: str, *, as_name: str | None = None) -> str:
    uri = f"{landing}/labA/WT/P14/{as_name or name}"
    s3.upload(ABF_DIR / name, uri)
    return uri


def _ingest(candidates) -> list:
    staged = []
    for c in candidates:
        with storage.localized(c.path) as (local, local_landing):
            staged.append(stage_file(local, landing=local_landing, source_uri=c.path))
    return commit_batch(staged)


def _published(lake: str, sql: str) -> list[tuple]:
    """Query the latest published rows straight from the Delta snapshots."""
    con = duckdb.connect()
    con.register("log", lakeio.read_table(spec.INGEST_LOG, lake=lake))
    con.register("sweeps", lakeio.read_table(spec.ICEPHYS_SWEEPS, lake=lake))
    con.execute(
        "CREATE VIEW pub AS SELECT file_id, ingest_id, file_name, source_path FROM log "
        "WHERE status = 'published' QUALIFY row_number() OVER "
        "(PARTITION BY file_id ORDER BY finished_at DESC) = 1"
    )
    return con.execute(sql).fetchall()


def test_storage_roundtrip_on_s3(zone) -> None:
    _landing, lake = zone
    uri = storage.join(lake, "probe", "t.parquet")
    storage.write_parquet(pa.table({"x": [1, 2]}), uri)
    assert storage.read_parquet(uri)["x"].to_pylist() == [1, 2]
    assert [o.name for o in storage.list_files(storage.join(lake, "probe"))] == ["t.parquet"]
    storage.move_tree(storage.join(lake, "probe"), storage.join(lake, "moved"))
    assert not storage.exists(uri)
    assert storage.exists(storage.join(lake, "moved", "t.parquet"))
    storage.remove_tree(storage.join(lake, "moved"))
    assert storage.list_files(storage.join(lake, "moved")) == []


def test_staged_parquet_is_read_back_in_batches_on_s3(zone) -> None:
    """The commit reads a big staged table back batch by batch (commit.SLICE_ROWS)."""
    _landing, lake = zone
    uri = storage.join(lake, "_staging", "probe", "mea_spikes.parquet")
    n = 10_000
    storage.write_parquet(pa.table({"file_id": ["f" * 64] * n, "time_s": list(range(n))}), uri)
    assert storage.read_parquet_schema(uri).names == ["file_id", "time_s"]
    batches = list(storage.iter_parquet(uri, batch_rows=3_000, read_dictionary=["file_id"]))
    assert [b.num_rows for b in batches] == [3_000, 3_000, 3_000, 1_000]
    assert all(pa.types.is_dictionary(b.schema.field("file_id").type) for b in batches)
    assert [t for b in batches for t in b["time_s"].to_pylist()] == list(range(n))


def test_ingest_from_s3_landing_into_s3_lake(s3: S3Server, zone) -> None:
    landing, lake = zone
    good = _land(s3, landing, "171116sh_0018.abf")
    _land(s3, landing, "opto_aps_bad_units.abf")  # fails QC: quarantined on S3
    found = new_files()
    assert sorted(c.file_name for c in found) == ["171116sh_0018.abf", "opto_aps_bad_units.abf"]
    outcomes = _ingest(found)
    assert {o.file_name: o.status for o in outcomes} == {
        "171116sh_0018.abf": "published",
        "opto_aps_bad_units.abf": "quarantined",
    }
    rows = _published(
        lake,
        "SELECT p.file_name, p.source_path, s.condition, count(*) FROM sweeps s "
        "JOIN pub p USING (file_id, ingest_id) GROUP BY ALL",
    )
    assert rows == [("171116sh_0018.abf", good, "WT", 17)]
    bad = next(o for o in outcomes if o.status == "quarantined")
    assert bad.staging.startswith(f"{lake}/quarantine/")
    assert storage.exists(storage.join(bad.staging, "icephys_sweeps.parquet"))
    assert storage.list_files(storage.join(lake, "_staging")) == []  # staging cleaned up

    # nothing new now; a renamed copy is the same content, so not new either
    assert new_files() == []
    _land(s3, landing, "171116sh_0018.abf", as_name="renamed.abf")
    assert new_files() == []


def test_catalog_for_s3_lake_needs_a_local_path_and_httpfs(zone, monkeypatch, tmp_path) -> None:
    from transforms.lake.catalog import publish

    monkeypatch.delenv(spec.ENV_CATALOG, raising=False)
    with pytest.raises(CatalogUnavailable, match="NEUROCYTE_CATALOG"):
        publish()
    monkeypatch.setenv(spec.ENV_CATALOG, str(tmp_path / "catalog.duckdb"))
    try:
        duckdb.connect().execute("LOAD httpfs")
    except duckdb.Error:
        with pytest.raises(CatalogUnavailable, match="httpfs"):
            publish()
        assert not (tmp_path / "catalog.duckdb").exists()
    else:  # a host with httpfs installed: the catalog is built
        assert publish().catalog == tmp_path / "catalog.duckdb"


def _writer(env: dict[str, str], lake: str, worker: int, n: int) -> None:
    import os

    os.environ.update(env)
    for j in range(n):
        lakeio.append_log(
            pa.Table.from_pylist(
                [
                    {
                        "file_id": f"{worker:02x}{j:062x}",
                        "ingest_id": f"{worker:02x}{j:030x}",
                        "source_path": f"w{worker}",
                        "file_name": f"{worker}-{j}",
                        "status": "failed",
                        "transform_version": spec.TRANSFORM_VERSION,
                        "started_at": pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py(),
                        "finished_at": pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py(),
                    }
                ],
                schema=lakeio.INGEST_LOG_SCHEMA,
            ),
            lake=lake,
        )


def test_concurrent_writers_lose_no_commit(s3: S3Server, zone) -> None:
    """4 processes x 5 commits to one Delta table on S3: 20 rows, 20 versions."""
    _landing, lake = zone
    env = {**s3.env(), spec.ENV_LAKE: lake}
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(env, lake, w, 5)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    log = lakeio.read_table(spec.INGEST_LOG, lake=lake)
    assert log is not None
    assert log.num_rows == 20
    assert len(set(log["file_id"].to_pylist())) == 20
    assert storage.list_files(storage.join(lake, "tables", "ingest_log", "_delta_log"))
    from deltalake import DeltaTable

    dt = DeltaTable(spec.table_uri(spec.INGEST_LOG, lake), storage_options=lakeio.storage_options())
    assert dt.version() == 19  # every commit landed as its own version


def test_storage_options_never_allow_unsafe_rename(zone) -> None:
    opts = lakeio.storage_options()
    assert opts is not None
    assert opts["AWS_CONDITIONAL_PUT"] == "etag"
    assert "AWS_S3_ALLOW_UNSAFE_RENAME" not in opts
    assert opts["AWS_ALLOW_HTTP"] == "true"


def test_local_paths_unchanged(tmp_path: Path) -> None:
    assert storage.filesystem(str(tmp_path))[1] == str(tmp_path.resolve())
    with pytest.raises(Exception, match="unsupported storage scheme"):
        storage.filesystem("gs://bucket/x")


def test_s3_landed_file_is_recorded_by_its_uri_and_served(
    s3: S3Server, zone, monkeypatch, tmp_path
) -> None:
    """Rows record the landing URI, not the worker's temporary copy, so raw access
    and NWB export find an S3-landed file after the task's copy is gone."""
    from transforms.serve.export import export_recording_nwb
    from transforms.serve.raw import fetch_snippet

    landing, _ = zone
    lake = str(tmp_path / "lake")  # a local lake: its catalog needs no httpfs
    monkeypatch.setenv(spec.ENV_LAKE, lake)
    monkeypatch.setenv(storage.ENV_SOURCE_CACHE, str(tmp_path / "cache"))
    uri = _land(s3, landing, "171116sh_0018.abf")
    (outcome,) = _ingest(new_files())
    assert outcome.status == "published", outcome.reason
    from transforms.lake.catalog import connect, publish

    publish()
    con = connect()
    rows = con.execute("SELECT file_id, source_path FROM icephys_recordings").fetchall()
    con.close()
    assert rows == [(outcome.file_id, uri)]
    snippet = fetch_snippet(outcome.file_id, sweep=3, start_s=0.1, stop_s=0.6)
    assert snippet.data.shape == (10_000, 1)
    assert snippet.verification == "sha256"
    out = export_recording_nwb(outcome.file_id, tmp_path / "cell.nwb")
    assert out.is_file() and out.stat().st_size > 0


def test_s3_sidecar_edit_and_lab_parameter_set_reach_the_lake(s3: S3Server, zone, tmp_path) -> None:
    """On an S3 landing zone the planner digests sidecars and the lab's neurocyte.toml from
    its listing, and the worker's local copy (storage.localized) gives the same digest."""
    import json

    landing, lake = zone
    uri = _land(s3, landing, "File_axon_5.abf")
    toml = tmp_path / "neurocyte.toml"
    toml.write_text("[icephys]\nsubthresh_min_amp_pa = -80\n")
    s3.upload(toml, f"{landing}/labA/{spec.PARAMS_FILE_NAME}")
    (outcome,) = _ingest(new_files())
    assert outcome.status == "published", outcome.reason
    params = json.loads(lakeio.read_table(spec.ICEPHYS_SWEEPS, lake=lake)["params_json"][0].as_py())
    assert params["subthresh_min_amp_pa"] == -80.0
    assert params["parameter_set"]["file"] == "labA/neurocyte.toml"
    assert new_files() == []  # the worker's digest is the planner's: nothing new

    sidecar = tmp_path / "sidecar.json"
    sidecar.write_text(json.dumps({"notes": "corrected"}))
    s3.upload(sidecar, uri + spec.SIDECAR_SUFFIX)
    (cand,) = new_files()
    assert cand.path == uri
    (again,) = _ingest([cand])
    assert again.status == "published"
    recordings = lakeio.read_table(spec.ICEPHYS_RECORDINGS, lake=lake)
    assert recordings is not None
    assert recordings.select(["ingest_id", "notes"]).to_pylist() == [
        {"ingest_id": again.ingest_id, "notes": "corrected"}  # the old attempt's row pruned
    ]
    assert new_files() == []
