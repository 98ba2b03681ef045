"""The lake specification: partition values can never escape or inject."""

from __future__ import annotations

import pytest

from transforms import spec
from transforms.errors import SpecError

GOOD = ["WT", "KO", "DIV14", "P21", "lab_1", "a.b-c", "x" * 64, "0"]
BAD = [
    "",
    ".",
    "..",
    "../etc",
    ".hidden",
    "a/b",
    "a\\b",
    "with space",
    "x" * 65,
    "quote'",
    'dq"',
    "'; DROP TABLE icephys_sweeps; --",
    "naïve",
    "k\x00o",
    "a\nb",
    None,
    14,
]


@pytest.mark.parametrize("value", GOOD)
def test_valid_partition_values_pass(value: str) -> None:
    assert spec.validate_partition_value("condition", value) == value


@pytest.mark.parametrize("value", BAD)
def test_invalid_partition_values_name_file_and_value(value: object) -> None:
    with pytest.raises(SpecError) as err:
        spec.validate_partition_value("condition", value, source="cell7.abf")
    assert "cell7.abf" in str(err.value)
    assert repr(value) in str(err.value)


def test_unknown_partition_column() -> None:
    with pytest.raises(SpecError, match="unknown partition column"):
        spec.validate_partition_value("lab; --", "x")


def test_table_uri_rejects_unknown_tables(tmp_path) -> None:
    with pytest.raises(SpecError, match="unknown table"):
        spec.table_uri("../../etc", str(tmp_path))
    assert spec.table_uri("ingest_log", str(tmp_path)) == f"{tmp_path}/tables/ingest_log"


def test_lake_root_from_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(spec.ENV_LAKE, str(tmp_path / "l"))
    assert spec.lake_root() == str(tmp_path / "l")
    monkeypatch.setenv(spec.ENV_LAKE, "s3://bucket/lake/")
    assert spec.lake_root() == "s3://bucket/lake"


def test_quarantine_dir_requires_a_digest(tmp_path) -> None:
    with pytest.raises(SpecError):
        spec.quarantine_dir("../x", str(tmp_path))
