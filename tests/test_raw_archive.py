"""Raw archives: bit-exact round trips, random windows, corruption detected, zarr-readable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from transforms import formats, spec
from transforms.errors import DecodeError
from transforms.formats.raw_archive import open_raw_archive, write_archive
from transforms.synth.plate import SynthPlate, generate_plate

FILE_ID = "ab" * 32


@pytest.fixture(scope="module")
def plate(tmp_path_factory: pytest.TempPathFactory) -> SynthPlate:
    # 2.3 s: the last 1-s chunk is partial; low noise as on real Axion data
    return generate_plate(
        tmp_path_factory.mktemp("plate"),
        n_wells=24,
        duration_s=2.3,
        seed=5,
        noise_rms_uv=(1.0, 2.5),
        write_spk=False,
    )


@pytest.fixture(scope="module")
def archive(plate: SynthPlate, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("lake") / f"{FILE_ID}{spec.RAW_ARCHIVE_SUFFIX}"
    with formats.open_continuous(plate.raw_path) as src:
        info = write_archive(
            src, dest, file_id=FILE_ID, source_name=plate.raw_path.name, source_kind="axion_raw"
        )
    assert info.path == dest and info.ratio > 1.5
    return dest


def region_sha256(path: Path) -> str:
    """SHA-256 of the .raw file's data region, read independently of the reader."""
    with formats.open_continuous(path) as f:
        n_bytes = f.n_samples * len(f.electrodes) * 2
        start = f._ds.region_start
    with path.open("rb") as fh:
        fh.seek(start)
        return hashlib.sha256(fh.read(n_bytes)).hexdigest()


def test_round_trip_is_bit_exact(plate: SynthPlate, archive: Path) -> None:
    assert formats.kind_of(archive) == "raw_archive"
    src = formats.open_continuous(plate.raw_path)
    with formats.open_continuous(archive) as arc:
        assert arc.electrodes == src.electrodes
        assert arc.n_samples == src.n_samples
        assert arc.sampling_rate_hz == src.sampling_rate_hz
        assert arc.voltage_scale_uv_per_count == src.voltage_scale_uv_per_count
        assert arc.layout == src.layout
        assert arc.recorded_at == src.recorded_at
        assert arc.file_id == FILE_ID
        whole = arc.read_counts(0, arc.n_samples)
        assert whole.dtype == np.int16
        np.testing.assert_array_equal(whole, src.read_counts(0, src.n_samples))
        # the digest recorded is the data region's, and the samples still hash to it
        assert arc.data_sha256 == region_sha256(plate.raw_path)
        assert arc.verify() == arc.data_sha256
        assert formats.embedded_plate_map(arc) == formats.embedded_plate_map(src)


def test_random_windows_and_channel_sets(plate: SynthPlate, archive: Path) -> None:
    rng = np.random.default_rng(3)
    src = formats.open_continuous(plate.raw_path)
    with formats.open_continuous(archive) as arc:
        for _ in range(25):
            a = int(rng.integers(0, arc.n_samples))
            b = int(rng.integers(a, arc.n_samples + 50))
            cols = rng.choice(len(arc.electrodes), size=int(rng.integers(1, 40)), replace=False)
            np.testing.assert_array_equal(
                arc.read_counts(a, b, columns=cols), src.read_counts(a, b, columns=cols)
            )
        got = arc.read(1.3, 2.3, wells=["B2"], electrodes=[src.electrodes[7]])
        np.testing.assert_array_equal(
            got, src.read(1.3, 2.3, wells=["B2"], electrodes=[src.electrodes[7]])
        )
        buf = np.zeros((4000, 16), dtype=np.int16)
        cols = arc.columns(wells=["D6"])
        out = arc.read_counts(100, 3100, columns=cols, out=buf)
        assert np.shares_memory(out, buf)
        np.testing.assert_array_equal(out, src.read_counts(100, 3100, columns=cols))


def test_streamed_reads_decompress_each_chunk_once(tmp_path: Path) -> None:
    """Detection reads the noise window, then the whole plate from its start, in windows
    that straddle chunk borders: every chunk is decompressed once (cached or read ahead)."""
    from transforms.mea.detect import detect_spikes

    plate = generate_plate(
        tmp_path, n_wells=24, duration_s=5.2, seed=8, noise_rms_uv=(1.0, 2.5), write_spk=False
    )
    src = formats.open_continuous(plate.raw_path)
    dest = tmp_path / f"{FILE_ID}.zarr"
    write_archive(src, dest, file_id=FILE_ID, source_name="p.raw", source_kind="axion_raw")
    with open_raw_archive(dest) as arc:
        loads: list[tuple[str, int]] = []
        real_load = arc._load

        def counted(well: str, k: int) -> np.ndarray:
            loads.append((well, k))
            return real_load(well, k)

        arc._load = counted  # type: ignore[method-assign]
        spikes = detect_spikes(arc, chunk_s=0.7)
        n_chunks = len(arc.layout.wells) * -(-arc.n_samples // int(arc.attrs["chunk_samples"]))
        assert sorted(loads) == sorted(set(loads)) and len(loads) == n_chunks
    assert spikes.equals(detect_spikes(src, chunk_s=0.7))


@pytest.mark.parametrize("cache_mb", [0.0, 1.0])
def test_sequential_reads_with_a_small_cache_are_exact(
    plate: SynthPlate, archive: Path, cache_mb: float
) -> None:
    """Read-ahead and eviction never change samples, with any cache size."""
    src = formats.open_continuous(plate.raw_path)
    cols = np.r_[np.arange(40, 90), np.arange(5, 12)[::-1], [300, 2]]  # runs, reversed, lone
    with open_raw_archive(archive, cache_mb=cache_mb) as arc:
        for step in (3_001, 12_500, 7_777):
            for a in range(0, arc.n_samples, step):
                np.testing.assert_array_equal(
                    arc.read_counts(a, a + step, columns=cols),
                    src.read_counts(a, a + step, columns=cols),
                )
        # at most the budget, or the chunks of the last read (two per well) if more
        wells = {src.electrodes[c].split("_", 1)[0] for c in cols}
        assert arc._cache_bytes <= max(cache_mb * 2**20, len(wells) * 2 * 16 * 12_500 * 2)


def test_concurrent_reads_with_evictions_are_exact(plate: SynthPlate, archive: Path) -> None:
    """Threads reading at once while chunks are evicted and their arrays reused."""
    from concurrent.futures import ThreadPoolExecutor

    src = formats.open_continuous(plate.raw_path)
    whole = src.read_counts(0, src.n_samples)

    def reader(seed: int) -> int:
        rng = np.random.default_rng(seed)
        for _ in range(30):
            a = int(rng.integers(0, arc.n_samples))
            b = int(rng.integers(a, arc.n_samples + 1))
            cols = rng.choice(len(arc.electrodes), size=int(rng.integers(1, 120)), replace=False)
            np.testing.assert_array_equal(arc.read_counts(a, b, columns=cols), whole[a:b, cols])
        return seed

    with open_raw_archive(archive, cache_mb=2.0) as arc, ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(reader, range(4))) == [0, 1, 2, 3]


def test_zarr_python_reads_the_same_samples(plate: SynthPlate, archive: Path) -> None:
    import zarr

    src = formats.open_continuous(plate.raw_path)
    group = zarr.open_group(str(archive), mode="r")
    cols = src.columns(wells=["C4"])
    stored = group["wells/C4"]
    assert list(stored.attrs["electrodes"]) == [src.electrodes[c] for c in cols]
    np.testing.assert_array_equal(stored[:, :].T, src.read_counts(0, src.n_samples, columns=cols))


def test_corrupted_chunk_is_a_clear_error(archive: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / archive.name
    shutil.copytree(archive, broken)
    chunk = broken / "wells" / "B3" / "c" / "0" / "1"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10  # one flipped bit
    chunk.write_bytes(bytes(data))
    with open_raw_archive(broken) as arc:
        ok = arc.read_counts(0, 12_000, columns=arc.columns(wells=["B3"]))  # chunk 0 only
        assert ok.shape == (12_000, 16)
        with pytest.raises(DecodeError, match=r"chunk 1 of well B3 \(\[1, 2\) s\).*checksum"):
            arc.read(0.5, 1.5, wells=["B3"])
        with pytest.raises(DecodeError, match=r"chunk 1 of well B3"):  # not cached as good
            arc.read(0.5, 1.5, wells=["B3"])
    with open_raw_archive(broken) as arc:
        cols = arc.columns(wells=["B3"])
        arc.read_counts(0, 6_000, columns=cols)
        arc.read_counts(6_000, 12_000, columns=cols)  # sequential: chunk 1 is read ahead
        with pytest.raises(DecodeError, match=r"chunk 1 of well B3.*checksum"):
            arc.read_counts(12_000, 18_000, columns=cols)  # the error where it is needed
    with open_raw_archive(broken) as arc, pytest.raises(DecodeError, match="well B3"):
        arc.verify()
    (broken / "wells" / "A1" / "c" / "0" / "0").unlink()
    with (
        open_raw_archive(broken) as arc,
        pytest.raises(DecodeError, match=r"chunk 0 of well A1.*missing"),
    ):
        arc.read(0.0, 0.1, wells=["A1"])


def test_unverified_archive_is_refused(plate: SynthPlate, tmp_path: Path) -> None:
    import zarr

    dest = tmp_path / f"{FILE_ID}.zarr"
    with formats.open_continuous(plate.raw_path) as src:
        write_archive(src, dest, file_id=FILE_ID, source_name="p.raw", source_kind="axion_raw")
    zarr.open_group(str(dest), mode="r+").attrs["complete"] = False  # as if interrupted
    with pytest.raises(DecodeError, match="incomplete"):
        open_raw_archive(dest)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary archive left behind


class _Lying:
    """A source whose second read of the data differs from the first (a changing file)."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self._reads = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def read_counts(self, a: int, b: int, **kw: object) -> np.ndarray:
        out = np.array(self._inner.read_counts(a, b, **kw))  # type: ignore[attr-defined]
        self._reads += 1
        if self._reads == 2 and out.size:  # the slab archived, not the probe or the re-read
            out.flat[0] += 1
        return out


def test_archive_that_does_not_hash_like_its_source_is_discarded(
    plate: SynthPlate, tmp_path: Path
) -> None:
    dest = tmp_path / f"{FILE_ID}.zarr"
    src = _Lying(formats.open_continuous(plate.raw_path))
    with pytest.raises(DecodeError, match="source changed while archiving"):
        write_archive(src, dest, file_id=FILE_ID, source_name="p.raw", source_kind="axion_raw")  # type: ignore[arg-type]
    assert not dest.exists() and not list(tmp_path.iterdir())
