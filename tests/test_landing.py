"""Landing-zone layout, sidecars and content hashing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from transforms.errors import SpecError
from transforms.lake.storage import sha256 as sha256_file
from transforms.pipeline.landing import resolve_target, scan


def _touch(path: Path, data: bytes = b"abf") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_partition_from_landing_path(tmp_path: Path) -> None:
    f = _touch(tmp_path / "labA" / "KO" / "DIV14" / "c1.abf")
    t = resolve_target(f, landing=str(tmp_path))
    assert t.partition.as_dict() == {"lab": "labA", "condition": "KO", "timepoint": "DIV14"}


def test_sidecar_overrides_path_and_explicit_overrides_sidecar(tmp_path: Path) -> None:
    f = _touch(tmp_path / "labA" / "KO" / "DIV14" / "c1.abf")
    sidecar = {"condition": "HET", "cell_id": "cell-9", "subject": "m3", "notes": "good seal"}
    f.with_name("c1.abf.meta.json").write_text(json.dumps(sidecar))
    t = resolve_target(f, landing=str(tmp_path))
    assert t.partition.condition == "HET"
    assert (t.cell_id, t.subject, t.notes) == ("cell-9", "m3", "good seal")
    t = resolve_target(f, landing=str(tmp_path), condition="WT")
    assert t.partition.condition == "WT"


def test_file_outside_landing_needs_explicit_partition(tmp_path: Path) -> None:
    f = _touch(tmp_path / "loose.abf")
    with pytest.raises(SpecError, match=r"loose\.abf: no lab, condition, timepoint"):
        resolve_target(f, landing=str(tmp_path / "landing"))
    t = resolve_target(f, landing=str(tmp_path / "landing"), lab="L", condition="C", timepoint="T")
    assert t.partition.lab == "L"


@pytest.mark.parametrize(
    "sidecar, message",
    [
        ({"condition": "../../outside"}, "invalid condition"),
        ({"timepoint": "1'; DROP VIEW icephys_sweeps; --"}, "invalid timepoint"),
        ({"owner": "me"}, "unknown keys"),
        ({"cell_id": ["a"]}, "must be a string"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_sidecars_are_clear_errors(tmp_path: Path, sidecar: object, message: str) -> None:
    f = _touch(tmp_path / "labA" / "KO" / "DIV14" / "c1.abf")
    f.with_name("c1.abf.meta.json").write_text(json.dumps(sidecar))
    with pytest.raises(SpecError, match=message) as err:
        resolve_target(f, landing=str(tmp_path))
    assert "c1.abf" in str(err.value)


def test_sidecar_not_json(tmp_path: Path) -> None:
    f = _touch(tmp_path / "labA" / "KO" / "DIV14" / "c1.abf")
    f.with_name("c1.abf.meta.json").write_bytes(b"\xff{not json")
    with pytest.raises(SpecError, match="not valid UTF-8 JSON"):
        resolve_target(f, landing=str(tmp_path))


def test_sha256_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000
    f = _touch(tmp_path / "x.abf", data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()


def test_scan_skips_sidecars_hidden_and_unsettled(tmp_path: Path) -> None:
    a = _touch(tmp_path / "l" / "c" / "t" / "a.abf")
    _touch(tmp_path / "l" / "c" / "t" / "a.abf.meta.json", b"{}")
    _touch(tmp_path / "l" / "c" / "t" / ".b.abf")
    _touch(tmp_path / "l" / "c" / "t" / "notes.txt")
    assert scan(landing=str(tmp_path)) == [a]
    assert scan(landing=str(tmp_path), settle_s=3600) == []
