"""The long-lived QC worker: same verdicts as in-process, reused, safe to lose.

Each test starts real worker processes (real GX) in a private run directory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from tests.conftest import REPO_ROOT
from tests.helpers import land
from transforms import spec
from transforms.errors import QCError
from transforms.pipeline import gate, ingest_paths, qc


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """Real rows of ``icephys_sweeps`` from one shared ABF, validated in-process."""
    root = tmp_path_factory.mktemp("gate-lake")
    landing, lake = root / "landing", root / "lake"
    land(landing, "171116sh_0018.abf")
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing), publish=False)
    assert [o.status for o in summary.outcomes] == ["published"]
    return DeltaTable(
        str(Path(spec.table_uri("icephys_sweeps", lake=str(lake))))
    ).to_pyarrow_table()


@pytest.fixture()
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Worker mode on, in a private run directory; the worker is stopped afterwards."""
    run = tmp_path / "run"
    monkeypatch.setenv(gate.ENV_MODE, "auto")
    monkeypatch.setenv(gate.ENV_RUN_DIR, str(run))
    monkeypatch.setenv(gate.ENV_IDLE_S, "60")
    yield run
    _stop_workers(run)


def _worker_pids(run: Path) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", "transforms.pipeline.gate"], capture_output=True, text=True
    )
    pids = []
    for pid in out.stdout.split():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if f"{gate.ENV_RUN_DIR}={run}".encode() in environ.split(b"\0"):
            pids.append(int(pid))
    return pids


def _stop_workers(run: Path) -> None:
    for pid in _worker_pids(run):
        os.kill(pid, 9)


def _listening(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        return False
    finally:
        probe.close()
    return True


def _broken(rows: pa.Table) -> pa.Table:
    """Row 0 gets a file_id that fails the suite's regex."""
    ids = rows.column("file_id").to_pylist()
    ids[0] = "not-a-hash"
    return rows.set_column(rows.schema.get_field_index("file_id"), "file_id", pa.array(ids))


def _same(a: qc.QCResult, b: qc.QCResult) -> None:
    assert (a.table, a.success, a.failures, a.unattributed) == (
        b.table,
        b.success,
        b.failures,
        b.unattributed,
    )
    assert a.by_file == b.by_file
    assert [r["success"] for r in a.result["results"]] == [
        r["success"] for r in b.result["results"]
    ]


def test_worker_gives_the_in_process_verdicts(sweeps: pa.Table, worker: Path) -> None:
    for rows in (sweeps, _broken(sweeps)):
        remote = gate.validate("icephys_sweeps", rows)
        local = qc.validate("icephys_sweeps", rows)
        _same(remote, local)
    assert not remote.success and "not-a-hash" in remote.by_file
    (pid,) = _worker_pids(worker)  # one worker served every request
    assert gate.ping() == pid
    assert gate.stop() == pid
    deadline = time.monotonic() + 30
    while _worker_pids(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _worker_pids(worker) and not gate.socket_path().exists()
    assert gate.ping() is None and gate.stop() is None


def test_suite_travels_with_the_request(
    sweeps: pa.Table, worker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate.validate("icephys_sweeps", sweeps)  # the worker is up and has read the suite file
    doc = json.loads(qc.suite_text("icephys_sweeps"))
    doc["expectations"].append(
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "lab", "value_set": ["x"]},
        }
    )
    monkeypatch.setattr(qc, "suite_text", lambda table: json.dumps(doc))
    edited = gate.validate("icephys_sweeps", sweeps)
    assert not edited.success
    assert any("expect_column_values_to_be_in_set" in f for f in edited.failures)


def test_errors_cross_as_typed_errors(
    sweeps: pa.Table, worker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate.validate("icephys_sweeps", sweeps)
    wrong = json.loads(qc.suite_text("icephys_sweeps"))
    wrong["name"] = "another_table"
    monkeypatch.setattr(qc, "suite_text", lambda table: json.dumps(wrong))
    with pytest.raises(QCError, match="another_table"):
        gate.validate("icephys_sweeps", sweeps)


def test_stale_socket_and_dead_worker(sweeps: pa.Table, worker: Path) -> None:
    path = gate.socket_path()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a socket file nobody listens on (a SIGKILLed worker's)
    stale.close()
    assert not _listening(path)
    _same(gate.validate("icephys_sweeps", sweeps), qc.validate("icephys_sweeps", sweeps))
    (first,) = _worker_pids(worker)
    os.kill(first, 9)
    deadline = time.monotonic() + 10
    while _listening(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    # the next request starts a new worker over the dead one's socket
    _same(
        gate.validate("icephys_sweeps", _broken(sweeps)),
        qc.validate("icephys_sweeps", _broken(sweeps)),
    )
    assert _worker_pids(worker) and first not in _worker_pids(worker)


def test_unsafe_run_dir_validates_in_process(
    sweeps: pa.Table,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = tmp_path / "open"
    run.mkdir(mode=0o777)
    run.chmod(0o777)
    monkeypatch.setenv(gate.ENV_MODE, "auto")
    monkeypatch.setenv(gate.ENV_RUN_DIR, str(run))
    with pytest.raises(gate.GateUnavailable, match="open to other users"):
        gate.run_dir()
    _same(gate.validate("icephys_sweeps", sweeps), qc.validate("icephys_sweeps", sweeps))
    assert "in-process" in caplog.text
    assert not list(run.iterdir()), "no socket in a directory others can enter"


def test_too_deep_run_dir_validates_in_process(
    sweeps: pa.Table,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    monkeypatch.setenv(gate.ENV_MODE, "auto")
    monkeypatch.setenv(gate.ENV_RUN_DIR, str(deep))
    with pytest.raises(gate.GateUnavailable, match="too long"):
        gate.socket_path()
    _same(gate.validate("icephys_sweeps", sweeps), qc.validate("icephys_sweeps", sweeps))
    assert "in-process" in caplog.text
    assert not list(deep.iterdir()), "no worker started"


def test_idle_worker_exits(sweeps: pa.Table, worker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gate.ENV_IDLE_S, "1")
    gate.validate("icephys_sweeps", sweeps.slice(0, 3))
    path = gate.socket_path()
    deadline = time.monotonic() + 30
    while (path.exists() or _worker_pids(worker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not path.exists() and not _worker_pids(worker)


_CLI = """
import sys
from transforms.cli import main
rc = main(sys.argv[1:])
print("GX-IMPORTED" if "great_expectations" in sys.modules else "GX-NOT-IMPORTED")
sys.exit(rc)
"""


@pytest.mark.slow
def test_cold_cli_runs_hand_qc_to_one_worker(tmp_path: Path, worker: Path) -> None:
    """Two cold ``neurocyte ingest`` processes: the first starts the worker, neither
    imports GX itself, and both publish with the same QC verdicts as in-process."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    results = {}
    for name, mode in (
        ("171116sh_0018.abf", "auto"),
        ("171116sh_0016.abf", "auto"),
        ("171116sh_0016.abf", "off"),
    ):
        landing, lake = tmp_path / f"landing-{mode}", tmp_path / f"lake-{mode}"
        path = land(landing, name)
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                _CLI,
                "ingest",
                "--landing",
                str(landing),
                "--lake",
                str(lake),
                str(path),
            ],
            capture_output=True,
            text=True,
            env={**env, gate.ENV_MODE: mode},
            timeout=600,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert "[ok ] published" in out.stdout
        results[(name, mode)] = out.stdout
    assert "GX-NOT-IMPORTED" in results[("171116sh_0018.abf", "auto")]
    assert "GX-NOT-IMPORTED" in results[("171116sh_0016.abf", "auto")]
    assert "GX-IMPORTED" in results[("171116sh_0016.abf", "off")]
    assert len(_worker_pids(worker)) == 1
    # the Data Docs the worker rendered exist, as in-process
    for mode in ("auto", "off"):
        assert (tmp_path / f"lake-{mode}" / "qc" / "docs" / "index.html").is_file()
    verdicts = {}
    for mode in ("auto", "off"):
        log = DeltaTable(
            spec.table_uri("ingest_log", lake=str(tmp_path / f"lake-{mode}"))
        ).to_pyarrow_table()
        mine = log.filter(pc.equal(log["file_name"], "171116sh_0016.abf"))
        verdicts[mode] = sorted(
            zip(mine["status"].to_pylist(), mine["reason"].to_pylist(), strict=True)
        )
    assert verdicts["auto"] == verdicts["off"]
