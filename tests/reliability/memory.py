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
import zlib
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


def write_gzip_bomb(path: Path, *, decompressed_bytes: int, seed_line: bytes | None = None) -> Path:
    """A gzip file that inflates to ``decompressed_bytes`` of one repeated spike row.

    The header row makes it look like a spike list; the rest compresses about
    1000:1 (a 6 MB file holds about 6 GB).
    """
    row = seed_line or b",,0.001000,A1_11,-0.020\r\n"
    header = b"Investigator,Ada,Time (s),Electrode,Amplitude(mV)\r\n"
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = row * ((1 << 20) // len(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(comp.compress(header))
        left = decompressed_bytes
        while left > 0:
            piece = chunk[: min(len(chunk), left)]
            fh.write(comp.compress(piece))
            left -= len(piece)
        fh.write(comp.flush())
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


def main(argv: list[str]) -> int:
    cmd, lake, landing = argv[0], argv[1], argv[2]
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
