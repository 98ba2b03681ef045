"""`neurocyte archive`: a published plate into the lake, then read from there alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import query
from transforms import formats
from transforms.cli import main
from transforms.pipeline import ingest_paths
from transforms.pipeline.decode_mea import read_plate
from transforms.serve.archive import archive_path, archive_published
from transforms.serve.raw import fetch_snippet
from transforms.synth.plate import generate_plate


@pytest.fixture
def lake_with_plate(tmp_path: Path) -> tuple[Path, Path, str]:
    landing = tmp_path / "landing"
    folder = landing / "labM" / "WT" / "DIV14"
    plate = generate_plate(
        folder, n_wells=24, duration_s=2.5, seed=9, noise_rms_uv=(1.0, 2.5), write_spk=False
    )
    lake = tmp_path / "lake"
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert summary.counts() == {"published": 1}, [o.reason for o in summary.outcomes]
    (file_id,) = {r[0] for r in query(lake, "SELECT file_id FROM mea_recordings")}
    return lake, plate.raw_path, file_id


def test_archive_then_read_without_the_original(
    lake_with_plate: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake, raw, file_id = lake_with_plate
    before = fetch_snippet(file_id, lake=str(lake), well="B2", start_s=0.5, stop_s=2.5)
    assert before.verification in ("sha256", "fingerprint")
    spikes_before = read_plate(raw, "axion_raw").spikes

    code = main(["archive", file_id, "--lake", str(lake), "--delete-source"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("archived") and "original deleted" in out
    assert not raw.exists()
    dest = archive_path(file_id, lake=str(lake))
    assert dest.is_dir() and dest.parent == lake / "archive" / "raw"

    # raw access finds the archive: the same samples, bit for bit
    after = fetch_snippet(file_id, lake=str(lake), well="B2", start_s=0.5, stop_s=2.5)
    assert after.verification == "archive" and after.source_path == dest
    np.testing.assert_array_equal(after.data, before.data)
    assert after.channels == before.channels
    assert main(["raw", file_id, "--lake", str(lake), "--well", "C3", "--start", "1",
                 "--stop", "2", "--out", str(tmp_path / "w.npy")]) == 0  # fmt: skip
    assert np.load(tmp_path / "w.npy").shape == (12_500, 16)

    # detection reads the archive as it read the original: the same spikes
    spikes_after = read_plate(dest, formats.kind_of(dest)).spikes
    assert spikes_after.num_rows == spikes_before.num_rows > 0
    assert spikes_after.equals(spikes_before)

    # again: nothing to do; --all finds it archived
    assert main(["archive", "--all", "--lake", str(lake)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("exists")
    assert [o.status for o in archive_published(lake=str(lake))] == ["exists"]


def test_archive_all_reports_what_cannot_be_archived(
    lake_with_plate: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    lake, raw, file_id = lake_with_plate
    raw.write_bytes(raw.read_bytes()[:-10])  # the landed file changed since ingest
    assert main(["archive", "--all", "--lake", str(lake)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("failed") and "changed since ingest" in out
    assert not archive_path(file_id, lake=str(lake)).exists()


def test_reingest_after_a_version_bump_reads_the_archive(
    lake_with_plate: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from transforms import spec
    from transforms.lake import maintenance
    from transforms.lake.catalog import publish
    from transforms.pipeline import commit_batch, stage_file
    from transforms.serve.archive import archived_source

    lake, raw, file_id = lake_with_plate
    landing = raw.parents[3]
    spikes_sql = "SELECT electrode, time_s, amplitude_uv FROM mea_spikes ORDER BY ALL"
    wells_sql = "SELECT well, condition, n_active_electrodes FROM mea_well_metrics ORDER BY ALL"
    spikes, wells = query(lake, spikes_sql), query(lake, wells_sql)
    assert main(["archive", file_id, "--lake", str(lake), "--delete-source"]) == 0

    monkeypatch.setattr(spec, "TRANSFORM_VERSION", "9.9.9-test")
    (stale,) = maintenance.stale_files(lake=str(lake))
    assert stale.file_id == file_id and not stale.exists
    archive = archived_source(file_id, lake=str(lake))
    assert archive is not None
    staged = stage_file(archive, lake=str(lake), landing=str(landing))
    assert staged.status == "staged", staged.reason
    (done,) = commit_batch([staged], lake=str(lake))
    assert done.status == "published", done.reason
    publish(lake=str(lake))

    rows = query(
        lake,
        "SELECT DISTINCT file_id, file_name, source_path, source_kind, transform_version "
        "FROM mea_recordings",
    )
    assert rows == [(file_id, raw.name, str(raw), "raw_archive", "9.9.9-test")]
    assert query(lake, spikes_sql) == spikes  # the same detection from the same samples
    assert query(lake, wells_sql) == wells  # and the plate map still found beside it
    assert maintenance.stale_files(lake=str(lake)) == []
