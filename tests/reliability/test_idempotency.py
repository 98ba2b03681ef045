"""Ingesting the same set twice, or in another order/batching, publishes identical content."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from tests.conftest import ABF_DIR, MEA_DIR
from tests.reliability import check_published, published_checksum, small_abf
from transforms.pipeline import ingest_paths

SPIKE_LIST = MEA_DIR / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"


def _landing(root: Path) -> list[Path]:
    ab = root / "labA" / "WT" / "P14"
    ab.mkdir(parents=True)
    files = [shutil.copyfile(ABF_DIR / "File_axon_7.abf", ab / "File_axon_7.abf")]
    files += [small_abf(root / "labA" / "KO" / "P21" / f"cell{i}.abf", seed=i) for i in range(2)]
    mea = root / "labM" / "ctl" / "DIV3"
    mea.mkdir(parents=True)
    with gzip.open(SPIKE_LIST, "rt") as fh:
        text = "".join(next(fh) for _ in range(2000))
    (mea / "small_spike_list.csv").write_text(text)
    files.append(mea / "small_spike_list.csv")
    (ab / "broken.abf").write_bytes(b"ABF2" + b"\0" * 100)  # fails, in every order
    files.append(ab / "broken.abf")
    return [Path(f) for f in files]


@pytest.mark.timeout(600)
def test_twice_and_reordered_give_identical_published_content(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    files = _landing(landing)
    lake_a, lake_b = tmp_path / "lake_a", tmp_path / "lake_b"

    first = ingest_paths(files, lake=str(lake_a), landing=str(landing))
    assert first.counts() == {"published": 4, "failed": 1}
    once, counts = published_checksum(lake_a)
    again = ingest_paths(files, lake=str(lake_a), landing=str(landing))
    # the broken file, unchanged in content and metadata, is not retried (identity rule)
    assert again.counts() == {"duplicate": 4, "not_retried": 1}
    twice, _ = published_checksum(lake_a)

    ingest_paths(list(reversed(files)), lake=str(lake_b), landing=str(landing), batch_size=1)
    reordered, counts_b = published_checksum(lake_b)

    print(f"IDEMPOTENCY rows per view {counts}")
    assert counts["published"] == 4 and counts["mea_spikes"] > 0 and counts["icephys_sweeps"] > 0
    assert twice == once
    assert counts_b == counts
    assert reordered == once
    for lake in (lake_a, lake_b):
        result = check_published(lake)
        assert not result.problems, result.problems
