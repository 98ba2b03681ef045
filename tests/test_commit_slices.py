"""The gate and the commit read each table back from staging slice by slice.

A batch never holds a table of all its rows in memory (a 10 M-spike plate would
be gigabytes; ``tests/reliability/test_memory_bounds.py`` measures it): each
table's rows are validated and appended in slices of ``commit.SLICE_ROWS`` rows,
all inside the one commit protocol. Here the slice is made small so that real
spike lists take many slices, and the result is compared with a batch committed
in one piece.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from tests.helpers import query
from tests.reliability.memory import write_big_spike_list
from transforms import spec
from transforms.lake import delta as lakeio
from transforms.pipeline import commit, commit_batch, ingest_paths, stage_file

MEA_TABLES = (
    spec.MEA_RECORDINGS,
    spec.MEA_SPIKES,
    spec.MEA_ELECTRODE_METRICS,
    spec.MEA_WELL_METRICS,
    spec.MEA_BURSTS,
    spec.MEA_NETWORK_BURSTS,
)
BIG, SMALL, OTHER = 9_000, 700, 1_500
SLICE = 2_000


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One spike list bigger than several slices and two small ones, two partitions."""
    root = tmp_path_factory.mktemp("landing")
    write_big_spike_list(root / "labA" / "WT" / "DIV14" / "big_spike_list.csv", BIG, seed=1)
    write_big_spike_list(root / "labA" / "WT" / "DIV14" / "small_spike_list.csv", SMALL, seed=2)
    write_big_spike_list(root / "labA" / "KO" / "DIV7" / "other_spike_list.csv", OTHER, seed=3)
    return root


def _published(lake: Path) -> dict[str, list[tuple]]:
    return {
        t: sorted(query(lake, f"SELECT * EXCLUDE (ingest_id) FROM {t}"), key=repr)
        for t in MEA_TABLES
    }


def _appends(lake: Path, table: str) -> list[dict]:
    history = DeltaTable(spec.table_uri(table, str(lake))).history()
    return [h for h in history if h.get("neurocyte.operation") == f"append {table}"]


@pytest.fixture(scope="module")
def whole(landing: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple]]:
    """The batch committed with every table in one piece (the default slice)."""
    assert BIG + SMALL + OTHER < commit.SLICE_ROWS
    lake = tmp_path_factory.mktemp("whole") / "lake"
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert summary.counts() == {"published": 3}, [o.reason for o in summary.outcomes]
    assert len(_appends(lake, spec.MEA_SPIKES)) == 1  # one commit per table
    return _published(lake)


def test_sliced_commit_publishes_the_rows_of_a_whole_commit(
    tmp_path: Path, landing: Path, whole: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit, "SLICE_ROWS", SLICE)
    lake = tmp_path / "lake"
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert summary.counts() == {"published": 3}, [o.reason for o in summary.outcomes]
    rows = {o.file_name: o.rows[spec.MEA_SPIKES] for o in summary.outcomes}
    assert rows == {
        "big_spike_list.csv": BIG,
        "small_spike_list.csv": SMALL,
        "other_spike_list.csv": OTHER,
    }
    assert _published(lake) == whole
    # the big file's spikes took several slices (one commit each, never more rows
    # than a slice); the small tables of the batch are still one commit each
    spikes = _appends(lake, spec.MEA_SPIKES)
    assert len(spikes) >= (BIG + SMALL + OTHER) // SLICE
    assert all(h["operationMetrics"]["num_added_rows"] <= SLICE for h in spikes)
    assert sum(h["operationMetrics"]["num_added_rows"] for h in spikes) == BIG + SMALL + OTHER
    assert len({h["neurocyte.batch_id"] for h in spikes}) == 1
    assert len(_appends(lake, spec.MEA_WELL_METRICS)) == 1
    assert not list((lake / "_staging").glob("*/*")), "staging left behind"


def test_a_bad_row_in_a_late_slice_quarantines_the_file_and_appends_none_of_it(
    tmp_path: Path, landing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate sees every slice before anything is appended: a file failing in its
    last slice has none of its rows (not even its first, valid, slices) in the lake."""
    monkeypatch.setattr(commit, "SLICE_ROWS", SLICE)
    lake = tmp_path / "lake"
    folder = landing / "labA" / "WT" / "DIV14"
    big = stage_file(folder / "big_spike_list.csv", lake=str(lake), landing=str(landing))
    small = stage_file(folder / "small_spike_list.csv", lake=str(lake), landing=str(landing))
    assert big.status == small.status == "staged"
    # a staged row breaking the electrode expectation, in the big file's last slice
    path = Path(big.staging) / f"{spec.MEA_SPIKES}.parquet"
    rows = pq.read_table(path)
    i = rows.schema.get_field_index("electrode")
    electrode = rows["electrode"].to_pylist()
    electrode[-1] = "Z99_99"
    pq.write_table(rows.set_column(i, rows.schema.field(i), pa.array(electrode)), path)

    bad, good = commit_batch([big, small], lake=str(lake))
    assert good.status == "published", good.reason
    assert bad.status == "quarantined"
    assert "mea_spikes" in bad.reason and "electrode" in bad.reason and "Z99_99" in bad.reason
    for table in MEA_TABLES:
        data = lakeio.read_table(table, lake=str(lake), columns=["file_id"])
        if data is not None:  # a table the small file has no rows of was never created
            assert pc.sum(pc.equal(data["file_id"], bad.file_id)).as_py() in (None, 0), table
    spikes = lakeio.read_table(spec.MEA_SPIKES, lake=str(lake), columns=["file_id"])
    assert spikes is not None and spikes.num_rows == SMALL
    assert any(Path(bad.staging).rglob("*.parquet"))  # kept in quarantine for curators
