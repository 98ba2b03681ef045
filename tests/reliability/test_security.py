"""Nothing gets in: no path escape, no SQL injection, read-only catalog, no secrets leak."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from tests.conftest import ABF_DIR, REPO_ROOT
from tests.helpers import query
from tests.reliability import check_published, small_abf, worker_env
from transforms import spec
from transforms.pipeline import ingest_paths

INJECTIONS = [
    "'; DROP VIEW published; --",
    "x'); DROP TABLE _catalog; SELECT ('",
    '" OR 1=1; --',
    "Robert'); ATTACH '/tmp/evil.duckdb' AS e; --",
    "{{ source }}",
]


@pytest.fixture(scope="module")
def injected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sec")
    landing = root / "landing"
    files = []
    for i, text in enumerate(INJECTIONS):
        f = small_abf(landing / "labS" / "WT" / "P7" / f"inj{i}.abf", seed=500 + i)
        meta = {"notes": text, "cell_id": text, "subject": f"s{i} {text}"}
        f.with_name(f.name + ".meta.json").write_text(json.dumps(meta))
        files.append(f)
    # partition values that try to leave the lake, through sidecar and folder names
    for i, side in enumerate(
        [{"lab": "../../escape"}, {"timepoint": "/abs"}, {"condition": "a/../../b"}]
    ):
        f = small_abf(landing / "labS" / "WT" / "P7" / f"esc{i}.abf", seed=600 + i)
        f.with_name(f.name + ".meta.json").write_text(json.dumps(side))
        files.append(f)
    lake = root / "lake"
    summary = ingest_paths(files, lake=str(lake), landing=str(landing))
    assert summary.counts() == {"published": len(INJECTIONS), "failed": 3}, [
        (o.file_name, o.reason) for o in summary.outcomes
    ]
    return root, lake


def test_metadata_is_data_not_sql(injected) -> None:
    _root, lake = injected
    con = duckdb.connect(str(lake / spec.CATALOG_FILE), read_only=True)
    sql = "SELECT view_name FROM duckdb_views() WHERE NOT internal"
    views = {r[0] for r in con.execute(sql).fetchall()}
    definitions = " ".join(r[0] for r in con.execute("SELECT sql FROM duckdb_views()").fetchall())
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    con.close()
    defined = {p.stem for p in (REPO_ROOT / "sql").rglob("*.sql")}  # every view the repo defines
    assert {"ingest_log", "published", *spec.DATA_TABLES} <= views
    assert views <= defined
    assert tables == {"_catalog", "_catalog_files"}
    for text in INJECTIONS:
        assert text not in definitions
    stored = {r[0] for r in query(lake, "SELECT notes FROM icephys_recordings")}
    assert stored == set(INJECTIONS)  # verbatim, as values
    cells = {r[0] for r in query(lake, "SELECT cell_id FROM icephys_recordings")}
    assert cells == set(INJECTIONS)
    assert not Path("/tmp/evil.duckdb").exists()
    assert not check_published(lake).problems


def test_partition_values_cannot_leave_the_lake(injected) -> None:
    root, lake = injected
    failed = query(lake, "SELECT file_name, reason FROM ingest_log WHERE status = 'failed'")
    assert {f for f, _ in failed} == {"esc0.abf", "esc1.abf", "esc2.abf"}
    assert all(f in r and "invalid" in r for f, r in failed)
    outside = sorted(p.name for p in root.iterdir())
    assert outside == ["lake", "landing"]
    assert not (root / "escape").exists() and not Path("/abs").exists()
    for path in lake.rglob("*"):
        assert path.resolve().is_relative_to(lake.resolve()), path
    parts = {p.name for p in (lake / "tables").glob("*/*=*")}
    assert parts == {"lab=labS"}


def test_catalog_is_read_only_for_analysts(injected) -> None:
    _root, lake = injected
    con = duckdb.connect(str(lake / spec.CATALOG_FILE), read_only=True)
    for stmt in (
        "DROP VIEW published",
        "CREATE TABLE t (a INT)",
        "INSERT INTO _catalog VALUES ('x', 0, 0, now(), 'x')",
        "CREATE OR REPLACE VIEW published AS SELECT 1",
        "DELETE FROM _catalog",
    ):
        with pytest.raises(duckdb.Error):
            con.execute(stmt)
    con.close()
    # the CLI shell is read-only too: a write fails and the view is still there
    out = subprocess.run(
        [sys.executable, "-m", "transforms.cli", "sql", "--lake", str(lake), "DROP VIEW published"],
        capture_output=True,
        text=True,
        env=worker_env(),
        cwd=str(REPO_ROOT),
        timeout=120,
    )
    assert out.returncode != 0
    assert query(lake, "SELECT count(*) FROM published")[0][0] == len(INJECTIONS)


_SECRET = re.compile(r"PASSWORD|SECRET|FERNET|JWT|TOKEN|_KEY\b|_KEY_", re.I)


def test_compose_has_no_default_secrets() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    yaml.safe_load(text)
    refs = re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)(:?[-?])?([^}]*)\}", text)
    secrets = {name for name, _, _ in refs if _SECRET.search(name)}
    assert secrets, "no secret variables found: check the pattern"
    for name, op, default in refs:
        if name in secrets:
            assert op not in (":-", "-") or default == "", f"${{{name}}} has a default"
    for name in secrets:  # every secret is required somewhere (compose refuses to start)
        assert re.search(rf"\$\{{{name}:\?", text), f"{name} is never required with :?"
    literal = []
    for key, value in _walk(yaml.safe_load(text)):
        required = re.fullmatch(r"\$\{[A-Z0-9_]+(:\?[^}]*)?\}", value)
        if _SECRET.search(key) and value and not value.startswith("/") and not required:
            literal.append(key)
        for m in re.finditer(r"://[^:/@\s]+:([^@\s]+)@", value):
            if not m.group(1).startswith("${"):
                literal.append(key)
        for m in re.finditer(r'"(?:password|secret|login)"\s*:\s*"([^"]*)"', value):
            if not m.group(1).startswith("${"):
                literal.append(key)
    assert not literal, literal
    for line in (REPO_ROOT / ".env.example").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and _SECRET.search(key):
            assert value.strip() == "", f".env.example sets {key}"


def _walk(node, key: str = ""):
    """(key, string value) pairs of a YAML document, lists as KEY=VALUE items."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, str(k))
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, str) and "=" in item:
                k, _, v = item.partition("=")
                yield k, v
            else:
                yield from _walk(item, key)
    elif isinstance(node, str):
        yield key, node


CANARY_KEY = "AKIANEUROCYTECANARY7"
CANARY_SECRET = "neurocyte/canary+secret/0123456789abcdefXYZ"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_no_credential_in_dag_task_logs(tmp_path: Path) -> None:
    """A real ``dag.test()`` run with AWS credentials in the environment: grep every log."""
    landing, lake, home = tmp_path / "landing", tmp_path / "lake", tmp_path / "airflow"
    for name, cond in (("File_axon_7.abf", "WT"), ("opto_aps_bad_units.abf", "KO")):
        dest = landing / "labA" / cond / "P14" / name
        dest.parent.mkdir(parents=True)
        shutil.copyfile(ABF_DIR / name, dest)
    (landing / "labA" / "WT" / "P14" / "broken.abf").write_bytes(b"junk")
    env = worker_env(
        AWS_ACCESS_KEY_ID=CANARY_KEY,
        AWS_SECRET_ACCESS_KEY=CANARY_SECRET,
        AWS_SESSION_TOKEN=CANARY_SECRET + "token",
        NEUROCYTE_LAKE=str(lake),
        NEUROCYTE_LANDING=str(landing),
        AIRFLOW_HOME=str(home),
    )
    out = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "run_dag.py"),
            "neurocyte_ingest",
            "--airflow-home",
            str(home),
            "--conf",
            json.dumps({"settle_s": 0, "max_wait_s": 0}),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(REPO_ROOT),
        timeout=1100,
    )
    assert "dag run state: success" in out.stdout, (out.stdout + out.stderr)[-4000:]
    logs = [p for p in home.rglob("*") if p.is_file() and p.suffix in {".log", ".json", ""}]
    texts = {"stdout": out.stdout, "stderr": out.stderr}
    texts.update({str(p): p.read_text(errors="replace") for p in logs if p.stat().st_size < 50e6})
    assert len(out.stdout) + len(out.stderr) > 1000  # the run did log
    for where, text in texts.items():
        for canary in (CANARY_KEY, CANARY_SECRET):
            assert canary not in text, f"credential in {where}"
    assert query(lake, "SELECT count(*) FROM published")[0][0] == 1


def _pip_audit() -> list[str] | None:
    if shutil.which("pip-audit"):
        return ["pip-audit"]
    probe = subprocess.run([sys.executable, "-m", "pip_audit", "--version"], capture_output=True)
    return [sys.executable, "-m", "pip_audit"] if probe.returncode == 0 else None


#: The CI command (documented in RELIABILITY.md).
AUDIT_CMD = (
    "uv export --frozen --no-emit-project --format requirements-txt > /tmp/requirements.txt && "
    "uvx pip-audit --strict --disable-pip --require-hashes -r /tmp/requirements.txt"
)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dependency_audit(tmp_path: Path) -> None:
    """pip-audit over the locked environment (needs pip-audit and network)."""
    cmd = _pip_audit()
    if cmd is None:
        pytest.skip(f"pip-audit is not installed; CI runs: {AUDIT_CMD}")
    req = tmp_path / "requirements.txt"
    exported = subprocess.run(
        ["uv", "export", "--frozen", "--no-emit-project", "--format", "requirements-txt"],
        capture_output=True,
        text=True,
        cwd=str(REPO_ROOT),
        check=True,
    )
    req.write_text(exported.stdout)
    out = subprocess.run(
        [*cmd, "--strict", "--disable-pip", "--require-hashes", "-r", str(req)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
