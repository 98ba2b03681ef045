"""The landing zone is untrusted: links are refused, listing is bounded, names are escaped."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import ABF_DIR, MEA_DIR, REPO_ROOT
from tests.helpers import query
from tests.reliability import small_abf, worker_env
from transforms import spec
from transforms.errors import SpecError
from transforms.pipeline import ingest_paths, stage_file
from transforms.pipeline.discover import new_files
from transforms.untrusted import escape, walk

CANARY = "AKIAZZCANARY0SECRET0LINE"
SPIKE_LIST = MEA_DIR / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"


def _secret(tmp_path: Path) -> Path:
    secret = tmp_path / "private" / "credentials"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(f"[default]\naws_secret_access_key = {CANARY}\nWell,Treatment\n")
    return secret


def _small_spike_list(dest: Path) -> Path:
    with gzip.open(SPIKE_LIST, "rt") as fh:
        lines = [next(fh) for _ in range(3000)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("".join(lines))
    return dest


def _log(lake: Path) -> dict[str, tuple[str, str, str, str]]:
    rows = query(lake, "SELECT file_name, status, reason, source_path, file_id FROM ingest_log")
    return {r[0]: r[1:] for r in rows}


def test_links_in_the_landing_zone_are_refused_never_read(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    secret = _secret(tmp_path)
    other_lab = tmp_path / "private" / "other_lab.abf"  # another lab's private recording
    shutil.copyfile(ABF_DIR / "171116sh_0018.abf", other_lab)
    folder = landing / "labA" / "WT" / "P14"
    good = small_abf(folder / "good.abf", seed=1)
    (folder / "mine.abf").symlink_to(other_lab)
    (folder / "passwd.abf").symlink_to("/etc/passwd")
    (folder / "keys_spike_list.csv").symlink_to(secret)
    side = small_abf(folder / "side.abf", seed=2)
    (folder / "side.abf.meta.json").symlink_to(secret)
    # a spike list whose plate map is a link to the secrets file
    plate = landing / "labA" / "plate" / "DIV3"
    _small_spike_list(plate / "p1_spike_list.csv")
    (plate / "p1_expLog.csv").symlink_to(secret)
    # a linked folder, pointing outside the landing zone
    outside = tmp_path / "private" / "lab_b" / "KO" / "P7"
    small_abf(outside / "b.abf", seed=3)
    (landing / "labB").symlink_to(tmp_path / "private" / "lab_b")

    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    by_name = {o.file_name: o for o in summary.outcomes}
    assert by_name["good.abf"].status == "published"
    logged = _log(lake)
    for name in ("mine.abf", "passwd.abf", "keys_spike_list.csv", "labB"):
        status, reason, source, file_id = logged[name]
        assert status == "failed", (name, reason)
        assert "symbolic link" in reason and "refused" in reason, reason
        assert source == str(landing / "labA" / "WT" / "P14" / name) or source == str(
            landing / name
        )  # the link's own path, never its target's
        assert file_id == spec.UNREADABLE_FILE_ID
    assert "symbolic link" in logged["side.abf"][1] and logged["side.abf"][0] == "failed"
    assert "symbolic link" in logged["p1_spike_list.csv"][1]
    assert logged["p1_spike_list.csv"][0] == "failed"
    assert "b.abf" not in logged  # never listed through the linked folder
    # no secret, no outside path and no outside content anywhere in the log or the tables
    everything = repr(query(lake, "SELECT * FROM ingest_log"))
    assert CANARY not in everything and "root:x:0" not in everything
    assert str(secret) not in everything and str(other_lab) not in everything
    published = query(lake, "SELECT file_id, source_path FROM icephys_recordings")
    assert published == [(by_name["good.abf"].file_id, str(good))]
    assert side.exists()


def test_a_path_through_a_linked_folder_is_refused(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    target = tmp_path / "elsewhere" / "WT" / "P7"
    small_abf(target / "x.abf", seed=4)
    (landing / "labA").mkdir(parents=True)
    (landing / "labA" / "WT").symlink_to(tmp_path / "elsewhere" / "WT")
    out = stage_file(landing / "labA" / "WT" / "P7" / "x.abf", lake=str(lake), landing=str(landing))
    assert out.status == "failed"
    assert "symbolic link" in out.reason
    assert not (lake / "tables" / "icephys_recordings").exists()


def test_the_dag_listing_logs_a_link_once_and_never_hashes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    secret = _secret(tmp_path)
    folder = landing / "labA" / "WT" / "P14"
    small_abf(folder / "good.abf", seed=5)
    (folder / "leak.abf").symlink_to(secret)
    found = {c.file_name: c for c in new_files(landing=str(landing), lake=str(lake))}
    assert set(found) == {"good.abf", "leak.abf"}
    assert found["leak.abf"].file_id == spec.UNREADABLE_FILE_ID  # not hashed: never opened
    from neurocyte_tasks.ops import ingest_batch_extract  # the DAG's extract task body

    monkeypatch.setenv(spec.ENV_LANDING, str(landing))
    monkeypatch.setenv(spec.ENV_LAKE, str(lake))
    staged = ingest_batch_extract([c.as_dict() for c in found.values()])
    assert {o["file_name"]: o["status"] for o in staged} == {
        "good.abf": "staged",
        "leak.abf": "failed",
    }
    again = new_files(landing=str(landing), lake=str(lake))
    assert [c.file_name for c in again] == ["good.abf"]  # staged, not yet committed
    from transforms.lake import delta as lakeio

    log = lakeio.read_table(spec.INGEST_LOG, lake=str(lake))
    assert log is not None
    rows = log.to_pylist()
    (leak,) = [r for r in rows if r["file_name"] == "leak.abf"]
    assert leak["status"] == "failed" and "symbolic link" in leak["reason"]
    assert CANARY not in leak["reason"]


_LIST_LOOP = textwrap.dedent(
    """
    import sys
    from transforms.pipeline.discover import new_files
    from transforms.pipeline.run import expand_paths
    found = new_files(landing=sys.argv[1], lake=sys.argv[2])
    print(sorted(c.file_name for c in found))
    print(sorted(p.name for p in expand_paths([sys.argv[1]])))
    """
)


def test_self_referencing_links_do_not_hang_the_listing(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    folder = landing / "labA" / "WT" / "P14"
    small_abf(folder / "a.abf", seed=6)
    small_abf(folder / "b.abf", seed=7)
    os.symlink(".", folder / "l1")
    os.symlink(".", folder / "l2")
    os.symlink("..", landing / "labA" / "up")
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", _LIST_LOOP, str(landing), str(lake)],
        capture_output=True,
        text=True,
        env=worker_env(),
        cwd=str(REPO_ROOT),
        timeout=60,  # before the fix: never returns, RSS grows ~10 MB/s
    )
    assert out.returncode == 0, out.stderr
    print(f"LINK-LOOP: listed in {time.monotonic() - started:.1f} s (with interpreter start)")
    sensed, expanded = out.stdout.splitlines()
    # each real file once; each link once, as itself (refused at staging)
    assert sensed == "['a.abf', 'b.abf', 'l1', 'l2', 'up']"
    assert expanded == "['a.abf', 'b.abf', 'l1', 'l2', 'up']"


def test_listing_is_bounded_with_a_clear_failure(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*[f"d{i}" for i in range(6)])
    deep.mkdir(parents=True)
    (deep / "x.abf").write_bytes(b"x")
    assert [e.path for e in walk(tmp_path).files] == [deep / "x.abf"]
    with pytest.raises(SpecError, match="more than 3 folders"):
        walk(tmp_path, max_depth=3)
    for i in range(20):
        (tmp_path / f"f{i}.abf").write_bytes(b"x")
    with pytest.raises(SpecError, match="after 10 entries"):
        walk(tmp_path, max_entries=10)
    with pytest.raises(SpecError, match="time budget"):
        walk(tmp_path, budget_s=0.0)
    os.mkfifo(tmp_path / "pipe.abf")  # a FIFO is not listed (opening it would block)
    assert {e.path.name for e in walk(tmp_path).files} == {"x.abf"} | {
        f"f{i}.abf" for i in range(20)
    }


def test_a_newline_in_a_name_cannot_forge_an_output_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    folder = landing / "labA" / "WT" / "P14"
    forged = "evil.abf\n[ok ] published  forged.abf"
    small_abf(folder / "bad.abf", seed=8).write_bytes(b"not an abf")
    os.rename(folder / "bad.abf", folder / forged)
    out = subprocess.run(
        [sys.executable, "-m", "transforms.cli", "ingest", str(landing), "--no-publish"],
        capture_output=True,
        text=True,
        env=worker_env(**{spec.ENV_LAKE: str(lake), spec.ENV_LANDING: str(landing)}),
        cwd=str(REPO_ROOT),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert not [ln for ln in lines if ln.startswith("[ok ]")], lines
    (line,) = [ln for ln in lines if ln.startswith("[ERR]")]
    assert escape(forged) in line and "\\n[ok ] published" in line
    # the DAG's task log: one line per file, escaped
    from neurocyte_tasks.ops import file_log

    with caplog.at_level(logging.INFO, logger="neurocyte.tasks"):
        file_log(logging.INFO, "0" * 64, forged, "extract: %s %s", "failed", "x\ny")
    (record,) = caplog.records
    assert "\n" not in record.getMessage()


def test_long_names_are_refused_clearly(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    folder = landing / "labA" / "WT" / "P14"
    name = "c" * 246 + ".abf"  # 250 bytes: its sidecar name would exceed 255
    small_abf(folder / name, seed=9)
    ok = small_abf(folder / ("d" * 200 + ".abf"), seed=10)
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    by_name = {o.file_name: o for o in summary.outcomes}
    assert by_name[ok.name].status == "published"
    bad = by_name[name]
    assert bad.status == "failed"
    assert "file name of 250 bytes refused" in bad.reason, bad.reason
    assert "internal error" not in bad.reason and "too long" not in bad.reason.lower()


def test_a_landing_root_named_through_a_linked_prefix_still_works(tmp_path: Path) -> None:
    real = tmp_path / "real"
    small_abf(real / "landing" / "labA" / "WT" / "P14" / "c.abf", seed=11)
    (tmp_path / "alias").symlink_to(real)  # e.g. /data -> /mnt/disk1: the operator's prefix
    landing = tmp_path / "alias" / "landing"
    summary = ingest_paths([landing], lake=str(tmp_path / "lake"), landing=str(landing))
    (o,) = summary.outcomes
    assert o.status == "published", o.reason
    assert o.partition == {"lab": "labA", "condition": "WT", "timepoint": "P14"}
