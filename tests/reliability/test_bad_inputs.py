"""A corpus of bad inputs, generated here from the real samples, ingested in one run.

Every bad file must end as ``failed`` (or ``quarantined``) in ``ingest_log``
with a reason naming it, never as an unexpected internal error; the good files
of the same run publish; nothing of a bad file is visible in any view; no run
hangs (pytest-timeout).
"""

from __future__ import annotations

import gzip
import json
import math
import random
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ABF_DIR, MEA_DIR, NWB_DIR
from tests.helpers import query
from tests.reliability import check_published, memory_cap, small_abf
from transforms.lake.storage import sha256 as sha256_file
from transforms.pipeline import ingest_paths

RNG = random.Random(20240517)
ABF2 = ABF_DIR / "17o05027_ic_ramp.abf"
NWB = NWB_DIR / "99111002.nwb"
SPIKE_LIST = MEA_DIR / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"


def _patch(fmt: str, offset: int, value) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        out = bytearray(data)
        struct.pack_into(fmt, out, offset, value)
        return bytes(out)

    return apply


def _abf2_section(data: bytes, index: int) -> int:
    """Byte offset of an ABF2 section (0 protocol, 10 data) from its section map."""
    (block,) = struct.unpack_from("<I", data, 76 + 16 * index)
    return block * 512


def _abf2_protocol(fmt: str, rel: int, value) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        return _patch(fmt, _abf2_section(data, 0) + rel, value)(data)

    return apply


def _abf1_float_data(value: float) -> Callable[[bytes], bytes]:
    """Turn an int16 ABF1 into a float32 one whose every sample is ``value``."""

    def apply(data: bytes) -> bytes:
        (ptr,) = struct.unpack_from("<i", data, 40)
        (n_points,) = struct.unpack_from("<i", data, 10)
        header = bytearray(data[: ptr * 512])
        struct.pack_into("<h", header, 100, 1)  # nDataFormat: float32
        return bytes(header) + struct.pack(f"<{n_points}f", *([value] * n_points))

    return apply


def _abf2_float_data(value: float) -> Callable[[bytes], bytes]:
    """Turn an int16 ABF2 into a float32 one (nDataFormat 1) whose every sample is ``value``."""

    def apply(data: bytes) -> bytes:
        block, _size, count = struct.unpack_from("<IIq", data, 236)
        head = bytearray(data[: block * 512])
        struct.pack_into("<H", head, 30, 1)  # nDataFormat: float32
        struct.pack_into("<I", head, 240, 4)  # bytes per sample
        return bytes(head) + struct.pack(f"<{count}f", *([value] * count))

    return apply


# name -> (base: "abf1" synthetic | "abf2" real | "nwb" real, mutation)
ICEPHYS_CASES: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "empty.abf": ("abf2", lambda d: b""),
    "empty.nwb": ("nwb", lambda d: b""),
    "random.abf": ("abf2", lambda d: RNG.randbytes(4096)),
    "random.nwb": ("nwb", lambda d: RNG.randbytes(4096)),
    "trunc_header.abf": ("abf2", lambda d: d[:300]),
    "trunc_data.abf": ("abf2", lambda d: d[: len(d) // 2]),
    "trunc_abf1.abf": ("abf1", lambda d: d[: len(d) - 3000]),
    "trunc.nwb": ("nwb", lambda d: d[: len(d) // 2]),
    "hdf5_header_only.nwb": ("nwb", lambda d: d[:2048]),
    "nwb_named.abf": ("nwb", lambda d: d),  # wrong extension, real NWB bytes
    "abf_named.nwb": ("abf2", lambda d: d),  # wrong extension, real ABF bytes
    "abf1_interval_zero.abf": ("abf1", _patch("<f", 122, 0.0)),
    "abf1_interval_neg.abf": ("abf1", _patch("<f", 122, -50.0)),
    "abf1_interval_nan.abf": ("abf1", _patch("<f", 122, math.nan)),
    "abf1_interval_huge.abf": ("abf1", _patch("<f", 122, 3.0e38)),
    "abf1_sweeps_zero.abf": ("abf1", _patch("<i", 16, 0)),
    "abf1_sweeps_neg.abf": ("abf1", _patch("<i", 16, -5)),
    "abf1_sweeps_huge.abf": ("abf1", _patch("<i", 16, 2**31 - 1)),
    "abf1_dataptr_huge.abf": ("abf1", _patch("<i", 40, 2**31 - 1)),
    "abf1_dataptr_neg.abf": ("abf1", _patch("<i", 40, -7)),
    "abf1_dataptr_zero.abf": ("abf1", _patch("<i", 40, 0)),
    "abf1_channels_zero.abf": ("abf1", _patch("<h", 120, 0)),
    "abf1_channels_huge.abf": ("abf1", _patch("<h", 120, 32000)),
    "abf1_format_unknown.abf": ("abf1", _patch("<h", 100, 7)),
    "abf1_nan_data.abf": ("abf1", _abf1_float_data(math.nan)),
    "abf1_inf_data.abf": ("abf1", _abf1_float_data(math.inf)),
    "abf2_nan_data.abf": ("abf2", _abf2_float_data(math.nan)),
    "abf2_inf_data.abf": ("abf2", _abf2_float_data(math.inf)),
    "abf2_sweeps_huge.abf": ("abf2", _patch("<I", 12, 2**31)),
    "abf2_sweeps_zero.abf": ("abf2", _patch("<I", 12, 0)),
    "abf2_data_block_huge.abf": ("abf2", _patch("<I", 76 + 16 * 10, 2**31)),
    "abf2_data_count_huge.abf": ("abf2", _patch("<q", 76 + 16 * 10 + 8, 2**40)),
    "abf2_protocol_block_huge.abf": ("abf2", _patch("<I", 76, 2**30)),
    "abf2_interval_zero.abf": ("abf2", _abf2_protocol("<f", 2, 0.0)),
    "abf2_interval_nan.abf": ("abf2", _abf2_protocol("<f", 2, math.nan)),
    "abf2_interval_neg.abf": ("abf2", _abf2_protocol("<f", 2, -1.0)),
}

#: Good recordings with hostile but legal names and free-text metadata.
GOOD_NAMES = [
    "cell with spaces.abf",
    "cellé_ü_日本語.abf",
    'it\'s "quoted".abf',
    "x'; DROP VIEW published; --.abf",
    "-dash-.abf",
]

#: Decoded leniently by pyabf (0 declared sweeps read as one gap-free sweep): published.
LENIENT = {"abf1_sweeps_zero.abf", "abf2_sweeps_zero.abf"}
#: Every sample NaN/Inf: decoded, every sweep fails sweep QC (``no_data``), no features.
NON_FINITE = {"abf2_nan_data.abf", "abf2_inf_data.abf"}


def _base(kind: str, tmp: Path) -> bytes:
    if kind == "abf1":
        return small_abf(tmp / "_base_abf1.abf", seed=9).read_bytes()
    return (ABF2 if kind == "abf2" else NWB).read_bytes()


def _statuses(summary) -> dict[str, object]:
    return {o.file_name: o for o in summary.outcomes}


def _assert_failed_clearly(o, *, names: tuple[str, ...] = ()) -> None:
    """Failed (or quarantined by QC) with a reason naming the file (or ``names``, its plate map)."""
    assert o.status in {"failed", "quarantined"}, (o.file_name, o.status, o.reason)
    named = any(n in o.reason for n in (o.file_name, *names))
    assert named or o.status == "quarantined", (o.file_name, o.reason)
    assert not o.reason.startswith("internal error"), (o.file_name, o.reason)


@pytest.mark.timeout(600)
def test_icephys_bad_inputs_fail_clearly_and_good_files_publish(tmp_path: Path) -> None:
    folder = tmp_path / "landing" / "labA" / "WT" / "P14"
    folder.mkdir(parents=True)
    bases = {k: _base(k, tmp_path) for k in ("abf1", "abf2", "nwb")}
    bad = []
    for name, (base, mutate) in ICEPHYS_CASES.items():
        (folder / name).write_bytes(mutate(bases[base]))
        bad.append(folder / name)
    (folder / "notes.xyz").write_bytes(b"not a recording")
    bad.append(folder / "notes.xyz")
    # Sidecars that must be rejected, each beside a valid recording of its own.
    sidecars = {
        "sc_badjson.abf": "{not json",
        "sc_unknown_key.abf": json.dumps({"owner": "x"}),
        "sc_nested.abf": json.dumps({"notes": {"a": 1}}),
        "sc_list.abf": json.dumps(["lab", "x"]),
        "sc_nul.abf": json.dumps({"notes": "a\x00b"}),
        "sc_huge.abf": json.dumps({"notes": "x" * 5000}),
        "sc_bad_lab.abf": json.dumps({"lab": "lab A"}),
        "sc_dotdot.abf": json.dumps({"condition": ".."}),
        "sc_traversal.abf": json.dumps({"lab": "../../../../tmp/evil"}),
        "sc_sql.abf": json.dumps({"timepoint": "P1'; DROP VIEW published; --"}),
        "sc_unicode.abf": json.dumps({"condition": "WTé"}),
        "sc_latin1.abf": None,
    }
    for i, (name, text) in enumerate(sidecars.items()):
        f = small_abf(folder / name, seed=1000 + i)
        side = f.with_name(f.name + ".meta.json")
        if text is None:
            side.write_bytes('{"notes": "caf\xe9"}'.encode("latin-1"))
        else:
            side.write_text(text, encoding="utf-8")
        bad.append(f)
    # Folder names that are not legal partition values.
    for i, cond in enumerate(["W T", "WT'; DROP VIEW published; --", 'WT"x', "Bärlin", ".hidden"]):
        f = small_abf(
            tmp_path / "landing" / "labA" / cond / "P14" / f"folder{i}.abf", seed=2000 + i
        )
        bad.append(f)
    good = [small_abf(folder / n, seed=3000 + i) for i, n in enumerate(GOOD_NAMES)]
    shutil.copyfile(ABF_DIR / "File_axon_7.abf", folder / "File_axon_7.abf")
    good.append(folder / "File_axon_7.abf")

    lake = tmp_path / "lake"
    with memory_cap(8.0):  # a memory bomb must not summon the OOM killer on a shared host
        summary = ingest_paths(
            [*bad, *good], lake=str(lake), landing=str(tmp_path / "landing"), batch_size=16
        )
    by_name = _statuses(summary)
    assert len(summary.outcomes) == len(bad) + len(good)
    report = {n: (o.status, o.reason[:160]) for n, o in by_name.items()}
    print("BAD-INPUTS " + json.dumps({"inputs": len(bad), "good": len(good)}))
    for name, (status, reason) in sorted(report.items()):
        print(f"  {status:<11} {name}: {reason}")
    # wrong extension with valid content of the other format: either decoded, or a clear error
    for name in ("nwb_named.abf", "abf_named.nwb"):
        o = by_name.pop(name)
        assert o.status in {"failed", "published"} and not o.reason.startswith("internal error")
        if o.status == "failed":
            assert name in o.reason
    for name in LENIENT:
        assert by_name.pop(name).status in {"published", "failed", "quarantined"}
    non_finite = {by_name.pop(n).file_id: n for n in NON_FINITE}
    for f in bad:
        if f.name in by_name:
            _assert_failed_clearly(by_name[f.name])
    for f in good:
        assert by_name[f.name].status == "published", (f.name, by_name[f.name].reason)
    for fid, name in non_finite.items():
        sweeps = query(
            lake, "SELECT qc_pass, qc_reasons FROM icephys_sweeps WHERE file_id = ?", [fid]
        )
        assert sweeps and all(not ok and "no_data" in why for ok, why in sweeps), (name, sweeps)
        for view in ("icephys_spikes", "icephys_cell_features"):
            n = query(lake, f"SELECT count(*) FROM {view} WHERE file_id = ?", [fid])[0][0]
            assert n == 0, (name, view, n)

    result = check_published(lake)
    assert not result.problems, result.problems
    published = {r[0] for r in query(lake, "SELECT file_id FROM published")}
    for f in bad:
        if f.name in by_name:
            assert sha256_file(f) not in published, f.name
    names = {r[0] for r in query(lake, "SELECT file_name FROM icephys_recordings")}
    assert {f.name for f in good} <= names
    logged = dict(query(lake, "SELECT file_name, status FROM ingest_log"))
    assert set(logged) == {f.name for f in [*bad, *good]}
    # nothing was written outside the lake and the landing zone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_base_abf1.abf", "lake", "landing"]
    escaped = [p for p in lake.rglob("*") if not p.resolve().is_relative_to(lake.resolve())]
    assert not escaped, escaped


def _spike_list_lines(n: int) -> list[str]:
    with gzip.open(SPIKE_LIST, "rt") as fh:
        return [next(fh).rstrip("\n") for _ in range(n)]


@pytest.fixture(scope="module")
def plate(tmp_path_factory: pytest.TempPathFactory):
    from transforms.synth.plate import generate_plate

    out = tmp_path_factory.mktemp("plate")
    return generate_plate(out, n_wells=12, duration_s=3.0, seed=11, write_spk=True)


@pytest.mark.timeout(600)
def test_mea_bad_inputs_fail_clearly_and_good_plates_publish(tmp_path: Path, plate) -> None:
    landing = tmp_path / "landing"

    def put(sub: str, name: str, data: bytes) -> Path:
        p = landing / "labM" / f"ctl{sub}" / "DIV3" / name  # one folder (plate map) each
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    lines = _spike_list_lines(3000)
    text = "\n".join(lines) + "\n"
    raw, spk = plate.raw_path.read_bytes(), plate.spk_path.read_bytes()
    bad = [
        put("a", "empty_spike_list.csv", b""),
        put(
            "b", "missing_cols_spike_list.csv", b"Investigator,,Time (s),Electrode\nx,,0.1,A1_11\n"
        ),
        put("c", "unknown_electrode_spike_list.csv", (text + ",,57.7,Z9_99,0.05\n").encode()),
        put("d", "bad_electrode_spike_list.csv", (text + ",,57.7,A1_1x,0.05\n").encode()),
        put("e", "nan_time_spike_list.csv", (text + ",,nan_time,A1_11,0.05\n").encode()),
        put("f", "ragged_spike_list.csv", (text + ",,57.7\n").encode()),
        put("g", "random_spike_list.csv.gz", RNG.randbytes(5000)),
        put("h", "trunc_spike_list.csv.gz", SPIKE_LIST.read_bytes()[:20000]),
        put("i", "trunc.raw", raw[: len(raw) // 3]),
        put("j", "trunc_header.raw", raw[:200]),
        put("k", "random.raw", RNG.randbytes(8192)),
        put("l", "empty.raw", b""),
        put("m", "trunc.spk", spk[: len(spk) // 3]),
        put("n", "random.spk", RNG.randbytes(8192)),
    ]
    # plate maps naming wells the plate lacks, or a condition that is not a partition value
    sl = put("o", "extra_wells_spike_list.csv", text.encode())
    (sl.parent / "plate_map.csv").write_text("well,condition,timepoint\nA1,WT,DIV3\nH12,KO,DIV3\n")
    sl2 = put("p", "zz_wells_spike_list.csv", text.encode() + b"\n")
    (sl2.parent / "plate_map.csv").write_text("well,condition\nA1,WT\nZ99,KO\n")
    sl3 = put("q", "sql_cond_spike_list.csv", text.encode() + b"\n\n")
    (sl3.parent / "plate_map.csv").write_text(
        'well,condition\nA1,"WT\'; DROP VIEW published; --"\n'
    )
    sl4 = put("r", "two_maps_spike_list.csv", text.encode() + b"\n\n\n")
    (sl4.parent / "a_plate_map.csv").write_text("well,condition\nA1,WT\n")
    (sl4.parent / "b_plate_map.csv").write_text("well,condition\nA1,KO\n")
    bad += [sl, sl2, sl3, sl4]
    good = [
        put("s", "ok_spike_list.csv", text.encode() + b"\n\n\n\n"),
        put("t", plate.spk_path.name, spk),
    ]
    lake = tmp_path / "lake"
    with memory_cap(8.0):
        summary = ingest_paths([*bad, *good], lake=str(lake), landing=str(landing), batch_size=8)
    by_name = _statuses(summary)
    print("BAD-MEA-INPUTS " + json.dumps({"inputs": len(bad), "good": len(good)}))
    for name, o in sorted(by_name.items()):
        print(f"  {o.status:<11} {name}: {o.reason[:160]}")
    for f in bad:
        _assert_failed_clearly(by_name[f.name], names=("plate_map.csv",))
    for f in good:
        assert by_name[f.name].status == "published", (f.name, by_name[f.name].reason)
    result = check_published(lake)
    assert not result.problems, result.problems
    assert result.files == len(good)
    files = {r[0] for r in query(lake, "SELECT DISTINCT file_name FROM mea_recordings")}
    assert files == {f.name for f in good}


@pytest.mark.parametrize("name", ["abf1_sweeps_huge.abf", "abf2_sweeps_huge.abf"])
def test_absurd_sweep_count_is_rejected_before_allocating(tmp_path: Path, name: str) -> None:
    from transforms.errors import DecodeError
    from transforms.formats.abf import read_abf

    base, mutate = ICEPHYS_CASES[name]
    path = tmp_path / name
    path.write_bytes(mutate(_base(base, tmp_path)))
    with memory_cap(1.0), pytest.raises(DecodeError) as info:
        read_abf(path)
    assert "MemoryError" not in str(info.value), str(info.value)
