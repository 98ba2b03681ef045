"""One contract every continuous source passes: Axion .raw, NWB ElectricalSeries, raw
archives, arrays."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from transforms import formats
from transforms.errors import InvalidArgument
from transforms.formats.axion import write_axion_raw
from transforms.formats.nwb_ecephys import write_nwb_ecephys
from transforms.formats.raw_archive import write_archive
from transforms.recording.continuous import ArraySource, ContinuousSource
from transforms.recording.plate import LAYOUTS

LAYOUT = LAYOUTS[24]
FS_HZ = 12_500.0
N = 6_250  # 0.5 s
SCALE_UV = -5.8139534883720935e-08 * 1e6


@pytest.fixture(scope="module")
def counts() -> np.ndarray:
    rng = np.random.default_rng(11)
    return rng.integers(-2000, 2000, (N, len(LAYOUT.electrodes)), dtype=np.int16)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, counts: np.ndarray) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    raw = write_axion_raw(
        root / "plate.raw",
        (counts[i : i + 1000] for i in range(0, N, 1000)),
        layout=LAYOUT,
        sampling_rate_hz=FS_HZ,
        voltage_scale_uv_per_count=SCALE_UV,
        recorded_at=dt.datetime(2025, 3, 4, 5, 6, 7),
    )
    with formats.open_continuous(raw) as f:
        nwb = write_nwb_ecephys(root / "plate.nwb", f)
        archive = write_archive(
            f,
            root / ("0" * 64 + ".zarr"),
            file_id="0" * 64,
            source_name=raw.name,
            source_kind="axion_raw",
        ).path
    return {"axion_raw": raw, "nwb_ecephys": nwb, "raw_archive": archive}


@pytest.fixture(params=["axion_raw", "nwb_ecephys", "raw_archive", "array"])
def source(request, files: dict[str, Path], counts: np.ndarray) -> Iterator[ContinuousSource]:
    if request.param == "array":
        yield ArraySource(counts * np.float32(SCALE_UV), FS_HZ, LAYOUT.electrodes)
        return
    assert formats.kind_of(files[request.param]) == request.param
    with formats.open_continuous(files[request.param]) as f:
        yield f


def _uv(src: ContinuousSource, a: int, b: int, cols: np.ndarray | None = None) -> np.ndarray:
    return src.read_counts(a, b, columns=cols).astype(np.float64) * src.voltage_scale_uv_per_count


def test_shape_names_and_rate(source: ContinuousSource) -> None:
    assert isinstance(source, ContinuousSource)
    assert source.sampling_rate_hz == FS_HZ
    assert source.n_samples == N
    assert source.electrodes == LAYOUT.electrodes
    np.testing.assert_array_equal(source.columns(), np.arange(len(LAYOUT.electrodes)))


def test_values_are_the_written_microvolts(source: ContinuousSource, counts: np.ndarray) -> None:
    want = counts.astype(np.float64) * SCALE_UV
    np.testing.assert_allclose(_uv(source, 0, N), want, rtol=1e-6, atol=1e-6)


def test_windows_and_column_subsets_agree_with_the_whole(source: ContinuousSource) -> None:
    whole = source.read_counts(0, N)
    cols = source.columns(wells=["B3"], electrodes=[LAYOUT.electrodes[0]])
    assert source.electrodes[cols[0]] == LAYOUT.electrodes[0]
    assert all(source.electrodes[c].startswith("B3_") for c in cols[1:])
    part = source.read_counts(1234, 4321, columns=cols)
    np.testing.assert_array_equal(part, whole[1234:4321][:, cols])


def test_reads_into_caller_buffers(source: ContinuousSource) -> None:
    cols = source.columns(wells=["A1"])
    want = source.read_counts(100, 600, columns=cols)
    buf = np.empty((1000, len(cols)), dtype=want.dtype)
    got = source.read_counts(100, 600, columns=cols, out=buf)
    assert got.base is buf or got is buf[:500] or np.shares_memory(got, buf)
    np.testing.assert_array_equal(got, want)


def test_bad_selections_are_clear(source: ContinuousSource) -> None:
    with pytest.raises(InvalidArgument, match="no electrode of well 'D9'"):
        source.columns(wells=["D9"])
    with pytest.raises(InvalidArgument, match="list of names"):
        source.columns(wells="A1")  # type: ignore[arg-type]
