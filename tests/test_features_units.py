"""Every shared ABF file yields features or a clear NeurocyteError; schemas hold."""

from __future__ import annotations

import pytest

from tests.conftest import ABF_FILES
from transforms.errors import NeurocyteError
from transforms.formats.abf import read_abf
from transforms.icephys.extract import (
    CELL_SCHEMA,
    SPIKE_SCHEMA,
    SWEEP_SCHEMA,
    IcephysParams,
    extract_features,
)


@pytest.mark.parametrize("path", ABF_FILES, ids=[p.name for p in ABF_FILES])
def test_every_file_features_or_clear_error(path) -> None:  # type: ignore[no-untyped-def]
    try:
        rec = read_abf(path)
        feats = extract_features(rec)
    except NeurocyteError as exc:
        assert path.name in str(exc) or str(exc)
        return
    assert feats.sweeps.schema.equals(SWEEP_SCHEMA)
    assert feats.spikes.schema.equals(SPIKE_SCHEMA)
    assert feats.cell.schema.equals(CELL_SCHEMA)
    assert feats.sweeps.num_rows == len(rec.sweeps)
    assert feats.cell.num_rows in (0, 1)
    rows = feats.sweeps.to_pylist()
    for r in rows:
        assert r["qc_pass"] == (r["qc_reasons"] == "")
        if r["clamp_mode"] == "voltage_clamp":
            assert r["spike_count"] is None and r["avg_rate_hz"] is None


def test_mislabelled_units_fail_qc() -> None:
    rec = read_abf(next(p for p in ABF_FILES if p.name == "opto_aps_bad_units.abf"))
    assert "units_mislabelled" in rec.qc_flags
    rows = extract_features(rec).sweeps.to_pylist()
    assert rows and all(not r["qc_pass"] and "units_mislabelled" in r["qc_reasons"] for r in rows)


def test_params_as_dict_is_flat_and_storable() -> None:
    d = IcephysParams().as_dict()
    assert d["dv_cutoff_mv_per_ms"] == 20.0 and d["thresh_frac"] == 0.05
    assert all(isinstance(v, (int, float, str)) for v in d.values())
