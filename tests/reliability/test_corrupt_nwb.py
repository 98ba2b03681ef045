"""Structurally corrupt NWB files fail only with NeurocyteError naming the file.

Each variant is the real shared ``99111002.nwb`` changed with h5py: datasets truncated,
emptied, reshaped or of the wrong type; required groups dropped; rates, conversions
and units absurd (NaN, 0, negative, inf, strings); table references out of range.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import NWB_DIR
from transforms import formats
from transforms.errors import NeurocyteError
from transforms.formats.nwb_icephys import read_nwb
from transforms.pipeline import ingest_paths

SRC = NWB_DIR / "99111002.nwb"
ACQ = "acquisition/ic__Step__1"
STIM = "stimulus/presentation/ics__Step__1"
TABLE = "general/intracellular_ephys/intracellular_recordings"


def _replace(f: h5py.File, name: str, data: object, *, keep_attrs: bool = True) -> None:
    attrs = dict(f[name].attrs) if keep_attrs else {}
    del f[name]
    f[name] = data
    for k, v in attrs.items():
        f[name].attrs[k] = v


def _series(f: h5py.File) -> list[str]:
    return [f"acquisition/{k}" for k in f["acquisition"]]


def _every(f: h5py.File, fn: Callable[[str], None]) -> None:
    for s in _series(f):
        fn(s)


def _set_ref(f: h5py.File, *, idx_start: int, count: int) -> None:
    ds = f[f"{TABLE}/responses/response"]
    arr = ds[:]
    arr["idx_start"][:] = idx_start
    arr["count"][:] = count
    ds[...] = arr


def _attr(name: str, key: str, value: object) -> Callable[[h5py.File], None]:
    return lambda f: f[name].attrs.__setitem__(key, value)


VARIANTS: dict[str, Callable[[h5py.File], None]] = {
    "data_truncated": lambda f: _replace(f, f"{ACQ}/data", f[f"{ACQ}/data"][:10]),
    "data_empty_all": lambda f: _every(f, lambda s: _replace(f, f"{s}/data", np.zeros(0, "f4"))),
    "data_2d": lambda f: _replace(f, f"{ACQ}/data", np.zeros((7168, 3), "f4")),
    "data_strings": lambda f: _replace(f, f"{ACQ}/data", np.array([b"x"] * 7168)),
    "data_nan_all": lambda f: _every(
        f, lambda s: _replace(f, f"{s}/data", np.full(7168, np.nan, "f4"))
    ),
    "data_inf_one": lambda f: _replace(f, f"{ACQ}/data", np.full(7168, np.inf, "f4")),
    "rate_nan": _attr(f"{ACQ}/starting_time", "rate", np.nan),
    "rate_zero_all": lambda f: _every(
        f, lambda s: f[f"{s}/starting_time"].attrs.__setitem__("rate", 0.0)
    ),
    "rate_negative": _attr(f"{ACQ}/starting_time", "rate", -5.0),
    "rate_inf": _attr(f"{ACQ}/starting_time", "rate", np.inf),
    "rate_string": _attr(f"{ACQ}/starting_time", "rate", "fast"),
    "conversion_nan": _attr(f"{ACQ}/data", "conversion", np.nan),
    "conversion_zero_all": lambda f: _every(
        f, lambda s: f[f"{s}/data"].attrs.__setitem__("conversion", 0.0)
    ),
    "unit_int": _attr(f"{ACQ}/data", "unit", 7),
    "no_acquisition": lambda f: f.__delitem__("acquisition"),
    "no_data_dataset": lambda f: f.__delitem__(f"{ACQ}/data"),
    "no_starting_time": lambda f: f.__delitem__(f"{ACQ}/starting_time"),
    "no_responses_table": lambda f: f.__delitem__(f"{TABLE}/responses"),
    "no_electrodes_table": lambda f: f.__delitem__(f"{TABLE}/electrodes"),
    "no_stimulus": lambda f: f.__delitem__("stimulus"),
    "no_intracellular_ephys": lambda f: f.__delitem__("general/intracellular_ephys"),
    "no_session_start": lambda f: f.__delitem__("session_start_time"),
    "session_start_garbage": lambda f: _replace(
        f, "session_start_time", "not a date", keep_attrs=False
    ),
    "response_ref_out_of_range": lambda f: _set_ref(f, idx_start=10**6, count=10**6),
    "response_ref_negative": lambda f: _set_ref(f, idx_start=-5, count=-3),
    "response_ids_short": lambda f: _replace(f, f"{TABLE}/id", f[f"{TABLE}/id"][:3]),
    "stimulus_shape_mismatch": lambda f: _replace(f, f"{STIM}/data", np.zeros(17, "f4")),
    "table_index_garbage": lambda f: _replace(
        f,
        "general/intracellular_ephys/simultaneous_recordings/recordings_index",
        np.full(16, 250, "u1"),
    ),
    "sweep_number_string": _attr(ACQ, "sweep_number", "seven"),
}


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("nwb") / "landing" / "labN" / "WT" / "P21"
    folder.mkdir(parents=True)
    out = {}
    for name, mutate in VARIANTS.items():
        dest = folder / f"{name}.nwb"
        shutil.copyfile(SRC, dest)
        dest.chmod(0o644)
        with h5py.File(dest, "r+") as f:
            mutate(f)
        out[name] = dest
    return out


#: The variants that escaped ``read_nwb`` (or gave a 1.9 KB message) before the fix:
#: the default suite reads these; the slow suite reads every variant.
ESCAPED_BEFORE = ("data_strings", "no_acquisition", "no_stimulus", "data_2d", "unit_int")


def _read_all(corrupt: dict[str, Path], names: tuple[str, ...]) -> None:
    escaped: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            path = corrupt[name]
            try:
                kind = formats.kind_of(path)
                if kind == "nwb":
                    read_nwb(path)
            except NeurocyteError as exc:
                assert path.name in str(exc), (name, str(exc))
                assert len(str(exc)) < 1000, (name, len(str(exc)))
            except Exception as exc:  # the finding: anything else escaping the reader
                escaped[name] = f"{type(exc).__name__}: {exc}"[:200]
    assert not escaped, escaped


def test_structural_corruption_raises_only_neurocyte_errors_naming_the_file(
    corrupt: dict[str, Path],
) -> None:
    _read_all(corrupt, ESCAPED_BEFORE)


@pytest.mark.slow
def test_every_variant_raises_only_neurocyte_errors_naming_the_file(
    corrupt: dict[str, Path],
) -> None:
    _read_all(corrupt, tuple(VARIANTS))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_corrupt_nwb_files_never_fail_as_internal_errors(corrupt: dict[str, Path]) -> None:
    landing = next(iter(corrupt.values())).parents[3]
    lake = landing.parent / "lake"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = ingest_paths(
            sorted(corrupt.values()), lake=str(lake), landing=str(landing), publish=False
        )
    assert len(summary.outcomes) == len(VARIANTS)
    internal = {o.file_name: o.reason for o in summary.outcomes if "internal error" in o.reason}
    assert not internal, internal
    for o in summary.outcomes:
        if o.status == "failed":
            assert o.file_name in o.reason, (o.file_name, o.reason)
