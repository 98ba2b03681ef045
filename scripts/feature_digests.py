"""Digest of every decoded recording and its features, per patch-clamp file of a corpus.

Run it before and after a change to the readers or the feature code, and diff the
two JSON files: a refactor that claims bit-identical features must leave every
digest unchanged. Each file gets the SHA-256 of its decoded sweeps (every
response and command array, bit for bit, with mode, units and flags) and of each
feature table (Arrow IPC bytes of sweeps, spikes, cell rows).

Usage: ``uv run python scripts/feature_digests.py OUT.json [FILE_OR_DIR ...]``
(default: the shared ``abf/`` and ``nwb/`` corpus).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transforms.errors import NeurocyteError  # noqa: E402
from transforms.formats import read_icephys  # noqa: E402
from transforms.icephys.extract import extract_features  # noqa: E402

SHARED = Path(os.environ.get("NEUROCYTE_SHARED", ROOT.parent / "shared")).resolve()


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def digest(path: Path) -> dict[str, str]:
    try:
        rec = read_icephys(path)
    except NeurocyteError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    h = hashlib.sha256()
    h.update(repr((rec.clamp_mode, rec.qc_flags, rec.channel_units, rec.metadata)).encode())
    for s in rec.sweeps:
        h.update(repr((s.number, s.clamp_mode, s.sampling_rate_hz, s.start_time_s)).encode())
        h.update(s.response.tobytes())
        h.update(b"-" if s.command is None else s.command.tobytes())
    out = {"decoded": h.hexdigest()}
    try:
        feats = extract_features(rec)
    except NeurocyteError as exc:
        out["features"] = f"{type(exc).__name__}: {exc}"
        return out
    for name in ("sweeps", "spikes", "cell"):
        out[name] = hashlib.sha256(_ipc(getattr(feats, name))).hexdigest()
    return out


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    given = [Path(a) for a in argv[1:]] or [SHARED / "data" / "abf", SHARED / "data" / "nwb"]
    files = sorted(
        p
        for g in given
        for p in ([g] if g.is_file() else g.rglob("*"))
        if p.suffix.lower() in (".abf", ".nwb")
    )
    started = time.perf_counter()
    result = {p.name: digest(p) for p in files}
    out.write_text(json.dumps(result, indent=1, sort_keys=True))
    print(f"{len(result)} files digested in {time.perf_counter() - started:.1f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
