"""A full disk at the commit point: no file is reported published without its
``ingest_log`` row, the lake stays consistent, and the next run converges."""

from __future__ import annotations

import errno
from pathlib import Path

import deltalake
import pytest

from tests.helpers import land, query
from transforms import spec
from transforms.lake import delta as lakeio
from transforms.lake.catalog import publish
from transforms.pipeline import ingest_paths

REAL_ABF = "171116sh_0018.abf"


def test_disk_full_at_the_commit_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    land(landing, REAL_ABF)
    real_write = deltalake.write_deltalake

    def full_disk_for_the_log(uri, data, *args, **kwargs):
        if str(uri).endswith(f"/tables/{spec.INGEST_LOG}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(uri, data, *args, **kwargs)

    monkeypatch.setattr(deltalake, "write_deltalake", full_disk_for_the_log)
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing), publish=False)
    (outcome,) = summary.outcomes
    # The data rows were appended, but the commit point failed: never "published".
    assert outcome.status == "failed", outcome
    assert "No space left on device" in outcome.reason
    assert "not logged in ingest_log" in outcome.reason  # the disk is still full
    assert lakeio.count_rows(spec.ICEPHYS_SWEEPS, lake=str(lake)) == 17

    monkeypatch.setattr(deltalake, "write_deltalake", real_write)
    publish(lake=str(lake))  # no traceback: orphan rows stay invisible
    assert query(lake, "SELECT count(*) FROM icephys_sweeps") == [(0,)]
    assert query(lake, "SELECT count(*) FROM published") == [(0,)]

    again = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert [o.status for o in again.outcomes] == ["published"]
    assert query(lake, "SELECT count(*) FROM icephys_sweeps") == [(17,)]
    assert query(lake, "SELECT count(*) FROM icephys_recordings") == [(1,)]
