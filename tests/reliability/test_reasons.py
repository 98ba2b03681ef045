"""Reasons never echo file content beyond a short escaped excerpt, and are capped."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import pytest

from tests.conftest import MEA_DIR
from tests.helpers import query
from transforms import spec
from transforms.lake import delta as lakeio
from transforms.pipeline import ingest_paths
from transforms.pipeline.outcome import Outcome, now_utc, record_failure
from transforms.untrusted import REASON_MAX_CHARS

#: the plugin imports Airflow: its DB is prepared first (tests/conftest.airflow_db)
pytestmark = pytest.mark.usefixtures("airflow_db")

SPIKE_LIST = MEA_DIR / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"
#: Room for the file name and the pointer to the full text after the capped head.
SLACK = 400


def _plate_with_map(landing: Path, sub: str, plate_map: bytes) -> Path:
    folder = landing / "labM" / sub / "DIV3"
    folder.mkdir(parents=True)
    with gzip.open(SPIKE_LIST, "rt") as fh:
        lines = [next(fh) for _ in range(3000)]
    (folder / "p_spike_list.csv").write_text("".join(lines))
    (folder / "p_expLog.csv").write_bytes(plate_map)
    return folder


@pytest.mark.timeout(600)
def test_a_huge_one_line_plate_map_gives_a_small_reason_and_page(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    secretish = b"TOPSECRET"
    # 50 MB on one line, many fields (the csv module's field limit is not hit)
    _plate_with_map(
        landing, "big", b"Well," + secretish + b",".join([b"x" * 100] * 500_000) + b"\n"
    )
    # below the plate-map size cap: read, and its header quoted only as an excerpt
    _plate_with_map(landing, "mid", b"Well," + b",".join([b"y" * 100] * 20_000) + b"\n")
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert [o.status for o in summary.outcomes] == ["failed", "failed"]
    rows = query(lake, "SELECT source_path, reason FROM ingest_log ORDER BY source_path")
    (big_path, big), (mid_path, mid) = rows
    assert "/big/" in big_path and "/mid/" in mid_path
    assert len(big) < REASON_MAX_CHARS + SLACK, len(big)
    assert "p_expLog.csv" in big and "refused" in big
    assert secretish.decode() not in big
    assert len(mid) < 1000, len(mid)  # a short excerpt of the header, not the header
    assert "…(+" in mid and "p_expLog.csv" in mid

    from fastapi.testclient import TestClient
    from neurocyte_plugin import create_app

    with TestClient(create_app(str(lake), require_auth=False)) as client:
        resp = client.get("/api/problems")
    assert resp.status_code == 200
    print(
        f"REASONS: 50 MB plate map -> reason {len(big)} chars, /api/problems {len(resp.content)} B"
    )
    assert len(resp.content) < 20_000, len(resp.content)
    assert len(resp.json()["files"]) == 2


def test_a_long_reason_is_capped_and_kept_in_full_in_quarantine(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    full = "bad.abf: " + "; ".join(f"expectation {i} failed on value {i}" for i in range(20_000))
    out = Outcome(
        source_path=str(tmp_path / "bad.abf"),
        file_name="bad.abf",
        file_id="ab" * 32,
        ingest_id=uuid.uuid4().hex,
        status="failed",
        reason=full,
        started_at=now_utc().isoformat(),
    )
    record_failure(out, lake=str(lake))
    log = lakeio.read_table(spec.INGEST_LOG, lake=str(lake))
    assert log is not None
    (stored,) = log["reason"].to_pylist()
    assert len(stored) < REASON_MAX_CHARS + SLACK
    assert stored.startswith(full[:1000])
    saved = lake / "quarantine" / out.file_id / out.ingest_id / "reason.txt"
    assert f"quarantine/{out.file_id}/{out.ingest_id}/reason.txt" in stored
    assert saved.read_text() == full
