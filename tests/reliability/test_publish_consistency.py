"""publish during a replacement: the catalog shows the old or the new version of the
file, whole, never nothing and never a mix. The replacement runs in a real second
process, interleaved deterministically between publish's reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers import land, query
from transforms import spec
from transforms.lake import catalog
from transforms.lake import delta as lakeio
from transforms.pipeline import ingest_paths

REAL_ABF = "171116sh_0018.abf"


def _replace_in_another_process(path: Path, lake: Path, landing: Path) -> None:
    env = {**os.environ, spec.ENV_LAKE: str(lake), spec.ENV_LANDING: str(landing)}
    cmd = [sys.executable, "-m", "transforms.cli", "ingest", str(path), "--force", "--no-publish"]
    out = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "published" in out.stdout, out.stdout + out.stderr


def _publish_with_a_replacement_after_the_log_read(
    monkeypatch: pytest.MonkeyPatch, path: Path, lake: Path, landing: Path
) -> None:
    real = catalog._snapshot
    done: list[bool] = []

    def snapshot(table: str, *, lake: str | None):
        if table != spec.INGEST_LOG and not done:  # the log is read; the data not yet
            done.append(True)
            _replace_in_another_process(path, Path(lake or ""), landing)
        return real(table, lake=lake)

    monkeypatch.setattr(catalog, "_snapshot", snapshot)
    catalog.publish(lake=str(lake))
    assert done == [True]


@pytest.fixture()
def one_published_cell(tmp_path: Path) -> tuple[Path, Path, Path, str]:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    path = land(landing, REAL_ABF)
    (o,) = ingest_paths([landing], lake=str(lake), landing=str(landing)).outcomes
    assert o.status == "published"
    return path, lake, landing, o.ingest_id


def test_publish_during_a_replacement_shows_one_whole_version(
    one_published_cell, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, lake, landing, old = one_published_cell
    _publish_with_a_replacement_after_the_log_read(monkeypatch, path, lake, landing)
    (published,) = query(lake, "SELECT ingest_id FROM published")
    assert published[0] != old  # the cut was taken again after the log moved
    assert query(lake, "SELECT DISTINCT ingest_id FROM icephys_sweeps") == [published]
    assert query(lake, "SELECT count(*) FROM icephys_sweeps") == [(17,)]
    assert query(lake, "SELECT count(*) FROM icephys_recordings") == [(1,)]


def test_without_the_recheck_the_interleaving_loses_the_file(
    one_published_cell, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same interleaving with the log's version check disabled reproduces the bug
    (the old publish: the log named the old attempt, the data no longer held it)."""
    path, lake, landing, old = one_published_cell
    first = lakeio.table_version(spec.INGEST_LOG, lake=str(lake))
    monkeypatch.setattr(lakeio, "table_version", lambda *_a, **_k: first)
    _publish_with_a_replacement_after_the_log_read(monkeypatch, path, lake, landing)
    assert query(lake, "SELECT ingest_id FROM published") == [(old,)]
    assert query(lake, "SELECT count(*) FROM icephys_sweeps") == [(0,)]
