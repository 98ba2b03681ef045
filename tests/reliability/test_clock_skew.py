"""Attempts are ordered by the log, never by a worker's clock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.helpers import land, query
from transforms.pipeline import ingest_paths, outcome

REAL_ABF = "171116sh_0018.abf"


def test_a_reingest_on_a_slow_clock_is_still_the_latest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    land(landing, REAL_ABF)
    first = ingest_paths([landing], lake=str(lake), landing=str(landing))
    (a,) = first.outcomes
    assert a.status == "published"
    real_now = outcome.now_utc
    # The second worker's clock is 5 minutes behind the first one's.
    monkeypatch.setattr(outcome, "now_utc", lambda: real_now() - dt.timedelta(minutes=5))
    second = ingest_paths([landing], lake=str(lake), landing=str(landing), force=True)
    (b,) = second.outcomes
    assert b.status == "published"
    assert query(lake, "SELECT ingest_id FROM published") == [(b.ingest_id,)]
    assert query(lake, "SELECT DISTINCT ingest_id FROM icephys_sweeps") == [(b.ingest_id,)]
    assert query(lake, "SELECT count(*) FROM icephys_sweeps") == [(17,)]
