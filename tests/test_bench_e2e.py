"""Smoke tests of the end-to-end benchmarks' code paths, at small N.

The figures themselves come from ``make bench``; these check that what the benchmarks
measure is what they say: a cold process's own peak RSS, distinct inputs, and that the
scheduler and ``.raw`` plate benchmarks run end to end on a few files and report.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from tests.conftest import ABF_FILES, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import bench_e2e


def test_run_process_reports_each_process_own_peak_rss() -> None:
    """A small process after a big one reports its own peak, not the largest so far."""
    big = bench_e2e.run_process(
        [sys.executable, "-c", "import numpy as np; a = np.ones(40_000_000); print(a.sum())"]
    )
    small = bench_e2e.run_process([sys.executable, "-c", "print(1)"])
    assert big.peak_rss_mb >= 300  # 320 MB of float64 ones, touched
    assert small.peak_rss_mb < 100
    assert big.output.strip() == "40000000.0"
    assert big.cpu_s > 0 and small.wall_s > 0


def test_run_process_failure_names_the_command() -> None:
    with pytest.raises(SystemExit, match="boom"):
        bench_e2e.run_process([sys.executable, "-c", "import sys; sys.exit('boom')"])


def test_distinct_icephys_variants_differ_and_decode(tmp_path: Path) -> None:
    import pyabf

    n = len(ABF_FILES) + 2  # wraps around the corpus: the same source twice
    made = bench_e2e.distinct_icephys(tmp_path, n, offset=7)
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in made}
    sources = {hashlib.sha256(p.read_bytes()).hexdigest() for p in ABF_FILES}
    assert len(digests) == n and not digests & sources
    again = pyabf.ABF(str(made[-1]))
    src = pyabf.ABF(str(ABF_FILES[1]))
    assert (again.sweepCount, again.dataPointCount) == (src.sweepCount, src.dataPointCount)


@pytest.mark.slow
def test_raw_plate_bench_runs_and_cleans_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench_e2e.bench_raw_plates(tmp_path, 1, duration_s=1.0, si_window_s=1.0)
    out = capsys.readouterr().out
    assert "plate 0:" in out and "x real time" in out and "peak RSS" in out
    assert "1 published" in out
    assert "baseline SpikeInterface" in out  # run, or "not run" with the reason
    assert not list(tmp_path.glob("raw_*")) and not list(tmp_path.glob("lake_raw_*"))


@pytest.mark.slow
def test_scheduler_bench_small_n(capsys: pytest.CaptureFixture[str]) -> None:
    """Six distinct corpus variants through the real scheduler, with the CLI baseline."""
    import bench_throughput

    assert bench_throughput.run(6, 3, source="corpus", baseline=True) == 0
    out = capsys.readouterr().out
    assert "run state: success" in out
    assert "files/min" in out and "baseline, same files, same run" in out
    assert "gate_and_commit     2x" in out  # 6 files in batches of 3
