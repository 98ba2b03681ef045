"""The ingest worker's malloc settings: freed multi-MB arrays are reused, not re-faulted."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from transforms.pipeline import allocator

# Six 8 MB arrays alive at once, freed, then made again (the pattern of feature
# extraction: a few blocks of sweeps and their filtered copies); report the page
# faults of the last round. glibc's adaptive thresholds trim the freed heap above
# twice the largest array, so part of it is faulted in again every round.
_PROBE = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from transforms.pipeline.allocator import retain_freed_memory
    print(retain_freed_memory(), file=sys.stderr)
    for _ in range(3):
        arrays = [np.ones(1 << 20) for _ in range(6)]
        del arrays
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(1 << 20) for _ in range(6)]
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(switch: str) -> int:
    env = {**os.environ, allocator.ENV_SWITCH: switch}
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
        env.pop(var, None)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc malloc only")
def test_freed_arrays_are_reused_without_page_faults() -> None:
    pages = 6 * (8 << 20) // 4096
    assert _faults("0") > pages // 8  # glibc's default: the trimmed part faults again
    assert _faults("1") < pages // 50  # tuned: the freed heap is reused


def test_switch_off_keeps_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.ENV_SWITCH, "0")
    assert allocator.retain_freed_memory() == {}


_BLAS_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from threadpoolctl import threadpool_info
    from transforms.pipeline.allocator import limit_blas_threads
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    limit = limit_blas_threads()
    after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    print(json.dumps({"before": before, "limit": limit, "after": after}))
    """
)


def _blas_probe(**env: str) -> dict[str, object]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }
    out = subprocess.run(
        [sys.executable, "-c", _BLAS_PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS runs one thread anyway")
def test_ingest_worker_runs_blas_on_one_thread() -> None:
    got = _blas_probe()
    assert got["before"] and max(got["before"]) > 1  # type: ignore[arg-type]
    assert got["limit"] == 1
    assert got["after"] and set(got["after"]) == {1}  # type: ignore[arg-type]


def test_blas_threads_set_by_the_user_are_left_alone() -> None:
    got = _blas_probe(OPENBLAS_NUM_THREADS="2")
    assert got["limit"] is None
    assert got["after"] == got["before"]
    assert _blas_probe(NEUROCYTE_BLAS_THREADS="0")["limit"] is None
