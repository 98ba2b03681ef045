"""Property-based fuzzing of every reader on mutated real files (hypothesis).

Each example takes a real file (a shared sample, or a small synthetic plate),
flips bytes (biased to the header, where the structure is), overwrites 4-byte
words with absurd integers/floats, and/or truncates it, then decodes it. The
only exceptions allowed to escape are :class:`NeurocyteError` subclasses; the
process runs under an address-space cap so a memory bomb is a MemoryError
(reported as an escape), not the OOM killer.

Bounded: ``NEUROCYTE_FUZZ_EXAMPLES`` examples per reader (default 40; the slow
run 300) with a per-example deadline.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ABF_DIR, MEA_DIR, NWB_DIR
from tests.reliability import memory_cap, small_abf
from transforms.errors import NeurocyteError

EXAMPLES = int(os.environ.get("NEUROCYTE_FUZZ_EXAMPLES", "40"))
SPIKE_LIST = MEA_DIR / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"
EXP_LOG = MEA_DIR / "exampleRecording_1012016_plate1_expLog.csv"

ABSURD_WORDS = [struct.pack("<i", v) for v in (0, -1, 2**31 - 1, -(2**31), 65536, 7)] + [
    struct.pack("<f", v) for v in (float("nan"), float("inf"), -1e38, 1e-38, 0.0)
]


@st.composite
def mutations(draw, size: int) -> list[tuple[str, int, bytes]]:
    hot = min(size, 4096)  # headers and section maps live at the front
    ops = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "word", "flip_any"]))
        end = hot if kind != "flip_any" else size
        at = draw(st.integers(0, max(0, end - 4)))
        if kind == "word":
            ops.append(("put", at, draw(st.sampled_from(ABSURD_WORDS))))
        else:
            ops.append(("put", at, bytes([draw(st.integers(0, 255))])))
    if draw(st.booleans()):
        ops.append(("cut", draw(st.integers(0, size)), b""))
    return ops


def _apply(data: bytes, ops) -> bytes:
    out = bytearray(data)
    for op, at, payload in ops:
        if op == "put":
            out[at : at + len(payload)] = payload
        else:
            del out[at:]
    return bytes(out)


def _fuzz(name: str, data: bytes, decode: Callable[[Path], object], tmp: Path) -> None:
    escapes: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=20_000,
        derandomize=os.environ.get("NEUROCYTE_FUZZ_RANDOM") is None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(ops=mutations(len(data)))
    def run(ops) -> None:
        path = tmp / name
        path.write_bytes(_apply(data, ops))
        try:
            decode(path)
        except NeurocyteError:
            pass
        except Exception as exc:  # the property: nothing else may escape
            escapes.append(f"{type(exc).__name__}: {str(exc)[:120]} <- {ops}")
            raise

    with memory_cap(2.0):
        run()
    assert not escapes


def _read_abf(p: Path):
    from transforms.formats.abf import read_abf

    return read_abf(p)


def _read_nwb(p: Path):
    from transforms.formats.nwb_icephys import read_nwb

    return read_nwb(p)


def _open_axion(p: Path):
    from transforms.formats.axion import open_axion

    f = open_axion(p)
    if f.kind == "spk":
        return f.read_spikes()
    return [c for _, c in zip(range(3), f.iter_chunks(chunk_s=0.25), strict=False)]


def _read_spike_list(p: Path):
    from transforms.formats.axis_spikelist import read_spike_list

    return read_spike_list(p)


def _read_neural_metrics(p: Path):
    from transforms.formats.axis_neural_metrics import read_neural_metrics

    return read_neural_metrics(p)


def _small_neural_metrics() -> bytes:
    from tests.axis_text import AXIS3_SETTINGS
    from transforms.synth.nmt import activity_metrics, neural_metrics_bytes

    names = [f"{w}_{c}{r}" for w in ("A1", "B2") for c in (1, 2) for r in (1, 2)]
    wells, electrodes = activity_metrics(names[:5] * 20, electrodes=names, duration_s=10.0)
    return neural_metrics_bytes(
        wells, electrode_values=electrodes, recording_settings=AXIS3_SETTINGS, blocks="both"
    )


def _read_plate_map(p: Path):
    from transforms.formats.platemap import read_plate_map

    return read_plate_map(p)


@pytest.fixture(scope="module")
def plate(tmp_path_factory: pytest.TempPathFactory):
    from transforms.synth.plate import generate_plate

    out = tmp_path_factory.mktemp("fuzzplate")
    return generate_plate(out, n_wells=12, duration_s=1.0, seed=5, write_spk=True)


def _small_spike_list() -> bytes:
    with gzip.open(SPIKE_LIST, "rt") as fh:
        return "".join(next(fh) for _ in range(400)).encode()


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "name, source, decode",
    [
        pytest.param(
            "abf2.abf",
            lambda t, p: (ABF_DIR / "17o05027_ic_ramp.abf").read_bytes(),
            _read_abf,
        ),
        ("abf1.abf", lambda t, p: small_abf(t / "b.abf", seed=1).read_bytes(), _read_abf),
        ("rec.nwb", lambda t, p: (NWB_DIR / "99111002.nwb").read_bytes(), _read_nwb),
        ("plate.spk", lambda t, p: p.spk_path.read_bytes(), _open_axion),
        ("plate.raw", lambda t, p: p.raw_path.read_bytes(), _open_axion),
        ("x_spike_list.csv", lambda t, p: _small_spike_list(), _read_spike_list),
        ("x_spike_list.csv.gz", lambda t, p: gzip.compress(_small_spike_list()), _read_spike_list),
        ("plate_expLog.csv", lambda t, p: EXP_LOG.read_bytes(), _read_plate_map),
        ("x_neuralMetrics.csv", lambda t, p: _small_neural_metrics(), _read_neural_metrics),
        (
            "x_neuralMetrics.csv.gz",
            lambda t, p: gzip.compress(_small_neural_metrics()),
            _read_neural_metrics,
        ),
    ],
)
def test_reader_raises_only_neurocyte_errors(tmp_path: Path, plate, name, source, decode) -> None:
    _fuzz(name, source(tmp_path, plate), decode, tmp_path)
