"""Every shared sample file ingests to features or to a clear, correct reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ABF_DIR, NWB_DIR
from tests.helpers import query
from transforms.pipeline import ingest_paths

#: Decided by hand from the files (pyabf / h5py inspection), not from the code.
EXPECTED = {
    "171116sh_0016.abf": "published",  # current-clamp ramps
    "171116sh_0018.abf": "published",  # long-square steps (IPFX reference)
    "17o05024_vc_steps.abf": "published",  # voltage clamp: described, no cc features
    "17o05027_ic_ramp.abf": "published",
    "17o05028_ic_steps.abf": "published",  # IPFX reference
    "18425108_abf1.abf": "published",  # ABF1, nA command on DAC 1
    "190619B_0003.abf": "published",  # ABF1, IPFX reference
    "2020_07_29_0062.abf": "published",  # gap-free
    "File_axon_5.abf": "published",  # IPFX reference
    "File_axon_6.abf": "published",  # short squares
    "File_axon_7.abf": "published",  # 403 Hz voltage clamp
    "invalidDate-abf1.abf": "published",  # no valid date: recorded_at null, flagged
    "opto_aps_bad_units.abf": "quarantined",  # Vm-like data labelled pA: Vm out of range
    "pclamp11_4ch.abf": "published",  # 4 channels, voltage clamp
    "99111002.nwb": "published",  # NWB 2.4, 16 current-clamp steps
}


@pytest.fixture(scope="module")
def corpus_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("corpus") / "lake"
    summary = ingest_paths(
        [ABF_DIR, NWB_DIR], lake=str(lake), lab="shared", condition="ctl", timepoint="t0"
    )
    assert {o.file_name for o in summary.outcomes} == set(EXPECTED)
    return lake


def test_every_file_has_the_expected_status(corpus_lake: Path) -> None:
    got = dict(query(corpus_lake, "SELECT file_name, status FROM ingest_log"))
    assert got == EXPECTED
    (reason,) = query(
        corpus_lake, "SELECT reason FROM ingest_log WHERE file_name = 'opto_aps_bad_units.abf'"
    )[0]
    assert "v_baseline_mv" in reason


def test_formats_are_described_correctly(corpus_lake: Path) -> None:
    rec = {
        r[0]: r[1:]
        for r in query(
            corpus_lake,
            "SELECT file_name, clamp_mode, n_sweeps, source_format, recorded_at IS NULL, "
            "reader_qc_flags FROM icephys_recordings",
        )
    }
    assert rec["17o05024_vc_steps.abf"][0] == "voltage_clamp"
    assert rec["pclamp11_4ch.abf"][0] == "voltage_clamp"
    assert rec["99111002.nwb"][:3] == ("current_clamp", 16, "nwb")
    assert (
        rec["invalidDate-abf1.abf"][3] is True and "invalid_date" in rec["invalidDate-abf1.abf"][4]
    )
    assert rec["190619B_0003.abf"][2] == "abf1"
    kinds = dict(
        query(
            corpus_lake,
            "SELECT r.file_name, "
            "string_agg(DISTINCT s.stimulus_kind, ',' ORDER BY s.stimulus_kind) "
            "FROM icephys_sweeps s JOIN icephys_recordings r USING (file_id) GROUP BY 1",
        )
    )
    assert kinds["2020_07_29_0062.abf"] == "hold"
    assert kinds["17o05024_vc_steps.abf"] == "voltage_clamp"
    assert "long_square" in kinds["171116sh_0018.abf"]
    assert "ramp" in kinds["17o05027_ic_ramp.abf"]
    # voltage-clamp files get no current-clamp cell features
    cells = {
        r[0]
        for r in query(corpus_lake, "SELECT file_name FROM cells WHERE rheobase_pa IS NOT NULL")
    }
    assert "17o05024_vc_steps.abf" not in cells
    assert {"171116sh_0018.abf", "File_axon_5.abf", "190619B_0003.abf"} <= cells
