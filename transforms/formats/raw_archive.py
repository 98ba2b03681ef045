"""Raw plates archived losslessly: a chunked, compressed zarr v3 store with random access.

A continuous plate (an Axion ``.raw``, an NWB ``ElectricalSeries``) is written as a
zarr v3 group ``<file_id>.zarr``:

* one array per well, ``wells/<well>``, of shape (electrodes of the well, samples) in
  the stored integer type (ADC counts), chunked as 1 s x the whole well, so a window
  of one well costs its seconds' chunks and nothing else;
* each chunk compressed with pcodec (the codec chosen by measurement on realistic
  synthetic plates, ``benchmarks/bench_archive.py``: best ratio of the well-kept
  lossless codecs at speeds well above real time; it finds the per-channel delta
  order itself, which is why channels are rows: a chunk flattens channel by channel)
  and followed by a CRC32C checksum, so a corrupted chunk is an error naming the
  archive, well and window, never silently wrong samples;
* the group's attributes hold the layout (AxIS plate type), sampling rate, voltage
  scale, electrode names in the source's column order, the source's ``file_id``,
  name, kind and header metadata, and the SHA-256 of the data region.

Writing verifies before the archive counts: the source's samples are hashed as they
are read (the bytes of its data region, frame after frame), the archive is written
beside its destination, read back and hashed the same way, the source's data region
is read and hashed once more, and only an archive whose three digests agree is marked
complete and renamed into place. A reader refuses an
archive that is not marked complete.

:class:`RawArchive` is a :class:`~transforms.recording.continuous.ContinuousSource`,
so detection, raw access and re-ingest read it like the original file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import shutil
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np

from transforms.errors import DecodeError, InvalidArgument, UnsupportedRecording
from transforms.recording.continuous import (
    ContinuousSource,
    CountsSource,
    rows_of,
)
from transforms.recording.plate import PLATE_TYPES, PlateLayout

#: Marks a group as a Neurocyte raw archive, with the version of this layout.
FORMAT_KEY: Final = "neurocyte_raw_archive"
FORMAT_VERSION: Final = 1
#: pcodec compression level (0-12; 8 is pcodec's default, measured in the benchmark).
DEFAULT_LEVEL: Final = 8
#: Seconds per chunk along time.
DEFAULT_CHUNK_S: Final = 1.0
#: Seconds of all wells read from the source and written per step (bounds memory).
WRITE_SLAB_S: Final = 8.0
#: Decoded chunks an opened archive keeps (MiB). Enough for the detector's 10-s noise
#: window of a 768-channel 12.5-kHz plate (192 MB), which it reads again right after
#: estimating the noise; a larger plate decodes that window twice, nothing worse.
DEFAULT_CACHE_MB: Final = 256


class ArchivedTreatment(NamedTuple):
    """A well's treatment as the archived source stored it (an Axion WellTreatment)."""

    well: str
    treatment: str


@dataclass(frozen=True)
class ArchiveInfo:
    """What :func:`write_archive` wrote.

    Attributes
    ----------
    path
        The archive directory (complete and verified).
    data_sha256
        SHA-256 of the samples in the source's frame order and byte layout.
    stored_bytes, raw_bytes
        Bytes on disk (chunks and metadata) and bytes of the samples.
    """

    path: Path
    data_sha256: str
    stored_bytes: int
    raw_bytes: int

    @property
    def ratio(self) -> float:
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else math.inf


def _codecs(level: int) -> dict[str, Any]:
    """The zarr codec chain of every well array: pcodec, then a CRC32C checksum."""
    from zarr.codecs import Crc32cCodec, PCodec

    with warnings.catch_warnings():
        # "numcodecs codecs are not in the zarr v3 spec": pcodec is registered as
        # numcodecs.pcodec, which zarr-python (and numcodecs-aware readers) decode.
        warnings.simplefilter("ignore")
        serializer = PCodec(level=level, mode_spec="auto", delta_spec="auto")
    return {"serializer": serializer, "compressors": [Crc32cCodec()]}


# Chunks are encoded and decoded here with exactly that chain (numcodecs' pcodec, the
# zarr v3 crc32c codec's little-endian trailer, zarr's default ``c/<i>/<j>`` keys), in a
# thread pool: pcodec releases the GIL, and one call per chunk avoids zarr's per-call
# overhead. zarr-python reads the same store (tests check both paths agree).


def _chunk_file(array_dir: Path, k: int) -> Path:
    return array_dir / "c" / "0" / str(k)


def _encode_chunk(block: np.ndarray, level: int) -> bytes:
    import google_crc32c
    import numcodecs

    body = numcodecs.PCodec(level=level).encode(np.ascontiguousarray(block))
    return bytes(body) + google_crc32c.value(bytes(body)).to_bytes(4, "little")


#: CRC-32C of any message followed by its own CRC-32C (little-endian): checking a chunk
#: with its trailer in one pass needs no copy of the body.
_CRC32C_RESIDUE: Final = 0x48674BC7


def _decode_chunk(blob: bytes, out: np.ndarray, *, what: str) -> None:
    """Check a chunk's CRC32C and decompress it into ``out`` (C-contiguous, full chunk).

    Raises
    ------
    DecodeError
        A checksum mismatch or undecodable content, naming ``what``.
    """
    import google_crc32c
    from pcodec import standalone

    if len(blob) < 4 or google_crc32c.value(blob) != _CRC32C_RESIDUE:
        raise DecodeError(f"{what}: checksum mismatch (CRC32C): the chunk is corrupt")
    try:
        # a pcodec standalone file ends with its own terminator: the 4-byte trailer
        # after it is not read (no copy of the body without it)
        n = standalone.simple_decompress_into(blob, out.reshape(-1))
    except (RuntimeError, ValueError) as exc:
        raise DecodeError(f"{what}: undecodable chunk ({exc})") from exc
    got = getattr(n, "n_processed", None)
    if got is not None and got != out.size:
        raise DecodeError(f"{what}: chunk holds {got} samples, {out.size} expected")


def _wells_of(electrodes: Sequence[str]) -> dict[str, list[int]]:
    """Well -> source columns of its electrodes, in source order, wells in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(electrodes):
        groups.setdefault(name.split("_", 1)[0], []).append(i)
    return groups


def _json_default(value: object) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def source_digest(source: ContinuousSource, *, slab_samples: int) -> str:
    """SHA-256 of a source's samples: every frame in order, little-endian, all columns."""
    digest = hashlib.sha256()
    for start in range(0, source.n_samples, slab_samples):
        block = source.read_counts(start, min(source.n_samples, start + slab_samples))
        digest.update(np.ascontiguousarray(block, dtype=block.dtype.newbyteorder("<")).data)
    return digest.hexdigest()


def write_archive(
    source: ContinuousSource,
    dest: str | Path,
    *,
    file_id: str,
    source_name: str,
    source_kind: str,
    source_uri: str | None = None,
    source_size_bytes: int | None = None,
    level: int = DEFAULT_LEVEL,
    chunk_s: float = DEFAULT_CHUNK_S,
    workers: int = 2,
) -> ArchiveInfo:
    """Archive a continuous recording losslessly, verified, at ``dest`` (``<file_id>.zarr``).

    Parameters
    ----------
    source
        The opened recording (integer samples; ``layout`` attribute required).
    dest
        The archive directory to create (replaced if it exists).
    file_id, source_name, source_kind
        The source's content hash, file name and registry kind, stored as provenance.
    source_uri, source_size_bytes
        Where the original landed and its size (a re-ingest from the archive records
        them as the original's).
    level
        pcodec level.
    chunk_s
        Chunk length along time (seconds).
    workers
        Threads compressing chunks.

    Returns
    -------
    ArchiveInfo
        The archive and its digest and sizes.

    Raises
    ------
    UnsupportedRecording
        Floating-point samples (not ADC counts) or no plate layout.
    DecodeError
        The archive read back does not hash to the source's digest (nothing is left
        at ``dest`` then).
    """
    import zarr

    dtype = np.dtype(source.read_counts(0, 1).dtype)
    if dtype.kind not in "iu":
        raise UnsupportedRecording(
            f"{source_name}: samples are {dtype}, not integer ADC counts: nothing to archive"
        )
    layout: PlateLayout | None = getattr(source, "layout", None)
    if layout is None:
        raise UnsupportedRecording(f"{source_name}: no plate layout to archive with")
    if not (math.isfinite(chunk_s) and chunk_s > 0):
        raise InvalidArgument(f"chunk_s must be positive, got {chunk_s}")
    dest = Path(dest)
    fs = float(source.sampling_rate_hz)
    n = int(source.n_samples)
    chunk = max(1, round(chunk_s * fs))
    slab = chunk * max(1, round(WRITE_SLAB_S / chunk_s))
    wells = _wells_of(source.electrodes)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    recorded_at = getattr(source, "recorded_at", None)
    meta_fn = getattr(source, "plate_metadata", None)
    attrs = {
        FORMAT_KEY: FORMAT_VERSION,
        "complete": False,
        "file_id": file_id,
        "source_name": source_name,
        "source_kind": source_kind,
        "source_uri": source_uri,
        "source_size_bytes": source_size_bytes,
        "plate_type": layout.plate_type,
        "layout": layout.name,
        "sampling_rate_hz": fs,
        "voltage_scale_uv_per_count": float(source.voltage_scale_uv_per_count),
        "n_samples": n,
        "dtype": dtype.str,
        "electrodes": list(source.electrodes),
        "wells": list(wells),
        "chunk_samples": chunk,
        "codec": {"serializer": "pcodec", "level": level, "checksum": "crc32c"},
        "recorded_at": recorded_at.isoformat() if recorded_at is not None else None,
        "flags": list(getattr(source, "flags", ())),
        "plate_map": {e.well: e.treatment for e in getattr(source, "plate_map", ())},
        "plate_metadata": json.loads(
            json.dumps(meta_fn() if callable(meta_fn) else {}, default=_json_default)
        ),
    }
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3, attributes=attrs)
        for w, cols in wells.items():
            root.create_array(
                f"wells/{w}",
                shape=(len(cols), n),
                chunks=(len(cols), chunk),
                dtype=dtype,
                fill_value=0,
                attributes={"electrodes": [source.electrodes[c] for c in cols]},
                **_codecs(level),
            )
        digest = hashlib.sha256()

        def put(w: str, k: int, block: np.ndarray) -> None:
            if block.shape[1] < chunk:  # the edge chunk is stored whole, as zarr does
                block = np.pad(block, ((0, 0), (0, chunk - block.shape[1])))
            target = _chunk_file(tmp / "wells" / w, k)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_encode_chunk(block, level))

        with ThreadPoolExecutor(max(1, workers)) as pool:
            for start in range(0, n, slab):
                stop = min(n, start + slab)
                block = source.read_counts(start, stop)
                digest.update(np.ascontiguousarray(block, dtype=dtype.newbyteorder("<")).data)
                jobs = [
                    pool.submit(put, w, k // chunk, block[k - start : k - start + chunk, cols].T)
                    for k in range(start, stop, chunk)
                    for w, cols in wells.items()
                ]
                for job in jobs:
                    job.result()
        expected = digest.hexdigest()
        with _open(tmp, require_complete=False, workers=workers) as back:
            written = source_digest(back, slab_samples=slab)
        if written != expected:
            raise DecodeError(
                f"{source_name}: archive read back hashes to {written}, the samples written "
                f"to {expected}: archive discarded"
            )
        again = source_digest(source, slab_samples=slab)  # the source, read once more
        if again != expected:
            raise DecodeError(
                f"{source_name}: the source's data region now hashes to {again}, the samples "
                f"archived to {expected} (the source changed while archiving): archive discarded"
            )
        root.attrs.update({"complete": True, "data_sha256": expected})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        old = dest.with_name(f".{dest.name}.{os.getpid()}.old")
        dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(dest)
    raw_bytes = n * len(source.electrodes) * dtype.itemsize
    return ArchiveInfo(dest, expected, _tree_bytes(dest), raw_bytes)


#: How a column selection is copied out of chunks: per well, runs of consecutive output
#: columns ``[j0, j1)`` and their rows in the well's array.
_Plan = list[tuple[str, list[tuple[int, int, slice | np.ndarray]]]]


class RawArchive(CountsSource):
    """An opened raw archive: a continuous source with random access to window x channels.

    Attributes
    ----------
    path, layout, sampling_rate_hz, voltage_scale_uv_per_count, n_samples, duration_s,
    electrodes, recorded_at
        As for the archived source (electrodes in its column order).
    file_id, source_name, source_kind, data_sha256
        Provenance of the archived source.
    """

    def __init__(
        self,
        path: Path,
        *,
        require_complete: bool = True,
        workers: int = 2,
        cache_mb: float = DEFAULT_CACHE_MB,
    ) -> None:
        import zarr

        self.path = path
        self.source_name = path.name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the pcodec codec warning, see _codecs
                root: Any = zarr.open_group(str(path), mode="r", zarr_format=3)
                attrs: dict[str, Any] = dict(root.attrs)
                self._rows = {w: int(root[f"wells/{w}"].shape[0]) for w in attrs.get("wells", ())}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DecodeError(f"{path.name}: not a readable raw archive ({exc})") from exc
        if attrs.get(FORMAT_KEY) != FORMAT_VERSION:
            raise UnsupportedRecording(
                f"{path.name}: not a Neurocyte raw archive (version {attrs.get(FORMAT_KEY)!r})"
            )
        if require_complete and not attrs.get("complete"):
            raise DecodeError(
                f"{path.name}: archive is incomplete (never verified against its source): "
                "archive the recording again"
            )
        layout = PLATE_TYPES.get(int(attrs["plate_type"]))
        if layout is None:
            raise UnsupportedRecording(f"{path.name}: unknown plate type {attrs['plate_type']}")
        self.layout: PlateLayout = layout
        self.attrs = attrs
        self.file_id: str = attrs["file_id"]
        self.source_kind: str = attrs["source_kind"]
        self.source_uri: str | None = attrs.get("source_uri")
        self.source_size_bytes: int | None = attrs.get("source_size_bytes")
        self.data_sha256: str | None = attrs.get("data_sha256")
        self.sampling_rate_hz = float(attrs["sampling_rate_hz"])
        self.voltage_scale_uv_per_count = float(attrs["voltage_scale_uv_per_count"])
        self.n_samples = int(attrs["n_samples"])
        self.duration_s = self.n_samples / self.sampling_rate_hz
        self.electrodes: tuple[str, ...] = tuple(attrs["electrodes"])
        self._dtype = np.dtype(attrs["dtype"])
        at = attrs.get("recorded_at")
        self.recorded_at = dt.datetime.fromisoformat(at) if at else None
        self.flags: tuple[str, ...] = tuple(attrs.get("flags", ()))
        self.plate_map: tuple[ArchivedTreatment, ...] = tuple(
            ArchivedTreatment(w, t) for w, t in dict(attrs.get("plate_map", {})).items()
        )
        self._chunk = int(attrs["chunk_samples"])
        self._pool = ThreadPoolExecutor(max(1, workers))
        self._lock = threading.Lock()
        #: Decoded chunks, done or being decoded, least recently used first; each is
        #: (samples, electrodes of the well), time-major like the reads.
        self._cache: OrderedDict[tuple[str, int], Future[np.ndarray]] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = max(0, int(cache_mb * 2**20))
        #: Chunks a read is copying from (never evicted meanwhile): key -> readers.
        self._pins: dict[tuple[str, int], int] = {}
        #: Arrays of evicted chunks, reused for new ones (a fresh 1.6 MB array costs
        #: its page faults again: about a quarter of a read's CPU, measured).
        self._free: list[np.ndarray] = []
        self._free_max = 2 * max(1, len(self._rows))
        self._local = threading.local()
        #: Where the last read ended: a read starting there is sequential (read ahead).
        self._last_stop: int | None = None
        #: The last column selection and its copy plan (one tuple: read by threads at once).
        self._plan: tuple[bytes, _Plan] = (b"", [])
        # source column -> (well, row inside the well's array)
        self._where: list[tuple[str, int]] = [("", 0)] * len(self.electrodes)
        for w, cols in _wells_of(self.electrodes).items():
            for r, c in enumerate(cols):
                self._where[c] = (w, r)

    def __enter__(self) -> RawArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._cache.clear()
            self._cache_bytes = 0

    def __repr__(self) -> str:
        return (
            f"RawArchive({self.path.name!r}, layout={self.layout.name!r}, "
            f"channels={len(self.electrodes)}, duration_s={self.duration_s:.3f})"
        )

    def plate_metadata(self) -> dict[str, Any]:
        """The archived source's header metadata (times as datetimes again)."""
        meta: dict[str, Any] = dict(self.attrs.get("plate_metadata") or {})
        for key, value in meta.items():
            if key.endswith("_at") and isinstance(value, str):
                try:
                    meta[key] = dt.datetime.fromisoformat(value)
                except ValueError:
                    continue
        return meta

    def _load(self, well: str, k: int) -> np.ndarray:
        fs = self.sampling_rate_hz
        what = (
            f"{self.path.name}: chunk {k} of well {well} "
            f"([{k * self._chunk / fs:g}, {(k + 1) * self._chunk / fs:g}) s)"
        )
        try:
            blob = _chunk_file(self.path / "wells" / well, k).read_bytes()
        except OSError as exc:
            raise DecodeError(f"{what}: missing or unreadable ({exc})") from exc
        shape = (self._rows[well], self._chunk)
        scratch: np.ndarray | None = getattr(self._local, "scratch", None)
        if scratch is None or scratch.shape != shape:
            scratch = self._local.scratch = np.empty(shape, dtype=self._dtype)
        _decode_chunk(blob, scratch, what=what)
        out = None
        with self._lock:
            for i, a in enumerate(self._free):
                if a.shape == shape[::-1]:
                    out = self._free.pop(i)
                    break
        if out is None:
            out = np.empty(shape[::-1], dtype=self._dtype)
        # transposed while the decoded chunk is still in this core's cache
        np.copyto(out, scratch.T)
        return out

    def _chunk_nbytes(self, well: str) -> int:
        return self._rows[well] * self._chunk * self._dtype.itemsize

    def _futures(self, keys: list[tuple[str, int]], *, pin: bool) -> list[Future[np.ndarray]]:
        """Decoded chunks of ``keys``: cached, being decoded, or submitted to the pool now.

        The cache holds recently read chunks up to ``cache_mb``, so a reader whose windows
        do not fall on chunk borders (detection's filter blocks), that reads the columns
        of one well in several calls, or that reads a window again (the detector's noise
        window, then the same seconds for detection) decompresses each chunk once.
        ``pin`` keeps the chunks from eviction until :meth:`_unpin` (a read copying them).
        """
        with self._lock:
            futures = []
            for key in keys:
                fut = self._cache.get(key)
                if fut is None:
                    fut = self._pool.submit(self._load, *key)
                    self._cache[key] = fut
                    self._cache_bytes += self._chunk_nbytes(key[0])
                else:
                    self._cache.move_to_end(key)
                if pin:
                    self._pins[key] = self._pins.get(key, 0) + 1
                futures.append(fut)
            if self._cache_bytes > self._cache_limit:
                wanted = set(keys)  # never the chunks just asked for
                for key in list(self._cache):  # least recently used first
                    if self._cache_bytes <= self._cache_limit:
                        break
                    if key in wanted or key in self._pins:
                        continue
                    self._drop(key)
        return futures

    def _drop(self, key: tuple[str, int]) -> None:
        """Evict a chunk (lock held); its array is reused if decoded and not being read."""
        fut = self._cache.pop(key)
        self._cache_bytes -= self._chunk_nbytes(key[0])
        if fut.done() and fut.exception() is None and len(self._free) < self._free_max:
            self._free.append(fut.result())

    def _unpin(self, keys: list[tuple[str, int]]) -> None:
        with self._lock:
            for key in keys:
                left = self._pins.pop(key) - 1
                if left:
                    self._pins[key] = left

    def _result(self, key: tuple[str, int], fut: Future[np.ndarray]) -> np.ndarray:
        try:
            return fut.result()
        except DecodeError:
            with self._lock:  # not cached: a repaired chunk is read again
                if self._cache.get(key) is fut:
                    del self._cache[key]
                    self._cache_bytes -= self._chunk_nbytes(key[0])
            raise

    def _plan_for(self, cols: np.ndarray) -> _Plan:
        """Per well, runs of consecutive output columns ``[j0, j1)`` and their rows in the
        well's array (a slice when consecutive too), so that a chunk is copied into the
        output with a few strided slice assignments, not a fancy-indexed scatter."""
        key = cols.tobytes()
        last_key, last_plan = self._plan
        if key == last_key:
            return last_plan
        by_well: dict[str, list[tuple[int, int]]] = {}
        for j, c in enumerate(cols.tolist()):
            well, row = self._where[c]
            by_well.setdefault(well, []).append((j, row))
        plan = []
        for well, picks in by_well.items():
            runs: list[tuple[int, int, slice | np.ndarray]] = []
            i = 0
            while i < len(picks):
                e = i + 1
                while e < len(picks) and picks[e][0] == picks[e - 1][0] + 1:
                    e += 1
                rows = [r for _, r in picks[i:e]]
                if rows == list(range(rows[0], rows[0] + len(rows))):
                    runs.append((picks[i][0], picks[e - 1][0] + 1, slice(rows[0], rows[-1] + 1)))
                else:
                    runs.append((picks[i][0], picks[e - 1][0] + 1, np.asarray(rows)))
                i = e
            plan.append((well, runs))
        self._plan = (key, plan)
        return plan

    def read_counts(
        self,
        start_sample: int,
        stop_sample: int,
        *,
        columns: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Stored counts of frames ``[start_sample, stop_sample)``, (samples, channels).

        Only the chunks of the wells the columns belong to and of the window are read
        and decompressed, in the thread pool. A read that starts where the previous one
        ended (a stream: detection, a full read) has the chunks of the next window of
        the same length decompressed meanwhile, so that they are ready when asked for.
        ``out`` as in the other sources.
        """
        start = max(0, int(start_sample))
        stop = min(self.n_samples, int(stop_sample))
        cols = (
            np.arange(len(self.electrodes))
            if columns is None
            else np.asarray(columns, dtype=np.int64)
        )
        dest = rows_of(out, max(0, stop - start), len(cols), self._dtype)
        if stop <= start or len(cols) == 0:
            return dest
        plan = self._plan_for(cols)
        size = self._chunk
        ks = range(start // size, -(-stop // size))
        keys = [(w, k) for w, _ in plan for k in ks]
        futures = self._futures(keys, pin=True)
        try:
            sequential = start == self._last_stop
            self._last_stop = stop
            if sequential and stop < self.n_samples and self._cache_limit:
                ahead = min(self.n_samples, stop + (stop - start))
                nxt = range(stop // size, -(-ahead // size))
                self._futures([(w, k) for w, _ in plan for k in nxt], pin=False)
            pending = iter(futures)
            for well, runs in plan:
                for k in ks:
                    chunk = self._result((well, k), next(pending))
                    a, b = max(start, k * size), min(stop, (k + 1) * size)
                    part = chunk[a - k * size : b - k * size]
                    for j0, j1, rows in runs:
                        dest[a - start : b - start, j0:j1] = part[:, rows]
        finally:
            self._unpin(keys)
        return dest

    def verify(self) -> str:
        """Decompress every chunk and check the samples against the stored digest.

        Raises
        ------
        DecodeError
            A corrupt chunk, or samples that no longer hash to ``data_sha256``.
        """
        slab = int(self.attrs["chunk_samples"]) * max(1, round(WRITE_SLAB_S))
        got = source_digest(self, slab_samples=slab)
        if got != self.data_sha256:
            raise DecodeError(
                f"{self.path.name}: samples hash to {got}, the archive recorded {self.data_sha256}"
            )
        return got


def _open(
    path: Path, *, require_complete: bool, workers: int = 2, cache_mb: float = DEFAULT_CACHE_MB
) -> RawArchive:
    return RawArchive(path, require_complete=require_complete, workers=workers, cache_mb=cache_mb)


def open_raw_archive(
    path: str | Path, *, workers: int = 2, cache_mb: float = DEFAULT_CACHE_MB
) -> RawArchive:
    """Open a complete (verified) raw archive.

    ``workers`` threads decompress chunks; ``cache_mb`` bounds the decoded chunks kept
    (0: none kept, no read-ahead).

    Raises
    ------
    DecodeError
        Unreadable, or never completed (interrupted before verification).
    UnsupportedRecording
        Not a Neurocyte raw archive, or an unknown plate type.
    """
    return _open(Path(path), require_complete=True, workers=workers, cache_mb=cache_mb)
