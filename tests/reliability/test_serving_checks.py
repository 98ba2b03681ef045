"""Serving checks: malformed doc paths are 404s; raw access detects a same-size overwrite."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ABF_DIR
from transforms.errors import LakeError
from transforms.lake import fingerprints
from transforms.pipeline import ingest_paths
from transforms.serve import raw
from transforms.serve.raw import fetch_snippet

#: the plugin imports Airflow: its DB is prepared first (tests/conftest.airflow_db)
pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    root = tmp_path_factory.mktemp("serve")
    src = root / "landing" / "labA" / "WT" / "P14" / "File_axon_5.abf"
    src.parent.mkdir(parents=True)
    shutil.copyfile(ABF_DIR / "File_axon_5.abf", src)
    src.chmod(0o644)
    summary = ingest_paths([src], lake=str(root / "lake"), landing=str(root / "landing"))
    (o,) = summary.outcomes
    assert o.status == "published", o.reason
    return root / "lake", o.file_id, src


@pytest.mark.parametrize(
    "path",
    [
        "index.html%00.png",
        "%00",
        "x" * 300 + ".html",
        ("y" * 250 + "/") * 20 + "index.html",
    ],
)
def test_malformed_doc_paths_are_not_found(published, path: str) -> None:
    from fastapi.testclient import TestClient
    from neurocyte_plugin import create_app

    lake, _fid, _src = published
    with TestClient(create_app(str(lake), require_auth=False)) as client:
        resp = client.get(f"/qc-docs/{path}")
    assert resp.status_code == 404, (resp.status_code, resp.text[:200])


def test_a_same_size_overwrite_of_a_large_source_is_never_served(
    published, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, fid, src = published
    # treat the file as "large" (hashing it costs seconds): before the fix, such a file
    # was checked by its size only
    monkeypatch.setattr(raw, "HASH_LIMIT_BYTES", 0)
    raw.forget_verified()
    first = fetch_snippet(fid, lake=str(lake), sweep=0, start_s=0, stop_s=0.05)
    assert first.verification == "fingerprint"  # unchanged since staged: no full hash
    original = src.read_bytes()
    stat0 = src.stat()
    data = bytearray(original)
    data[len(data) // 2 + 7] ^= 0xFF  # same size, other content, between sampled blocks
    src.write_bytes(bytes(data))
    os.utime(src, ns=(stat0.st_atime_ns, stat0.st_mtime_ns))  # even with mtime put back
    assert src.stat().st_size == stat0.st_size and src.stat().st_mtime_ns == stat0.st_mtime_ns
    with pytest.raises(LakeError, match="SHA-256"):
        fetch_snippet(fid, lake=str(lake), sweep=0, start_s=0, stop_s=0.05)
    # the original bytes back (a new ctime): hashed in full once, then cheap again
    src.write_bytes(original)
    again = fetch_snippet(fid, lake=str(lake), sweep=0, start_s=0, stop_s=0.05)
    assert again.verification == "sha256"
    raw.forget_verified()  # a new process: the stored fingerprint is used
    assert fetch_snippet(fid, lake=str(lake), sweep=0, start_s=0, stop_s=0.05).verification == (
        "fingerprint"
    )


def test_a_source_replaced_by_a_link_is_refused(published, tmp_path: Path) -> None:
    lake, fid, src = published
    copy = tmp_path / "copy.abf"
    shutil.copyfile(src, copy)
    moved = src.with_name("moved.abf")
    src.rename(moved)
    try:
        src.symlink_to(copy)  # same bytes, but through a link
        with pytest.raises(LakeError, match="regular file"):
            fetch_snippet(fid, lake=str(lake), sweep=0, start_s=0, stop_s=0.05)
    finally:
        src.unlink()
        moved.rename(src)


def test_sampled_digest_covers_first_and_last_blocks(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(bytes(5 * 1024 * 1024))
    base = fingerprints.sample_digest(p)
    for offset in (0, 5 * 1024 * 1024 - 1):
        data = bytearray(p.read_bytes())
        data[offset] = 1
        q = tmp_path / f"g{offset}.bin"
        q.write_bytes(bytes(data))
        assert fingerprints.sample_digest(q) != base
