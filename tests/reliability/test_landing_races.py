"""Races at the landing zone: a file rewritten while it is read, overlapping runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ABF_DIR, REPO_ROOT
from tests.helpers import land, query
from tests.reliability import small_abf
from transforms import spec
from transforms.lake import delta as lakeio
from transforms.lake.storage import sha256
from transforms.pipeline import ingest_paths, stage

REAL_ABF = "171116sh_0018.abf"


def test_a_file_rewritten_between_hash_and_decode_is_not_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    path = land(landing, REAL_ABF)
    other = ABF_DIR / "File_axon_5.abf"
    real_decode = stage._decode

    def decode_while_rewritten(source, *args, **kwargs):
        # another writer replaces the bytes in place after they were hashed
        path.write_bytes(other.read_bytes())
        return real_decode(source, *args, **kwargs)

    monkeypatch.setattr(stage, "_decode", decode_while_rewritten)
    (o,) = ingest_paths([landing], lake=str(lake), landing=str(landing)).outcomes
    assert o.status == "failed"
    assert "changed while it was being read" in o.reason
    assert query(lake, "SELECT count(*) FROM published") == [(0,)]
    monkeypatch.setattr(stage, "_decode", real_decode)
    (again,) = ingest_paths([landing], lake=str(lake), landing=str(landing)).outcomes
    assert again.status == "published"
    assert again.file_id == sha256(path) == sha256(other)  # the settled content's id
    assert query(lake, "SELECT file_id FROM published") == [(again.file_id,)]


@pytest.mark.timeout(600)
def test_overlapping_runs_ingest_each_file_once(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    for i in range(6):
        small_abf(landing / "labA" / "WT" / "P14" / f"cell{i}.abf", seed=100 + i)
    env = {**os.environ, spec.ENV_LAKE: str(lake), spec.ENV_LANDING: str(landing)}
    cmd = [sys.executable, "-m", "transforms.cli", "ingest", str(landing), "--no-publish"]
    runs = [
        subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [r.communicate(timeout=500)[0] for r in runs]
    assert all(r.returncode == 0 for r in runs), outputs
    log = lakeio.read_table(spec.INGEST_LOG, lake=str(lake))
    assert log is not None
    attempts = Counter(
        f
        for f, s in zip(log["file_id"].to_pylist(), log["status"].to_pylist(), strict=True)
        if s in ("published", "quarantined", "failed")
    )
    assert len(attempts) == 6
    assert set(attempts.values()) == {1}, attempts  # each file processed by one run only
    assert not list((lake / "_leases").glob("*.json"))  # every lease given back


def test_a_killed_holders_lease_is_taken_over_at_once(tmp_path: Path) -> None:
    """A run killed mid-attempt leaves its lease; the next run must not wait an hour."""
    import subprocess
    import sys

    from transforms.lake import leases

    lake = str(tmp_path / "lake")
    file_id = "a" * 64
    code = (
        "import sys; from transforms.lake import leases; "
        f"held = leases.acquire({file_id!r}, holder='dead', lake={lake!r}); "
        "sys.exit(0 if isinstance(held, leases.Lease) else 1)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # exits holding the lease
    assert (tmp_path / "lake" / "_leases" / f"{file_id}.json").exists()
    held = leases.acquire(file_id, holder="next", lake=lake)
    assert isinstance(held, leases.Lease), held
    # a live holder (this process) keeps it against a third attempt
    assert leases.acquire(file_id, holder="third", lake=lake) == "next"
    leases.release(held)
    assert not list((tmp_path / "lake" / "_leases").iterdir())
