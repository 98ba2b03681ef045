"""Real services for integration tests and benchmarks, run as local processes.

Everything here starts a *real* server on 127.0.0.1 (never a mock): a
PostgreSQL cluster made with ``initdb`` (run as the ``postgres`` user when we
are root: PostgreSQL refuses to run as root), a Redis server, and the Airflow
components (scheduler, dag-processor, triggerer, Celery worker, api-server).
Each runs in its own process group with its output in a log file; every
context manager stops what it started (SIGTERM to the group, then SIGKILL),
also when the body raises. Passwords are generated per run, never defaults.

The services binaries come from Debian's ``postgresql`` and ``redis-server``
(``scripts/ci_services.sh`` installs them).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceDied(RuntimeError):
    """A service process exited while it was needed (never retried)."""


def wait_for(
    check: Callable[[], object], *, timeout: float, what: str, interval: float = 0.5
) -> object:
    """Call ``check`` until it returns something truthy; raise after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except ServiceDied:
            raise
        except Exception as exc:
            last = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s (last error: {last!r})")


# --- processes ------------------------------------------------------------------


@dataclass
class Service:
    """One started process (and its group): name, Popen and log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGTERM

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise ServiceDied(
                f"{self.name} exited with {self.proc.returncode}; log tail:\n{self.tail()}"
            )

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> None:
        """Signal the whole process group, wait, then SIGKILL whatever is left."""
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, self.stop_signal)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)
        # children (celery pool, uvicorn workers, task runners) may outlive the leader
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def start(
    name: str,
    argv: list[str],
    *,
    log: Path,
    env: dict[str, str] | None = None,
    user: str | None = None,
    cwd: Path | None = None,
    stop_signal: int = signal.SIGTERM,
) -> Service:
    """Start ``argv`` in a new session (its own process group), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            user=user,
            start_new_session=True,
        )
    return Service(name=name, proc=proc, log=log, stop_signal=stop_signal)


class ServiceGroup:
    """Services stopped together, last started first (use with ``with``)."""

    def __init__(self) -> None:
        self.services: list[Service] = []

    def add(self, service: Service) -> Service:
        self.services.append(service)
        return service

    def stop_one(self, service: Service) -> None:
        """Stop ``service`` now (a context it belongs to is ending) and forget it."""
        if service in self.services:
            self.services.remove(service)
        service.stop()

    def check_alive(self) -> None:
        for s in self.services:
            s.check_alive()

    def stop(self) -> None:
        errors = []
        for s in reversed(self.services):
            try:
                s.stop()
            except Exception as exc:
                errors.append(f"{s.name}: {exc!r}")
        self.services.clear()
        if errors:
            raise RuntimeError("; ".join(errors))

    def __enter__(self) -> ServiceGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- PostgreSQL -----------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """The directory of ``initdb``/``postgres`` (Debian keeps them off PATH)."""
    found = shutil.which("initdb")
    if found and Path(found).resolve().with_name("postgres").exists():
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def redis_binary() -> str | None:
    return shutil.which("redis-server")


def missing_services() -> list[str]:
    """Which service binaries are missing (``scripts/ci_services.sh`` installs them)."""
    missing = []
    if postgres_bindir() is None:
        missing.append("postgresql (initdb, postgres)")
    if redis_binary() is None:
        missing.append("redis-server")
    return missing


def pg_driver() -> tuple[str, str] | None:
    """SQLAlchemy dialect+driver names (sync, async) for the installed PG drivers.

    Airflow 3 opens a sync *and* an async engine on its metadata DB: psycopg
    (v3) serves both; psycopg2 needs asyncpg beside it for the async one.
    """
    import importlib.util

    def has(mod: str) -> bool:
        return importlib.util.find_spec(mod) is not None

    if has("psycopg"):
        return "postgresql+psycopg", "postgresql+psycopg"
    if has("psycopg2") and has("asyncpg"):
        return "postgresql+psycopg2", "postgresql+asyncpg"
    return None


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    database: str

    def url(self, driver: str = "postgresql+psycopg2") -> str:
        return (
            f"{driver}://{quote(self.user)}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{self.database}"
        )


def _run_as() -> str | None:
    """PostgreSQL refuses root: run it as ``postgres`` (or $NEUROCYTE_PG_USER)."""
    if os.geteuid() != 0:
        return None
    return os.environ.get("NEUROCYTE_PG_USER", "postgres")


@contextlib.contextmanager
def postgres_server(group: ServiceGroup, *, database: str = "airflow") -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster in a temp dir on 127.0.0.1:<free port>; removed on exit.

    The superuser is ``neurocyte`` with a password generated for this run
    (scram-sha-256 for every connection, TCP on loopback only, the unix socket
    inside the temp dir). ``fsync`` is off: a throwaway test database.
    """
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL not installed: run scripts/ci_services.sh")
    user = _run_as()
    base = Path(tempfile.mkdtemp(prefix="neurocyte-pg-"))
    try:
        password = secrets.token_urlsafe(24)
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if user:
            entry = pwd.getpwnam(user)
            for p in (base, pwfile):
                os.chown(p, entry.pw_uid, entry.pw_gid)
        base.chmod(0o700)
        data, sock = base / "data", base / "sock"
        init = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "neurocyte",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            user=user,
            capture_output=True,
            text=True,
            cwd=base,
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        subprocess.run(["mkdir", "-p", str(sock)], user=user, check=True, cwd=base)
        port = free_port()
        server = group.add(
            start(
                "postgres",
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-k",
                    str(sock),
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=300",
                ],
                log=base / "postgres.log",
                user=user,
                cwd=base,
                stop_signal=signal.SIGINT,  # fast shutdown
            )
        )
        env = {**os.environ, "PGPASSWORD": password}

        def ready() -> bool:
            server.check_alive()
            return (
                subprocess.run(
                    [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                    capture_output=True,
                ).returncode
                == 0
            )

        wait_for(ready, timeout=60, what="postgres")
        psql = [
            str(bindir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "neurocyte",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
        ]
        subprocess.run(
            [*psql, "-c", f'CREATE DATABASE "{database}"'],
            env=env,
            check=True,
            capture_output=True,
        )
        try:
            yield Postgres("127.0.0.1", port, "neurocyte", password, database)
        finally:
            group.stop_one(server)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- Redis ------------------------------------------------------------------------


@dataclass(frozen=True)
class Redis:
    host: str
    port: int
    password: str

    def url(self, db: int = 0) -> str:
        return f"redis://:{quote(self.password, safe='')}@{self.host}:{self.port}/{db}"


@contextlib.contextmanager
def redis_server(group: ServiceGroup) -> Iterator[Redis]:
    """``redis-server`` on 127.0.0.1:<free port>, password per run, no persistence."""
    binary = redis_binary()
    if binary is None:
        raise RuntimeError("redis-server not installed: run scripts/ci_services.sh")
    base = Path(tempfile.mkdtemp(prefix="neurocyte-redis-"))
    try:
        password = secrets.token_urlsafe(24)
        port = free_port()
        conf = base / "redis.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\nprotected-mode yes\nrequirepass {password}\n"
            f'daemonize no\nsave ""\nappendonly no\ndir {base}\n'
        )
        conf.chmod(0o600)  # the password is not on any command line
        server = group.add(start("redis", [binary, str(conf)], log=base / "redis.log", cwd=base))
        import redis as redis_client

        def ready() -> bool:
            server.check_alive()
            client = redis_client.Redis(host="127.0.0.1", port=port, password=password)
            try:
                return bool(client.ping())
            finally:
                client.close()

        wait_for(ready, timeout=30, what="redis")
        try:
            yield Redis("127.0.0.1", port, password)
        finally:
            group.stop_one(server)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- Airflow -----------------------------------------------------------------------


def fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@dataclass
class AirflowHome:
    """A temporary AIRFLOW_HOME: ``airflow.cfg`` (no secrets) + secret env vars."""

    home: Path
    api_port: int
    env: dict[str, str] = field(default_factory=dict)

    def airflow(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        """Run one ``airflow`` CLI command against this home; its stdout."""
        out = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and out.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed ({out.returncode}):\n"
                f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
            )
        return out.stdout

    def start(self, group: ServiceGroup, name: str, *args: str) -> Service:
        return group.add(
            start(
                name,
                [sys.executable, "-m", "airflow", *args],
                log=self.home / "services" / f"{name}.log",
                env=self.env,
                cwd=self.home,
            )
        )


def make_airflow_home(
    home: Path,
    *,
    executor: str,
    db_url: str,
    extra_cfg: dict[str, dict[str, str]] | None = None,
    secret_env: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    parallelism: int = 4,
) -> AirflowHome:
    """Write ``home/airflow.cfg`` for ``executor`` on ``db_url`` and build the env.

    Secrets (DB URL, broker URL, Fernet/JWT/API keys, connections) go only into
    the processes' environment, never into the file. No scheduled runs are
    created (``use_job_schedule = False``): only explicitly triggered runs.
    """
    home.mkdir(parents=True, exist_ok=True)
    api_port = free_port()
    cfg: dict[str, dict[str, str]] = {
        "core": {
            "executor": executor,
            "dags_folder": str(REPO / "dags"),
            "plugins_folder": str(REPO / "plugins"),
            "load_examples": "False",
            "parallelism": str(parallelism),
            "execution_api_server_url": f"http://127.0.0.1:{api_port}/execution/",
            "simple_auth_manager_all_admins": "False",
        },
        "database": {"load_default_connections": "False"},
        "scheduler": {
            "use_job_schedule": "False",
            "scheduler_heartbeat_sec": "2",
            "task_queued_timeout": "600",
        },
        "dag_processor": {
            "parsing_processes": "1",
            "refresh_interval": "5",
            "min_file_process_interval": "30",
        },
        "api": {"host": "127.0.0.1", "port": str(api_port), "workers": "1"},
        "logging": {"base_log_folder": str(home / "logs")},
        "triggerer": {"capacity": "50"},
    }
    for section, values in (extra_cfg or {}).items():
        cfg.setdefault(section, {}).update(values)
    lines = []
    for section, values in cfg.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {v}" for k, v in values.items())
        lines.append("")
    (home / "airflow.cfg").write_text("\n".join(lines))

    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "AWS_", "NEUROCYTE_")) or k == "NEUROCYTE_SHARED"
    }
    full_env = {
        **base_env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW_CONFIG": str(home / "airflow.cfg"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "AIRFLOW__CORE__FERNET_KEY": fernet_key(),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "PYTHONUNBUFFERED": "1",
        # the cluster's own QC worker (tasks start it), gone a minute after the last task
        "NEUROCYTE_RUN_DIR": str(home / "qc-run"),
        "NEUROCYTE_QC_WORKER_IDLE_S": "60",
        # keep each process to one thread of BLAS (2 shared cores)
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        **(secret_env or {}),
        **(env or {}),
    }
    return AirflowHome(home=home, api_port=api_port, env=full_env)


def wait_api_ready(af: AirflowHome, service: Service, timeout: float = 180) -> None:
    import urllib.request

    url = f"http://127.0.0.1:{af.api_port}/api/v2/monitor/health"

    def ready() -> bool:
        service.check_alive()
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status == 200

    wait_for(ready, timeout=timeout, what="airflow api-server", interval=1)


class MetaDB:
    """Read-only look-ups in the Airflow metadata DB (SQLAlchemy, any PG driver)."""

    def __init__(self, url: str) -> None:
        import sqlalchemy

        self._sa = sqlalchemy
        self.engine = sqlalchemy.create_engine(url, pool_pre_ping=True)

    def rows(self, sql: str, **params: object) -> list[dict]:
        with self.engine.connect() as con:
            return [dict(r._mapping) for r in con.execute(self._sa.text(sql), params)]

    def scalar(self, sql: str, **params: object) -> object:
        rows = self.rows(sql, **params)
        return next(iter(rows[0].values())) if rows else None

    def close(self) -> None:
        self.engine.dispose()


def wait_dag_parsed(db: MetaDB, dag_id: str, group: ServiceGroup, timeout: float = 180) -> None:
    def parsed() -> bool:
        group.check_alive()
        return bool(db.scalar("SELECT count(*) FROM serialized_dag WHERE dag_id = :d", d=dag_id))

    wait_for(parsed, timeout=timeout, what=f"DAG {dag_id} serialized", interval=2)


def wait_run_finished(
    db: MetaDB, dag_id: str, run_id: str, group: ServiceGroup, timeout: float
) -> str:
    """Poll the dag_run's state until it is success/failed; return it."""

    def finished() -> str | None:
        group.check_alive()
        state = db.scalar(
            "SELECT state FROM dag_run WHERE dag_id = :d AND run_id = :r", d=dag_id, r=run_id
        )
        return str(state) if state in ("success", "failed") else None

    return str(wait_for(finished, timeout=timeout, what=f"run {run_id}", interval=3))


def task_instances(db: MetaDB, dag_id: str, run_id: str) -> list[dict]:
    return db.rows(
        "SELECT task_id, map_index, state, hostname, queue, external_executor_id, "
        "start_date, end_date, duration, try_number FROM task_instance "
        "WHERE dag_id = :d AND run_id = :r ORDER BY task_id, map_index",
        d=dag_id,
        r=run_id,
    )


def trigger(af: AirflowHome, dag_id: str, run_id: str, conf: dict) -> None:
    af.airflow("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf))
