"""Identity covers the metadata: corrections re-publish, unchanged failures are not retried.

Real files, a real Delta lake and the published DuckDB catalog; the rule itself
(``transforms.pipeline.identity.decide``) is exercised through ``ingest_paths`` (the
CLI's function) here and through the real DAG in ``tests/test_identity_dag.py``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.conftest import MEA_DIR
from tests.helpers import land, query
from tests.reliability import small_abf
from transforms import spec
from transforms.lake import delta as lakeio
from transforms.pipeline import ingest_paths
from transforms.pipeline.discover import new_files
from transforms.pipeline.identity import Attempt, decide, metadata_digest

SPIKE_LIST = MEA_DIR / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"


def _ingest(landing: Path, lake: Path, paths: list[Path] | None = None, **kw):
    summary = ingest_paths(paths or [landing], lake=str(lake), landing=str(landing), **kw)
    return {o.file_name: o.status for o in summary.outcomes}


def _sidecar(path: Path, **values: str) -> None:
    path.with_name(path.name + spec.SIDECAR_SUFFIX).write_text(json.dumps(values))


def _published_ids(lake: Path) -> dict[str, str]:
    return dict(query(lake, "SELECT file_name, ingest_id FROM published"))


def test_editing_a_sidecar_republishes_exactly_that_file(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    cells = [small_abf(landing / "labA" / "WT" / "P14" / f"cell{i}.abf", seed=i) for i in range(3)]
    _sidecar(cells[1], notes="pipette 3")
    assert _ingest(landing, lake) == dict.fromkeys((c.name for c in cells), "published")
    before = _published_ids(lake)
    assert _ingest(landing, lake) == dict.fromkeys((c.name for c in cells), "duplicate")

    _sidecar(cells[1], notes="pipette 4 (corrected)")
    # the DAG's planner picks exactly that file (tests/test_identity_dag.py runs the DAG)
    assert [c.file_name for c in new_files(landing=str(landing), lake=str(lake))] == ["cell1.abf"]
    assert _ingest(landing, lake) == {
        "cell0.abf": "duplicate",
        "cell1.abf": "published",
        "cell2.abf": "duplicate",
    }
    after = _published_ids(lake)
    assert after["cell0.abf"] == before["cell0.abf"] and after["cell2.abf"] == before["cell2.abf"]
    assert after["cell1.abf"] != before["cell1.abf"]
    assert query(lake, "SELECT file_name, notes FROM icephys_recordings ORDER BY 1") == [
        ("cell0.abf", None),
        ("cell1.abf", "pipette 4 (corrected)"),
        ("cell2.abf", None),
    ]
    # one row per file and attempt in the lake (the superseded attempt's rows are pruned)
    assert lakeio.count_rows("icephys_recordings", lake=str(lake)) == 3
    # the digest is logged with each attempt, and a sidecar made a difference
    digests = dict(
        query(
            lake,
            "SELECT ingest_id, metadata_digest FROM ingest_log WHERE status = 'published'",
        )
    )
    assert digests[after["cell1.abf"]] != digests[before["cell1.abf"]]
    assert digests[after["cell0.abf"]] == digests[before["cell0.abf"]]
    assert all(len(d) == 64 for d in digests.values())
    # unchanged since: duplicates again; --force still re-publishes
    assert set(_ingest(landing, lake).values()) == {"duplicate"}
    assert _ingest(landing, lake, paths=[cells[0]], force=True) == {"cell0.abf": "published"}


def test_partition_change_republishes_and_a_renamed_copy_stays_a_duplicate(
    tmp_path: Path,
) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    cell = small_abf(landing / "labA" / "WT" / "P14" / "cell.abf", seed=5)
    assert _ingest(landing, lake) == {"cell.abf": "published"}
    copy = cell.with_name("renamed.abf")
    copy.write_bytes(cell.read_bytes())
    assert _ingest(landing, lake, paths=[copy]) == {"renamed.abf": "duplicate"}
    copy.unlink()
    moved = landing / "labA" / "KO" / "P14" / "cell.abf"  # filed under the wrong condition
    moved.parent.mkdir(parents=True)
    cell.rename(moved)
    assert _ingest(landing, lake) == {"cell.abf": "published"}
    assert query(lake, "SELECT condition FROM icephys_recordings") == [("KO",)]


def _small_plate(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(SPIKE_LIST, "rt") as fh:
        text = "".join(next(fh) for _ in range(2000))
    path = folder / "plate1_spike_list.csv"
    path.write_text(text)
    return path


def test_editing_a_plate_map_republishes_the_plate(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    plate = _small_plate(landing / "labM" / "ctl" / "DIV3")
    plate_map = plate.with_name("plate1.platemap.csv")
    plate_map.write_text("well,condition\nA1,drugX\nA2,vehicle\n")
    cell = small_abf(landing / "labA" / "WT" / "P14" / "cell.abf", seed=1)
    assert _ingest(landing, lake) == {plate.name: "published", cell.name: "published"}
    assert _ingest(landing, lake) == {plate.name: "duplicate", cell.name: "duplicate"}
    wells = "SELECT well, condition FROM mea_recordings WHERE well IN ('A1', 'A2') ORDER BY 1"
    assert query(lake, wells) == [("A1", "drugX"), ("A2", "vehicle")]

    plate_map.write_text("well,condition\nA1,drugY\nA2,vehicle\n")  # a corrected treatment
    assert _ingest(landing, lake) == {plate.name: "published", cell.name: "duplicate"}
    assert query(lake, wells) == [("A1", "drugY"), ("A2", "vehicle")]
    assert query(lake, "SELECT count(*) FROM mea_well_metrics WHERE condition = 'drugX'") == [(0,)]


def test_a_quarantined_file_is_not_retried_until_its_sidecar_changes(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    bad = land(landing, "opto_aps_bad_units.abf")  # Vm ~ -1590 "mV": quarantined by QC
    assert _ingest(landing, lake) == {bad.name: "quarantined"}
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    (again,) = summary.outcomes
    assert again.status == "not_retried"
    assert "was quarantined" in again.reason and "--force" in again.reason
    # the failure it repeats still counts as the file's status
    assert query(lake, "SELECT status, files FROM qc_summary") == [("quarantined", 1)]
    attempts = "SELECT count(*) FROM ingest_log WHERE status IN ('quarantined', 'failed')"
    assert query(lake, attempts) == [(1,)]

    _sidecar(bad, notes="checked the gain")
    assert _ingest(landing, lake) == {bad.name: "quarantined"}  # retried: a new attempt
    assert query(lake, attempts) == [(2,)]
    assert _ingest(landing, lake) == {bad.name: "not_retried"}
    assert _ingest(landing, lake, force=True) == {bad.name: "quarantined"}


def test_a_failed_file_is_retried_once_its_content_changes(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    broken = landing / "labA" / "WT" / "P14" / "cell.abf"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"ABF2" + b"\0" * 100)
    assert _ingest(landing, lake) == {"cell.abf": "failed"}
    assert _ingest(landing, lake) == {"cell.abf": "not_retried"}
    assert new_files(landing=str(landing), lake=str(lake)) == []  # the DAG's planner agrees
    small_abf(broken, seed=3)  # the lab uploads the file again, whole
    (cand,) = new_files(landing=str(landing), lake=str(lake))
    assert cand.file_name == "cell.abf"
    assert _ingest(landing, lake) == {"cell.abf": "published"}


def test_a_log_without_digests_reads_as_unknown(tmp_path: Path) -> None:
    """Attempts logged before metadata_digest existed: never a match, tried once more."""
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    cell = small_abf(landing / "labA" / "WT" / "P14" / "cell.abf", seed=2)
    assert _ingest(landing, lake) == {"cell.abf": "published"}
    log = lakeio.read_table(spec.INGEST_LOG, lake=str(lake))
    assert log is not None
    old = log.drop_columns(["metadata_digest"])  # the log as an older version wrote it
    from deltalake import write_deltalake

    write_deltalake(
        spec.table_uri(spec.INGEST_LOG, str(lake)),
        old,
        mode="overwrite",
        schema_mode="overwrite",
    )
    assert "metadata_digest" not in lakeio.table_columns(spec.INGEST_LOG, lake=str(lake))
    assert [c.file_name for c in new_files(landing=str(landing), lake=str(lake))] == ["cell.abf"]
    assert _ingest(landing, lake) == {"cell.abf": "published"}
    assert _ingest(landing, lake) == {"cell.abf": "duplicate"}
    rows = query(lake, "SELECT status, metadata_digest IS NULL FROM ingest_log ORDER BY log_seq")
    assert rows == [("published", True), ("published", False), ("duplicate", False)]
    assert query(lake, "SELECT count(*) FROM published") == [(1,)]
    assert cell.exists()


def _attempt(status: str, digest: str | None, version: str = spec.TRANSFORM_VERSION) -> Attempt:
    return Attempt("a" * 64, "b" * 32, status, version, digest, "/x.abf", "why")


@pytest.mark.parametrize(
    "last, digest, force, expected",
    [
        (None, "d1", False, None),
        (_attempt("published", "d1"), "d1", False, "duplicate"),
        (_attempt("published", "d1"), "d2", False, None),
        (_attempt("published", "d1"), "d1", True, None),
        (_attempt("published", "d1", version="0.0.1"), "d1", False, None),
        (_attempt("published", None), "d1", False, None),
        (_attempt("quarantined", "d1"), "d1", False, "not_retried"),
        (_attempt("failed", "d1"), "d1", False, "not_retried"),
        (_attempt("failed", "d1"), "d2", False, None),
        (_attempt("failed", None), "d1", False, None),  # a failure caused outside the file
    ],
)
def test_the_rule(last: Attempt | None, digest: str, force: bool, expected: str | None) -> None:
    verdict = decide(last, digest, force=force)
    assert (verdict.status if verdict else None) == expected


def test_digest_inputs_are_raw_bytes_not_names(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    a = small_abf(landing / "labA" / "WT" / "P14" / "a.abf", seed=1)
    b = small_abf(landing / "labA" / "WT" / "P14" / "b.abf", seed=2)
    kw = {"landing": str(landing)}
    assert metadata_digest(a, **kw) == metadata_digest(b, **kw)  # same folder, no sidecar
    _sidecar(b, notes="x")
    assert metadata_digest(a, **kw) != metadata_digest(b, **kw)
    assert metadata_digest(a, **kw) != metadata_digest(a, condition="KO", **kw)
    # a sidecar that does not parse still has a digest (its file fails with the reason)
    b.with_name(b.name + spec.SIDECAR_SUFFIX).write_bytes(b"{not json")
    assert len(metadata_digest(b, **kw)) == 64
    without = metadata_digest(a, **kw)
    params = landing / "labA" / spec.PARAMS_FILE_NAME
    params.write_text("[icephys]\nqc_profile = 'ipfx'\n")  # the lab's parameter set
    assert metadata_digest(a, **kw) != without
    ipfx = metadata_digest(a, **kw)
    params.write_text("[icephys]\nqc_profile = 'neurocyte'\n")
    assert metadata_digest(a, **kw) not in (without, ipfx)


def test_files_an_upload_landed_whole_are_not_held_back_by_settle_s(tmp_path: Path) -> None:
    """The DAG's ``uploaded`` param: named landing paths are read at once, any other file
    still waits ``settle_s``, and a path cannot leave the landing zone."""
    from transforms.errors import SpecError

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    up = land(landing, "171116sh_0018.abf", lab="labU", condition="WT", timepoint="P14")
    land(landing, "190619B_0003.abf", lab="labU", condition="KO", timepoint="P21")

    def found(*complete: str) -> list[str]:
        return [
            c.file_name
            for c in new_files(
                landing=str(landing), lake=str(lake), settle_s=3600.0, complete=complete
            )
        ]

    assert found() == []  # both written just now
    assert found("labU/WT/P14/171116sh_0018.abf") == [up.name]
    with pytest.raises(SpecError):
        found("labU/../../etc/passwd")
