"""The QC gate as a long-lived local worker: Great Expectations loaded once per machine.

Importing Great Expectations and building its context costs about 3 s of CPU, more
than everything else a one-file ``neurocyte ingest`` does. A cold CLI run (or an
Airflow task, each a fresh process) would pay it every time. So the gate runs in a
worker process that stays up between runs (like ``dmypy``): the first run starts it
early, so its GX import overlaps decoding on the other core, and later runs hand
their tables to it over a Unix socket (Arrow IPC in, the :class:`~qc.QCResult` as
JSON out).

Rules that keep this as safe as validating in-process:

* The worker's results are :func:`qc.validate`'s own; the suite's text travels with
  every request, so an edited suite is never validated against a stale copy.
* The socket lives in a directory only this user can enter (``0700``, owner
  checked), and the worker refuses peers of another user.
* One worker per Python, package and GX version (the socket name is a digest of
  them), so two checkouts or a code change never share a stale worker.
* It exits after :data:`DEFAULT_IDLE_S` seconds without a request.
* Whenever the worker cannot be reached or fails unexpectedly, the gate runs
  in-process and logs why: a missing worker only costs time.
* :class:`~transforms.errors.QCError` and :class:`~transforms.errors.ResourceLimit`
  raised in the worker are raised again here, with the same message.

``NEUROCYTE_QC_WORKER=off`` validates in-process always;
``NEUROCYTE_QC_WORKER_IDLE_S`` sets the idle timeout; ``NEUROCYTE_RUN_DIR`` the
socket directory (default ``$XDG_RUNTIME_DIR/neurocyte``, else
``/tmp/neurocyte-<uid>``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import socket
import socketserver
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final, Literal

import pyarrow as pa

from transforms import spec
from transforms.errors import QCError, ResourceLimit
from transforms.pipeline import qc

log = logging.getLogger(__name__)

ENV_MODE: Final = "NEUROCYTE_QC_WORKER"
ENV_IDLE_S: Final = "NEUROCYTE_QC_WORKER_IDLE_S"
ENV_RUN_DIR: Final = "NEUROCYTE_RUN_DIR"
#: A worker with no request for this long exits (15 minutes).
DEFAULT_IDLE_S: Final = 900.0
#: How long a client waits for a worker it started to listen (its GX import).
START_WAIT_S: Final = 120.0
#: How long a client waits for one reply (a 10 M-row slice takes seconds).
REPLY_WAIT_S: Final = 1800.0

_HEADER = struct.Struct(">I")
_BODY = struct.Struct(">Q")
#: Requests larger than this are refused by the worker (a malformed length prefix).
_MAX_HEADER_BYTES: Final = 16 << 20
#: Exceptions the worker sends back by name, to be raised again by the client.
_RERAISED: Final = {"QCError": QCError, "ResourceLimit": ResourceLimit}

Mode = Literal["auto", "off"]


class GateUnavailable(Exception):
    """The worker could not be reached or failed unexpectedly (the gate then runs in-process)."""


# -- where the worker lives ---------------------------------------------------------


def mode() -> Mode:
    """``auto`` (use the worker, starting it if needed) or ``off`` (always in-process)."""
    text = os.environ.get(ENV_MODE, "auto").strip().lower() or "auto"
    if text in ("off", "0", "false", "no", "local"):
        return "off"
    return "auto"


def run_dir() -> Path:
    """The private directory holding the worker's socket, lock and log.

    Raises
    ------
    GateUnavailable
        If the directory is not owned by this user or others can enter it.
    """
    explicit = os.environ.get(ENV_RUN_DIR, "").strip()
    if explicit:
        path = Path(explicit)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "neurocyte"
    else:
        path = Path(tempfile.gettempdir()) / f"neurocyte-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise GateUnavailable(f"{path} is not a directory owned by this user")
    if info.st_mode & 0o077:
        raise GateUnavailable(f"{path} is open to other users (mode {oct(info.st_mode & 0o777)})")
    return path


def worker_key() -> str:
    """What a worker must share with its clients: Python, this package's code, GX's version."""
    here = Path(__file__).resolve()
    digest = hashlib.sha256()
    for part in (sys.executable, sys.version, str(here.parent.parent), spec.TRANSFORM_VERSION):
        digest.update(part.encode() + b"\0")
    digest.update(importlib.metadata.version("great_expectations").encode() + b"\0")
    for source in (here, here.with_name("qc.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


#: Linux's limit for a Unix socket's path (``sun_path``), less its terminating NUL.
_MAX_SOCKET_PATH_BYTES: Final = 107


def socket_path() -> Path:
    """The worker's socket in :func:`run_dir`.

    Raises
    ------
    GateUnavailable
        If the path is too long for a Unix socket (a deep ``NEUROCYTE_RUN_DIR``).
    """
    path = run_dir() / f"qc-{worker_key()}.sock"
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH_BYTES:
        raise GateUnavailable(f"socket path too long for a Unix socket: {path}")
    return path


# -- framing ------------------------------------------------------------------------


def _recv_exact(conn: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = conn.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("connection closed mid-message")
        got += k
    return buf


def _ipc_write(sink: Any, rows: pa.Table) -> None:
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)


def _send_message(
    conn: socket.socket, header: dict[str, Any], rows: pa.Table | None = None
) -> None:
    """A JSON header, then ``rows`` as an Arrow IPC stream written straight into the socket."""
    data = json.dumps(header, default=str).encode()
    size = 0
    if rows is not None:
        sizer = pa.MockOutputStream()  # the stream's length, without building it
        _ipc_write(sizer, rows)
        size = sizer.size()
    conn.sendall(_HEADER.pack(len(data)) + data + _BODY.pack(size))
    if rows is not None:
        with conn.makefile("wb") as out:
            _ipc_write(out, rows)


def _recv_message(conn: socket.socket) -> tuple[dict[str, Any], bytearray]:
    (n,) = _HEADER.unpack(_recv_exact(conn, _HEADER.size))
    if n > _MAX_HEADER_BYTES:
        raise ConnectionError(f"header of {n} bytes refused")
    header = json.loads(_recv_exact(conn, n))
    (m,) = _BODY.unpack(_recv_exact(conn, _BODY.size))
    return header, _recv_exact(conn, m) if m else bytearray()


# -- client ---------------------------------------------------------------------------


def _spawn(path: Path) -> None:
    """Start a worker detached from this process (its own session, output to a log)."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    idle = os.environ.get(ENV_IDLE_S, "").strip() or str(DEFAULT_IDLE_S)
    with open(path.with_suffix(".log"), "ab") as out:
        # not ``-m``: the package's __init__ imports this module before runpy would
        entry = "import sys; from transforms.pipeline.gate import main; sys.exit(main())"
        subprocess.Popen(
            [sys.executable, "-c", entry, "serve", "--socket", str(path), "--idle-s", idle],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
            close_fds=True,
        )


def _connect(path: Path, *, wait_s: float, start: bool) -> socket.socket:
    deadline = time.monotonic() + wait_s
    started = False
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(path))
            return conn
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            conn.close()
            if start and not started:
                _spawn(path)
                started = True
            if time.monotonic() >= deadline:
                raise GateUnavailable(f"no QC worker at {path}") from exc
            time.sleep(0.05)
        except OSError as exc:
            conn.close()
            raise GateUnavailable(f"QC worker at {path}: {exc}") from exc


def warm() -> None:
    """Start the worker now if it is not running, without waiting for it.

    Called when a run begins: the worker imports GX on the other core while this
    process decodes.
    """
    if mode() == "off":
        return
    try:
        path = socket_path()
        _connect(path, wait_s=0.0, start=True).close()
    except GateUnavailable as exc:
        log.debug("QC worker not started: %s", exc)


def _call(
    header: dict[str, Any], rows: pa.Table | None = None, *, start: bool = True
) -> dict[str, Any]:
    try:
        path = socket_path()
        conn = _connect(path, wait_s=START_WAIT_S if start else 0.0, start=start)
    except OSError as exc:
        raise GateUnavailable(str(exc)) from exc
    with conn:
        conn.settimeout(REPLY_WAIT_S)
        try:
            _send_message(conn, header, rows)
            reply, _ = _recv_message(conn)
        except (OSError, ValueError) as exc:
            raise GateUnavailable(f"QC worker at {path}: {exc!r}") from exc
    error = reply.get("error")
    if error:
        kind = _RERAISED.get(str(error.get("type")))
        if kind is not None:
            raise kind(str(error.get("message")))
        raise GateUnavailable(f"QC worker failed: {error.get('type')}: {error.get('message')}")
    return reply


def ping(*, start: bool = False) -> int | None:
    """The running worker's process id; None if none runs (``start=True`` starts one)."""
    try:
        return int(_call({"op": "ping"}, start=start)["pid"])
    except GateUnavailable:
        return None


def stop() -> int | None:
    """Ask the running worker to exit (after any request in progress); its pid, or None."""
    try:
        reply = _call({"op": "stop"}, start=False)
    except GateUnavailable:
        return None
    return int(reply["pid"])


def validate(table: str, rows: pa.Table, *, index_column: str = "file_id") -> qc.QCResult:
    """:func:`qc.validate`, in the worker when it can be used, else in this process."""
    if mode() == "off":
        return qc.validate(table, rows, index_column=index_column)
    rows = rows.select(qc.suite_columns(table, rows.column_names, keep=index_column))
    header = {
        "op": "validate",
        "table": table,
        "index_column": index_column,
        "suite": qc.suite_text(table),
    }
    try:
        reply = _call(header, rows)
    except GateUnavailable as exc:
        log.warning("QC gate in-process: %s", exc)
        return qc.validate(table, rows, index_column=index_column)
    return qc.QCResult(
        table=reply["table"],
        success=bool(reply["success"]),
        failures=tuple(reply["failures"]),
        by_file={str(k): list(v) for k, v in reply["by_file"].items()},
        unattributed=tuple(reply["unattributed"]),
        result=reply["result"],
    )


def build_data_docs(*, lake: str | None = None) -> Path:
    """:func:`qc.build_data_docs`, rendered by the worker when there is a page to build."""
    if mode() == "off" or not qc.docs_pending(lake=lake):
        return qc.build_data_docs(lake=lake)
    try:
        reply = _call({"op": "data_docs", "lake": str(spec.lake_root(lake))})
    except GateUnavailable as exc:
        log.warning("QC Data Docs in-process: %s", exc)
        return qc.build_data_docs(lake=lake)
    return Path(reply["index"])


# -- worker ---------------------------------------------------------------------------


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        conn: socket.socket = self.request
        if not self.server.same_user(conn):
            return
        try:
            header, body = _recv_message(conn)
        except (OSError, ValueError) as exc:
            log.warning("bad request: %r", exc)
            return
        with self.server.busy():
            reply = self.server.answer(header, body)
        with contextlib.suppress(OSError):  # the client gave up; nothing to tell it
            _send_message(conn, reply)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, *, idle_s: float) -> None:
        super().__init__(str(path), _Handler)
        os.chmod(path, 0o600)
        self.idle_s = idle_s
        self.gate_lock = threading.Lock()  # GX's context is not known to be thread-safe
        self.active = 0
        self.last_request = time.monotonic()
        self._count_lock = threading.Lock()

    def same_user(self, conn: socket.socket) -> bool:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid == os.getuid()

    @contextlib.contextmanager
    def busy(self) -> Any:
        with self._count_lock:
            self.active += 1
        try:
            yield
        finally:
            with self._count_lock:
                self.active -= 1
                self.last_request = time.monotonic()

    def idle_for(self) -> float:
        with self._count_lock:
            return 0.0 if self.active else time.monotonic() - self.last_request

    def answer(self, header: dict[str, Any], body: bytearray) -> dict[str, Any]:
        try:
            with self.gate_lock:
                return self._answer(header, body)
        except (QCError, ResourceLimit) as exc:
            return {"error": {"type": type(exc).__name__, "message": str(exc)}}
        except MemoryError as exc:
            return {"error": {"type": "ResourceLimit", "message": f"QC worker: {exc!r}"}}
        except Exception as exc:  # reported to the client, which then validates in-process
            log.exception("request failed")
            return {"error": {"type": type(exc).__name__, "message": str(exc)}}

    def _answer(self, header: dict[str, Any], body: bytearray) -> dict[str, Any]:
        op = header.get("op")
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "stop":
            threading.Thread(target=self.shutdown, daemon=True).start()
            return {"pid": os.getpid()}
        if op == "validate":
            rows = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
            res = qc.validate(
                str(header["table"]),
                rows,
                index_column=str(header["index_column"]),
                suite=str(header["suite"]),
            )
            del rows
            pa.default_memory_pool().release_unused()
            return {
                "table": res.table,
                "success": res.success,
                "failures": list(res.failures),
                "by_file": res.by_file,
                "unattributed": list(res.unattributed),
                "result": res.result,
            }
        if op == "data_docs":
            return {"index": str(qc.build_data_docs(lake=str(header["lake"])))}
        raise QCError(f"unknown QC worker request {op!r}")


def serve(path: Path, *, idle_s: float = DEFAULT_IDLE_S) -> int:
    """Run a worker on ``path`` until it has been idle for ``idle_s`` seconds.

    Returns 0 at once if another worker holds the socket's lock (two clients
    started one each).
    """
    lock = open(path.with_suffix(".lock"), "a+b")  # noqa: SIM115 - held for the worker's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0
    path.unlink(missing_ok=True)  # a killed worker's socket: nobody listens on it
    server = _Server(path, idle_s=idle_s)
    inode = path.stat().st_ino
    qc.warm_up()  # GX imported and its context built before the first request is read

    def watch() -> None:
        while server.idle_for() < idle_s:
            time.sleep(min(1.0, idle_s / 4))
        server.shutdown()

    threading.Thread(target=watch, daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_ino == inode:
                path.unlink()
        lock.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transforms.pipeline.gate")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the QC worker")
    p.add_argument("--socket", type=Path, required=True)
    p.add_argument("--idle-s", type=float, default=DEFAULT_IDLE_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    return serve(args.socket, idle_s=args.idle_s)


if __name__ == "__main__":
    sys.exit(main())
