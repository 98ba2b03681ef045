"""Cold processes load only what their command needs.

A fresh process that queries the catalog does not import pyarrow or deltalake; one
that rebuilds the Data Docs when every validation already has its page (a re-run of
ingest where every file is a duplicate) does not import Great Expectations, whose
import alone is most of a cold ingest's fixed cost.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ABF_DIR
from transforms.pipeline import ingest_paths


def _fresh(code: str, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


_PROBE = """
import json, sys
from transforms.cli import main
query = "SELECT count(*) AS n FROM icephys_sweeps"
rc = main(["sql", "--lake", sys.argv[1], "--format", "json", query])
after_sql = {m: m in sys.modules for m in ("pyarrow", "deltalake", "great_expectations")}
from transforms.pipeline import qc
index = qc.build_data_docs(lake=sys.argv[1])
print(json.dumps({"rc": rc, "after_sql": after_sql, "index": str(index),
                  "gx_after_docs": "great_expectations" in sys.modules}))
"""


def test_sql_and_up_to_date_docs_stay_light(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    summary = ingest_paths(
        [ABF_DIR / "File_axon_5.abf"], lake=str(lake), lab="labA", condition="WT", timepoint="P14"
    )
    assert summary.counts() == {"published": 1}
    got = _fresh(_PROBE, str(lake))
    assert got["rc"] == 0
    assert got["after_sql"] == {"pyarrow": False, "deltalake": False, "great_expectations": False}
    assert got["gx_after_docs"] is False
    assert Path(str(got["index"])).is_file()
    # a result without its page still gets rendered (and then GX is loaded)
    pages = list((lake / "qc" / "docs" / "validations").rglob("*.html"))
    assert pages
    for page in pages:
        page.unlink()
    got = _fresh(_PROBE, str(lake))
    assert got["gx_after_docs"] is True
    assert len(list((lake / "qc" / "docs" / "validations").rglob("*.html"))) == len(pages)
