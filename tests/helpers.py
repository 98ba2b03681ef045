"""Test helpers: building landing zones from the real sample files."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

from tests.conftest import ABF_DIR


def land(
    landing: Path,
    name: str,
    *,
    lab: str = "labA",
    condition: str = "WT",
    timepoint: str = "P14",
    as_name: str | None = None,
) -> Path:
    """Copy a shared sample file into a temporary landing zone (never into the repo)."""
    dest = landing / lab / condition / timepoint / (as_name or name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ABF_DIR / name, dest)
    return dest


def query(lake: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Run a query on the published catalog with plain DuckDB, read-only."""
    con = duckdb.connect(str(lake / "catalog.duckdb"), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()
