"""Leases: one attempt at a time per file, across overlapping runs.

Four CLI runs started over the same landing folder used to ingest each file two or
three times. Before a run stages a file it takes the file's lease,
``<lake>/_leases/<file_id>.json``, created atomically (``O_CREAT | O_EXCL``); a run
that finds the lease held by another, unexpired attempt leaves the file to it. The
lease is released when the attempt's outcome is logged, and expires after
``ttl_s``. A lease also names the process holding it (host, pid and the process's
start time, so a reused pid is not mistaken for the holder): a lease whose holder
process on this host has died is stale at once, so a killed run never blocks the
next one. A stale lease is taken over by renaming it away first (only one taker's
rename succeeds).

Local lakes only: an ``s3://`` lake has no atomic create-if-absent through the
storage layer used here, and its writers are the DAG's tasks, which
``max_active_runs=1`` already serialises.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from transforms import spec

#: How long a lease holds without being released (a killed run's lease then expires).
DEFAULT_TTL_S: Final = 3600.0


@dataclass(frozen=True)
class Lease:
    """A held lease: the attempt holding it and where it is."""

    file_id: str
    holder: str
    path: Path | None  # None: no lease needed (remote lake)


def lease_dir(lake: str | None = None) -> Path | None:
    """``<lake>/_leases`` for a local lake; None for a remote one."""
    root = spec.lake_root(lake)
    return None if spec.is_remote(root) else Path(root) / "_leases"


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (None: no such process).

    Field 22 of ``/proc/<pid>/stat``; where ``/proc`` is missing, ``""`` for a live
    pid (no reuse check then).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""
    except OSError:
        return ""
    # the command name (field 2) may hold spaces and parentheses: split after its ')'
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def _owner() -> dict[str, object]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _process_start(pid) or ""}


def _holder_dead(doc: dict[str, object]) -> bool:
    """True when the lease's holder process ran on this host and is gone."""
    pid = doc.get("pid")
    if doc.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False  # another host's process: only its expiry tells
    started = _process_start(pid)
    if started is None:
        return True
    return bool(doc.get("started")) and bool(started) and started != doc.get("started")


def _read(path: Path) -> dict[str, object] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def acquire(
    file_id: str, *, holder: str, lake: str | None = None, ttl_s: float = DEFAULT_TTL_S
) -> Lease | str:
    """Take the lease of ``file_id`` for attempt ``holder``.

    Returns
    -------
    Lease or str
        The lease, or the holder that has it now (the file is being ingested by
        another run).
    """
    spec.check_file_id(file_id)
    folder = lease_dir(lake)
    if folder is None:
        return Lease(file_id, holder, None)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{file_id}.json"
    body = json.dumps({"holder": holder, "expires_at": time.time() + ttl_s, **_owner()}).encode()
    for _ in range(3):
        # Created whole or not at all: the body is written to a private file first and
        # linked into place (link fails if the lease exists), so no reader ever sees an
        # empty lease that it could mistake for a dead run's.
        tmp = folder / f".{file_id}.{uuid.uuid4().hex}.new"
        tmp.write_bytes(body)
        try:
            os.link(tmp, path)
        except FileExistsError:
            doc = _read(path)
            if doc is not None and doc.get("holder") == holder:
                return Lease(file_id, holder, path)  # this attempt's (another part of it)
            expires = doc.get("expires_at") if doc else None
            if (
                doc is not None
                and isinstance(expires, int | float)
                and expires > time.time()
                and not _holder_dead(doc)
            ):
                return str(doc.get("holder", "?"))
            # expired, its process gone, or unreadable (a run killed while writing it)
            with contextlib.suppress(FileNotFoundError):  # another run took it over first
                path.rename(path.with_name(f".{path.name}.{uuid.uuid4().hex}.expired"))
            continue
        finally:
            tmp.unlink(missing_ok=True)
        return Lease(file_id, holder, path)
    doc = _read(path)
    return str(doc.get("holder", "?")) if doc else "?"


def release(lease: Lease | None) -> None:
    """Give the lease back (nothing if another attempt has taken it over meanwhile)."""
    if lease is None or lease.path is None:
        return
    doc = _read(lease.path)
    if doc is not None and doc.get("holder") == lease.holder:
        lease.path.unlink(missing_ok=True)
    for stale in lease.path.parent.glob(f".{lease.path.name}.*.expired"):
        stale.unlink(missing_ok=True)


def release_id(file_id: str, *, holder: str, lake: str | None = None) -> None:
    """:func:`release` by file_id and holder (the commit step knows only the outcome)."""
    folder = lease_dir(lake)
    if folder is None:
        return
    release(Lease(spec.check_file_id(file_id), holder, folder / f"{file_id}.json"))
