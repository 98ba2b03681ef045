"""Batches of the ingest DAG's mapped tasks: even, bounded by count and by bytes."""

from __future__ import annotations

import pytest

from transforms.errors import InvalidArgument
from transforms.pipeline.discover import batches

MIB = 2**20


def files(*mib: float) -> list[dict[str, object]]:
    return [{"file_name": f"f{i}.abf", "size_bytes": int(m * MIB)} for i, m in enumerate(mib)]


def test_count_limit_gives_even_batches_in_order() -> None:
    items = list(range(30))
    got = batches(items, size=25)
    assert [len(b) for b in got] == [15, 15]
    assert [x for b in got for x in b] == items
    assert [len(b) for b in batches(list(range(100)), size=25)] == [25] * 4
    assert batches([], size=5) == []


def test_bytes_limit_splits_large_inputs() -> None:
    got = batches(files(*[30] * 100), size=250, max_mb=512)
    assert len(got) == 6  # 3000 MiB / 512 MiB
    assert all(sum(int(f["size_bytes"]) for f in b) <= 512 * MIB for b in got)  # type: ignore[call-overload]
    assert sum(len(b) for b in got) == 100


def test_bytes_limit_does_not_split_small_files_more_than_the_count() -> None:
    got = batches(files(*[1] * 1000), size=250, max_mb=512)
    assert [len(b) for b in got] == [250] * 4


def test_a_file_over_the_limit_goes_alone() -> None:
    got = batches(files(6000, 1, 1, 1, 1, 1), size=250, max_mb=512)
    assert got[0] == files(6000, 1, 1, 1, 1, 1)[:1]
    assert sum(len(b) for b in got) == 6 and len(got) <= 3


def test_items_without_sizes_count_by_number_only() -> None:
    items = [{"path": f"p{i}"} for i in range(7)]
    assert [len(b) for b in batches(items, size=3, max_mb=1)] == [3, 2, 2]


@pytest.mark.parametrize(("size", "max_mb"), [(0, None), (5, 0.0), (5, float("nan"))])
def test_bad_limits_are_refused(size: int, max_mb: float | None) -> None:
    with pytest.raises(InvalidArgument):
        batches([1, 2], size=size, max_mb=max_mb)
