"""glibc malloc settings for ingest workers.

Feature extraction makes many short-lived arrays of a few MB (a block of
sweeps, its filtered copies). With glibc's defaults each of them is mapped
fresh and given back on ``free``, so the next one page-faults on every 4 KB:
on the benchmark machine that is a quarter of the per-cell time (20.7 ms ->
15 ms with the settings below). Keeping freed memory in the process trades a
bounded amount of resident memory (at most ``trim_threshold_bytes`` of free
heap) for not faulting it in again.

The settings are process-wide, so only worker entry points apply them
(:func:`transforms.ingest.stage_file`, the benchmarks), never a library
function as a side effect of computing something.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
from collections.abc import Iterator
from typing import Final

from transforms.formats.axis_spikelist import ENV_WORKER_MEMORY_MB

#: Arrays up to this size come from the heap instead of their own mapping
#: (glibc's own ceiling for its adaptive threshold).
MMAP_THRESHOLD_BYTES: Final = 32 << 20
#: Free memory kept at the top of the heap before it is returned to the OS.
TRIM_THRESHOLD_BYTES: Final = 128 << 20
#: Set to ``0`` to keep glibc's defaults.
ENV_SWITCH: Final = "NEUROCYTE_MALLOC_TUNING"

_M_TRIM_THRESHOLD: Final = -1  # from glibc's <malloc.h>
_M_MMAP_THRESHOLD: Final = -3

log = logging.getLogger(__name__)

_applied: dict[str, int] = {}


def retain_freed_memory(
    *,
    mmap_threshold_bytes: int = MMAP_THRESHOLD_BYTES,
    trim_threshold_bytes: int = TRIM_THRESHOLD_BYTES,
) -> dict[str, int]:
    """Make glibc keep freed multi-MB blocks for reuse instead of unmapping them.

    Parameters
    ----------
    mmap_threshold_bytes
        Allocations at least this large get their own mapping.
    trim_threshold_bytes
        Free heap above this is returned to the OS.

    Returns
    -------
    dict
        The settings in force (empty when not applied: not glibc, or
        ``$NEUROCYTE_MALLOC_TUNING`` is ``0``). Setting either value turns off
        glibc's adaptive thresholds, so both are always set together.
    """
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        return {}
    wanted = {
        "mmap_threshold_bytes": mmap_threshold_bytes,
        "trim_threshold_bytes": trim_threshold_bytes,
    }
    if _applied == wanted:
        return dict(_applied)
    libc = _glibc()
    if libc is None:
        return {}
    # the mmap threshold first: glibc refuses values above its ceiling, and
    # then nothing has changed yet (the trim threshold takes any value)
    if libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold_bytes)) != 1:
        return {}
    libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold_bytes))
    _applied.clear()
    _applied.update(wanted)
    return dict(_applied)


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return None  # musl and others: no glibc malloc to tune
    return libc


#: BLAS threads of an ingest worker; set ``NEUROCYTE_BLAS_THREADS`` to change it.
BLAS_ENV: Final = "NEUROCYTE_BLAS_THREADS"
_BLAS_VARS: Final = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_blas_limited: list[int] = []


def limit_blas_threads() -> int | None:
    """Run BLAS single-threaded in this (ingest worker) process; return the limit set.

    One file is one task on one core, and its vectors are small: OpenBLAS threads a
    dot product of more than a few thousand samples, and on a loaded machine every
    such call then waits for a second thread to be scheduled. Measured on the
    2-core development machine at load 8: ``v @ v`` of 60,000 samples took 1.2 ms
    wall (0.3 ms CPU) with 2 threads, 47 µs (6.5 µs CPU) with 1; the plan step of
    feature extraction spent 70 ms per file in such calls. The results are the same
    (the corpus's decoded sweeps and feature tables are bit-identical, checked with
    ``scripts/feature_digests.py``).

    Libraries already loaded are limited through threadpoolctl; the environment
    variables (``OPENBLAS_``/``MKL_NUM_THREADS``, not ``OMP_NUM_THREADS``, which
    would also size Arrow's thread pool) cover those loaded later. A user's own
    ``OPENBLAS_NUM_THREADS`` (or ``OMP_``/``MKL_``) is left alone, as is
    ``NEUROCYTE_BLAS_THREADS=0``.
    """
    if _blas_limited:
        return _blas_limited[0]
    text = os.environ.get(BLAS_ENV, "1").strip() or "1"
    if not text.isdigit():
        logging.getLogger(__name__).warning("%s=%r is not a count: using 1", BLAS_ENV, text)
        text = "1"
    wanted = int(text)
    if wanted <= 0 or any(v in os.environ for v in _BLAS_VARS):
        return None
    # not OMP_NUM_THREADS: Arrow sizes its own thread pool from it
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(wanted)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=wanted, user_api="blas")
    _blas_limited[:] = [wanted]
    return wanted


#: glibc settings under a memory budget: at most this many malloc arenas, blocks
#: from this size mapped on their own, free heap above this returned at once.
BUDGET_ARENAS: Final = 2
BUDGET_MMAP_THRESHOLD_BYTES: Final = 4 << 20
BUDGET_TRIM_THRESHOLD_BYTES: Final = 16 << 20
_M_ARENA_MAX: Final = -8  # from glibc's <malloc.h>

#: The worker's memory budget in MiB (unset or ``0``: no budget).
ENV_MEMORY_MB: Final = ENV_WORKER_MEMORY_MB

_budget: dict[str, int] = {}


def apply_memory_budget(memory_mb: int | None = None) -> int | None:
    """Cap this worker's heap at ``memory_mb`` MiB (default ``$NEUROCYTE_WORKER_MEMORY_MB``).

    The cap is ``RLIMIT_DATA``: since Linux 4.7 it counts the process's private
    writable mappings (heap, anonymous ``mmap``: numpy, pyarrow's mimalloc, DuckDB,
    thread stacks), not reserved-but-inaccessible address space, so unlike
    ``RLIMIT_AS`` it does not trip over the large ``PROT_NONE`` reservations of
    glibc's per-thread arenas and of thread pools. An allocation beyond it fails
    as ``MemoryError`` (``std::bad_alloc`` in pyarrow, reported as an Arrow
    out-of-memory error), which the ingest reports as ``failed: resource ...``
    instead of the kernel's OOM killer taking the worker (or a neighbour). The
    soft limit only ever goes down, never above the hard limit. Under a budget,
    Arrow allocates from malloc and glibc keeps less freed memory
    (:data:`BUDGET_ARENAS`, ...), overriding :func:`retain_freed_memory`: memory
    the process keeps counts against the budget.

    Returns
    -------
    int or None
        The budget in MiB now in force, ``None`` without one.
    """
    import resource

    if memory_mb is None:
        text = os.environ.get(ENV_MEMORY_MB, "").strip()
        if not text:
            return None
        try:
            memory_mb = int(text)
        except ValueError:
            log.warning("ignoring $%s=%r: not a number of MiB", ENV_MEMORY_MB, text)
            return None
    if memory_mb <= 0:
        return None
    # Address space already mapped but not resident (pyarrow's mimalloc reserves a
    # 1 GiB arena at import) is not memory in use: the limit is what is mapped now
    # plus what the budget leaves above the resident set.
    mapped, resident = _vm_bytes()
    limit = mapped + max(0, (memory_mb << 20) - resident)
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft == resource.RLIM_INFINITY or limit < soft:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    # pyarrow's mimalloc reserves 1 GiB arenas of writable address space, which
    # RLIMIT_DATA counts as used: under a budget Arrow allocates from glibc malloc,
    # so the limit tracks what is really in use.
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    # Freed memory kept in the process counts against the budget too: fewer glibc
    # arenas, and freed blocks go back to the OS sooner than retain_freed_memory's.
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, BUDGET_ARENAS)
        libc.mallopt(_M_MMAP_THRESHOLD, BUDGET_MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, BUDGET_TRIM_THRESHOLD_BYTES)
        _applied.clear()
    _budget["mb"] = memory_mb
    return _budget["mb"]


def _vm_bytes() -> tuple[int, int]:
    """(private writable bytes mapped, resident bytes) of this process (Linux)."""
    values = {"VmData:": 0, "VmRSS:": 0}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                key = line.split(maxsplit=1)[0] if line.strip() else ""
                if key in values:
                    values[key] = int(line.split()[1]) << 10
    except OSError:
        pass
    return values["VmData:"], values["VmRSS:"]


def memory_budget_mb() -> int | None:
    """The budget :func:`apply_memory_budget` set in this process, if any."""
    return _budget.get("mb")


@contextlib.contextmanager
def memory_budget() -> Iterator[int | None]:
    """:func:`apply_memory_budget` while inside; the previous soft limit after.

    Only the work whose memory the input drives (decoding, features) runs under
    the budget. Lake writes run outside it: delta-rs (its tokio threads) does not
    fail cleanly when an allocation or a thread's stack is refused, it waits
    forever, which is worse than any error.
    """
    import resource

    before = resource.getrlimit(resource.RLIMIT_DATA)
    budget = apply_memory_budget()
    try:
        yield budget
    finally:
        if budget is not None:
            resource.setrlimit(resource.RLIMIT_DATA, before)
