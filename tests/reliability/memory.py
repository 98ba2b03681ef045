"""Memory tests' tools: big spike lists, gzip bombs, and a capped child process.

``python -m tests.reliability.memory ingest LAKE LANDING`` ingests a landing zone
in this process (the child the memory tests cap and measure);
:func:`run_capped` starts it with a memory budget and reports its peak RSS.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.axis_text import AXIS3_SETTINGS

#: Electrodes of a 24-well plate (4 x 4 per well), as AxIS names them.
_WELLS_24 = [f"{r}{c}" for r in "ABCD" for c in range(1, 7)]
ELECTRODES_24 = [f"{w}_{i}{j}" for w in _WELLS_24 for i in range(1, 5) for j in range(1, 5)]


def write_big_spike_list(
    path: Path, n_rows: int, *, duration_s: float = 600.0, seed: int = 0, gz: bool = False
) -> Path:
    """An AxIS-style export of ``n_rows`` time-sorted spikes on a 24-well plate.

    Written in blocks (numpy), so a 10 M-row file (about 300 MB) takes seconds
    and little memory here.
    """
    rng = np.random.default_rng(seed)
    settings = [
        (k, f"0s to {int(duration_s)}s" if "File Section" in k.strip() else v)
        for k, v in AXIS3_SETTINGS
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if gz else open
    names = np.array(ELECTRODES_24)
    block = 1_000_000
    with opener(path, "wb") as fh:  # type: ignore[operator]
        fh.write(b"Investigator,Ada,Time (s),Electrode,Amplitude(mV)\r\n")
        for i in range(0, n_rows, block):
            n = min(block, n_rows - i)
            t = (i + np.arange(n) + rng.random(n)) * (duration_s / n_rows)
            e = names[rng.integers(0, len(names), n)]
            a = rng.uniform(-0.09, -0.01, n)
            lines = [f"{ti:.6f},{ei},{ai:.3f}" for ti, ei, ai in zip(t, e, a, strict=True)]
            head = []
            for j in range(min(n, max(0, len(settings) - i))):
                k, v = settings[i + j]
                head.append(f'{k},"{v}",' if "\n" in v else f"{k},{v},")
            out = [h + line for h, line in zip(head, lines, strict=False)]
            out += [",," + line for line in lines[len(head) :]]
            fh.write(("\r\n".join(out) + "\r\n").encode())
    return path


def write_gzip_bomb(path: Path, *, decompressed_bytes: int) -> Path:
    """A gzip file inflating to ``decompressed_bytes`` of one repeated spike row.

    One 16 MiB member (the header row, then the row over and over) deflates to
    about 40 KB; the file is that member repeated (gzip allows many members), so an
    8 GB bomb is a 20 MB file written in a moment, about 400:1.
    """
    row = b",,0.001000,A1_11,-0.020\r\n"
    header = b"Investigator,Ada,Time (s),Electrode,Amplitude(mV)\r\n"
    block = row * ((16 << 20) // len(row))
    member = gzip.compress(block, compresslevel=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(header + block, compresslevel=9))
        for _ in range(max(0, decompressed_bytes // len(block) - 1)):
            fh.write(member)
    return path


@dataclass(frozen=True)
class CappedRun:
    returncode: int
    peak_rss_mb: float
    stdout: str
    stderr: str

    @property
    def outcomes(self) -> list[dict]:
        return [json.loads(x[8:]) for x in self.stdout.splitlines() if x.startswith("OUTCOME ")]


def run_capped(args: list[str], *, memory_mb: int, timeout_s: float = 1200) -> CappedRun:
    """Run ``python -m tests.reliability.memory ARGS`` with a worker memory budget.

    The budget is ``$NEUROCYTE_WORKER_MEMORY_MB`` (applied by the worker entry,
    as in production); the child's peak resident set comes from ``wait4``.
    """
    from tests.conftest import REPO_ROOT
    from tests.reliability import worker_env

    env = worker_env(NEUROCYTE_WORKER_MEMORY_MB=str(memory_mb))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.memory", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(REPO_ROOT),
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    # communicate() reaped the child; its rusage is in RUSAGE_CHILDREN only as a max
    # over all children, so the child reports its own peak on its last line.
    peak = next(
        (float(x.split()[1]) for x in reversed(out.splitlines()) if x.startswith("PEAK_RSS_MB ")),
        float("nan"),
    )
    return CappedRun(proc.returncode, peak, out, err)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def gate_sweep(n_rows: int, margins_mb: range) -> dict[str, int]:
    """Validate one ``mea_spikes`` batch under tighter and tighter budgets.

    For each margin, ``RLIMIT_DATA`` is set to the heap in use plus the margin and
    the real GX gate validates ``n_rows`` rows. Each try ends as ``ok``, a resource
    failure (``ResourceLimit`` from the gate, or an allocation error the caller
    reports as one) or, the bug, a QC verdict (``qc_fail``: GX recorded its own
    malloc failure as a failed expectation).
    """
    import resource

    import pyarrow as pa

    from transforms.errors import ResourceLimit
    from transforms.pipeline import qc
    from transforms.pipeline.outcome import is_out_of_memory

    qc._batch_definition()
    pa.set_memory_pool(pa.system_memory_pool())  # as under a worker budget
    rng = np.random.default_rng(0)
    e = np.array(ELECTRODES_24)[rng.integers(0, len(ELECTRODES_24), n_rows)]
    rows = pa.table(
        {
            "file_id": pa.array(["a" * 64] * n_rows),
            "ingest_id": pa.array(["b" * 32] * n_rows),
            "transform_version": pa.array(["0.0.0"] * n_rows),
            "params_json": pa.array(['{"reader": "spike_list"}'] * n_rows),
            "electrode": pa.array(e),
            "well": pa.array([x.split("_")[0] for x in e]),
            "time_s": pa.array(np.sort(rng.uniform(0, 600, n_rows))),
            "amplitude_uv": pa.array(rng.uniform(-90, -10, n_rows).astype(np.float32)),
            "lab": pa.array(["labA"] * n_rows),
            "condition": pa.array(["WT"] * n_rows),
            "timepoint": pa.array(["DIV14"] * n_rows),
            "timepoint_days": pa.array(np.full(n_rows, 14, np.int32)),
        }
    )
    assert qc.validate("mea_spikes", rows.slice(0, 1000)).success  # warm, and valid rows
    with open("/proc/self/status") as fh:
        base = next(int(x.split()[1]) << 10 for x in fh if x.startswith("VmData"))
    tally = {"ok": 0, "resource_gate": 0, "resource_alloc": 0, "qc_fail": 0}
    for margin in margins_mb:
        resource.setrlimit(resource.RLIMIT_DATA, (base + (margin << 20), resource.RLIM_INFINITY))
        try:
            kind = "ok" if qc.validate("mea_spikes", rows).success else "qc_fail"
        except ResourceLimit:
            kind = "resource_gate"
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            kind = "resource_alloc"
        finally:
            resource.setrlimit(
                resource.RLIMIT_DATA, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
        tally[kind] += 1
    return tally


def main(argv: list[str]) -> int:
    cmd = argv[0]
    if cmd == "gate-sweep":
        n, lo, hi, step = (int(x) for x in argv[1:5])
        print("SWEEP " + json.dumps(gate_sweep(n, range(lo, hi, step))), flush=True)
        return 0
    lake, landing = argv[1], argv[2]
    if cmd != "ingest":
        raise SystemExit(f"unknown command {cmd!r}")
    from transforms.pipeline import ingest_paths

    try:
        summary = ingest_paths([landing], lake=lake, landing=landing, publish=False)
        for o in summary.outcomes:
            print("OUTCOME " + json.dumps(o.as_dict()), flush=True)
    finally:
        print(f"PEAK_RSS_MB {_peak_rss_mb():.1f}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
