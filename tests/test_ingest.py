"""End to end without a scheduler: landing zone -> Delta -> QC gate -> catalog."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import ABF_DIR
from tests.helpers import land, query
from transforms import spec
from transforms.lake import delta as lakeio
from transforms.pipeline import ingest_paths, qc

GOOD = ["171116sh_0018.abf", "File_axon_5.abf"]


@pytest.fixture()
def zone(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "landing", tmp_path / "lake"


def _ingest(landing: Path, lake: Path, paths=None, **kw):
    return ingest_paths(paths or [landing], lake=str(lake), landing=str(landing), **kw)


def test_publish_and_query(zone) -> None:
    landing, lake = zone
    for name in GOOD:
        land(landing, name)
    summary = _ingest(landing, lake)
    assert summary.counts() == {"published": 2}
    rows = query(
        lake,
        "SELECT file_name, n_sweeps, lab, condition, timepoint FROM icephys_recordings "
        "ORDER BY file_name",
    )
    assert rows == [
        ("171116sh_0018.abf", 17, "labA", "WT", "P14"),
        ("File_axon_5.abf", 9, "labA", "WT", "P14"),
    ]
    (n,) = query(lake, "SELECT count(*) FROM icephys_sweeps")[0]
    assert n == 17 + 9
    # provenance on every row
    prov = query(
        lake,
        "SELECT DISTINCT length(file_id), transform_version, params_json IS NOT NULL "
        "FROM icephys_sweeps",
    )
    assert prov == [(64, spec.TRANSFORM_VERSION, True)]
    assert Path(summary.docs).is_file()


def test_reingest_is_a_duplicate_and_force_replaces(zone) -> None:
    landing, lake = zone
    path = land(landing, GOOD[0])
    _ingest(landing, lake)
    before = query(lake, "SELECT count(*) FROM icephys_sweeps")[0][0]
    again = _ingest(landing, lake)
    assert again.counts() == {"duplicate": 1}
    # a renamed copy is the same content: a duplicate too
    copy = path.with_name("renamed.abf")
    copy.write_bytes(path.read_bytes())
    assert _ingest(landing, lake, paths=[copy]).counts() == {"duplicate": 1}
    forced = _ingest(landing, lake, paths=[path], force=True)
    assert forced.counts() == {"published": 1}
    assert query(lake, "SELECT count(*) FROM icephys_sweeps")[0][0] == before
    # superseded rows are physically gone too, not only hidden
    assert lakeio.count_rows("icephys_sweeps", lake=str(lake)) == before
    published = query(lake, "SELECT count(DISTINCT ingest_id) FROM icephys_sweeps")[0][0]
    assert published == 1


def test_quarantine_keeps_bad_batch_out_and_others_publish(zone) -> None:
    landing, lake = zone
    land(landing, GOOD[0])
    # Its Vm is ~-1590 "mV": a gain/unit error that the Vm range expectation catches.
    land(landing, "opto_aps_bad_units.abf")
    summary = _ingest(landing, lake)
    status = {o.file_name: o for o in summary.outcomes}
    assert status[GOOD[0]].status == "published"
    bad = status["opto_aps_bad_units.abf"]
    assert bad.status == "quarantined"
    assert "v_baseline_mv" in bad.reason and "expect_column_values_to_be_between" in bad.reason
    names = [r[0] for r in query(lake, "SELECT DISTINCT file_id FROM icephys_sweeps")]
    assert bad.file_id not in names
    # recorded in ingest_log with its reason, and kept for curators
    log = query(lake, "SELECT status, reason FROM ingest_log WHERE file_id = ?", [bad.file_id])
    assert log[0][0] == "quarantined" and "v_baseline_mv" in log[0][1]
    assert any(Path(spec.quarantine_dir(bad.file_id, str(lake))).rglob("*.parquet"))
    page = qc.docs_dir(str(lake)) / bad.qc_pages["icephys_sweeps"]
    assert page.is_file() and "v_baseline_mv" in page.read_text()


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("empty.abf", b"", "zero-length"),
        ("random.abf", os.urandom(4096), "not a readable ABF"),
        ("truncated.abf", (ABF_DIR / "171116sh_0018.abf").read_bytes()[:5000], "ABF"),
        ("notes.xyz", b"hello", "unsupported file type"),
    ],
)
def test_bad_files_fail_clearly_while_others_publish(zone, name, data, reason) -> None:
    landing, lake = zone
    land(landing, GOOD[1])
    bad = landing / "labA" / "WT" / "P14" / name
    bad.write_bytes(data)
    summary = _ingest(landing, lake, paths=[landing / "labA" / "WT" / "P14" / GOOD[1], bad])
    by_name = {o.file_name: o for o in summary.outcomes}
    assert by_name[GOOD[1]].status == "published"
    assert by_name[name].status == "failed"
    assert reason in by_name[name].reason and name in by_name[name].reason
    logged = query(lake, "SELECT status, reason FROM ingest_log WHERE file_name = ?", [name])
    assert logged and logged[0][0] == "failed"
    assert query(lake, "SELECT count(*) FROM icephys_recordings")[0][0] == 1


def test_invalid_partition_is_logged_not_published(zone) -> None:
    landing, lake = zone
    f = land(landing, GOOD[1], condition="KO")
    f.with_name(f.name + ".meta.json").write_text('{"timepoint": "../../../etc"}')
    summary = _ingest(landing, lake)
    (o,) = summary.outcomes
    assert o.status == "failed" and "invalid timepoint" in o.reason and GOOD[1] in o.reason
    assert not (lake.parent / "etc").exists()


def test_catalog_is_read_only_and_pinned(zone) -> None:
    import duckdb

    landing, lake = zone
    land(landing, GOOD[1])
    _ingest(landing, lake)
    con = duckdb.connect(str(lake / "catalog.duckdb"), read_only=True)
    with pytest.raises(duckdb.Error):
        con.execute("CREATE TABLE x (a INT)")
    (version,) = con.execute(
        "SELECT delta_version FROM _catalog WHERE view_name = 'icephys_sweeps'"
    ).fetchone()
    con.close()
    assert version >= 0


def test_same_content_twice_in_one_batch_publishes_once(zone) -> None:
    landing, lake = zone
    a = land(landing, GOOD[1])
    land(landing, GOOD[1], condition="KO", as_name="copy.abf")
    summary = _ingest(landing, lake)
    assert sorted(summary.counts().items()) == [("duplicate", 1), ("published", 1)]
    assert query(lake, "SELECT count(*) FROM icephys_recordings")[0][0] == 1
    assert lakeio.count_rows("icephys_sweeps", lake=str(lake)) == 9
    assert a.exists()
