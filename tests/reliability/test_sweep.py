"""The maintenance sweep removes what failed attempts leave behind, after a grace period."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import deltalake
import pytest

from tests.helpers import land, query
from transforms import spec
from transforms.lake import delta as lakeio
from transforms.lake.maintenance import sweep
from transforms.pipeline import ingest_paths

REAL_ABF = "171116sh_0018.abf"
QC_FAIL = "opto_aps_bad_units.abf"


def test_sweep_removes_orphans_staging_temps_and_old_quarantine_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    land(landing, REAL_ABF)
    land(landing, QC_FAIL)
    # 1. a published file, and a quarantined one quarantined twice (two copies)
    first = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert sorted(o.status for o in first.outcomes) == ["published", "quarantined"]
    # (forced: unchanged, it would be not_retried)
    (again,) = ingest_paths(
        [landing / "labA/WT/P14" / QC_FAIL], lake=str(lake), landing=str(landing), force=True
    ).outcomes
    assert again.status == "quarantined"
    # 2. an attempt that appended its rows and then could not log (disk full): orphans
    real_write = deltalake.write_deltalake

    def full_disk_for_the_log(uri, data, *args, **kwargs):
        if str(uri).endswith(f"/tables/{spec.INGEST_LOG}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(uri, data, *args, **kwargs)

    monkeypatch.setattr(deltalake, "write_deltalake", full_disk_for_the_log)
    (orphan,) = ingest_paths(
        [landing / "labA/WT/P14" / REAL_ABF],
        lake=str(lake),
        landing=str(landing),
        force=True,
        publish=False,
    ).outcomes
    monkeypatch.setattr(deltalake, "write_deltalake", real_write)
    assert orphan.status == "failed"
    # 3. a killed run's staging folder and a killed publish's temp file
    stale = lake / "_staging" / ("ab" * 16)
    stale.mkdir(parents=True)
    (stale / "icephys_sweeps.parquet").write_bytes(b"partial")
    temp = lake / ".catalog.duckdb.4242.tmp"
    temp.write_bytes(b"partial")
    before = query(lake, "SELECT * FROM icephys_sweeps ORDER BY sweep_number")
    sweeps_rows = lakeio.count_rows(spec.ICEPHYS_SWEEPS, lake=str(lake))
    assert sweeps_rows == 34  # the published 17 and the orphan attempt's 17

    # within the grace period nothing is touched
    assert sweep(lake=str(lake), grace_hours=24).orphan_rows == {}
    later = time.time() + 25 * 3600
    for p in (stale / "icephys_sweeps.parquet", temp):
        os.utime(p, (time.time() - 25 * 3600,) * 2)
    report = sweep(lake=str(lake), grace_hours=24, now=later)  # dry run by default
    assert report.dry_run
    assert report.orphan_attempts == [orphan.ingest_id]
    assert report.orphan_rows[spec.ICEPHYS_SWEEPS] == 17
    # the killed run's folder, and the folder the failed commit left
    assert sorted(report.staging_dirs) == sorted(
        [str(stale), str(lake / "_staging" / orphan.ingest_id)]
    )
    assert report.catalog_temp_files == [str(temp)]
    assert len(report.quarantine_copies) == 1
    assert lakeio.count_rows(spec.ICEPHYS_SWEEPS, lake=str(lake)) == sweeps_rows  # dry run

    done = sweep(lake=str(lake), grace_hours=24, now=later, dry_run=False)
    assert done.orphan_attempts == [orphan.ingest_id]
    assert lakeio.count_rows(spec.ICEPHYS_SWEEPS, lake=str(lake)) == 17
    assert not stale.exists() and not temp.exists()
    assert not Path(done.quarantine_copies[0]).exists()
    assert sum(1 for _ in (lake / "quarantine").glob("*/*")) == 1
    ingest_paths([], lake=str(lake))  # republish
    assert query(lake, "SELECT * FROM icephys_sweeps ORDER BY sweep_number") == before
    assert sweep(lake=str(lake), grace_hours=0, dry_run=False).orphan_attempts == []
