"""Partial raw access: a time window of one recording, found through the catalog.

As with IBL's ONE, an analyst names a recording by its ``file_id`` (the SHA-256 of
the source file) and asks for a window; the source file is located through the
published catalog (``mea_recordings.source_path`` or
``icephys_recordings.source_path``), checked against ``file_id``, and only the
window is read:

* Axion ``.raw`` plates through a memory map of just the requested frames
  (:meth:`transforms.readers.axion.AxionFile.read`), so a 2-second window of one
  well of a 1 GB plate costs a few tens of MB of I/O;
* MEA NWB files through an HDF5 hyperslab read;
* patch-clamp ABF / NWB files through the readers (these files are small: the
  whole file is decoded, then the sweep window is cut).

Verification of the file against ``file_id`` is cheap unless the file changed (see
:func:`verify_source`): the size recorded at ingest is always compared, then a
fingerprint (size, mtime, ctime, inode and 16 sampled blocks) with the one taken
at staging; only when it differs (or none is known) is the full SHA-256 computed
before serving, because hashing a multi-GB plate would cost seconds for a
millisecond read. Pass ``verify="full"`` to always hash.

A :class:`Snippet` saves as ``.npy`` (the samples, with a ``.json`` sidecar of
metadata) or ``.nwb`` (MEA: an ``ElectricalSeries`` via
:func:`~transforms.readers.nwb_ecephys.write_nwb_ecephys`; patch clamp: the
sweep window via :func:`~transforms.export_nwb.export_nwb`).

CLI: ``neurocyte raw FILE_ID --well B2 --start 10 --stop 12 --out snippet.npy``
is ``fetch_snippet(file_id, well="B2", start_s=10, stop_s=12).save("snippet.npy")``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np

from transforms import formats, spec
from transforms.errors import LakeError, SpecError
from transforms.lake import storage

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

#: Above this size a full hash costs seconds: such files are re-hashed only when their
#: fingerprint (:mod:`transforms.lake.fingerprints`) says they changed.
HASH_LIMIT_BYTES: Final = 64 * 1024 * 1024
#: Catalog views searched for a file_id, in order, with the kind of recording.
SOURCE_VIEWS: Final[tuple[tuple[str, str], ...]] = (
    ("mea_recordings", "mea"),
    ("icephys_recordings", "icephys"),
)
#: Longest window served (seconds); a guard against reading a whole plate by accident.
MAX_WINDOW_S: Final = 600.0
#: Most samples (all channels together) one snippet may hold: 2**26 float32 = 256 MiB.
MAX_VALUES: Final = 1 << 26

Verify = Literal["auto", "full", "size"]
Kind = Literal["mea", "icephys"]

#: Fingerprints of (path, file_id) this process verified by a full hash.
_verified: dict[tuple[str, str], Any] = {}
_verified_lock = threading.Lock()
#: Recent :func:`locate` answers, keyed by the catalog file's identity (path, inode, size,
#: mtime: a publish replaces the file, so a new catalog never answers from here) and the
#: file_id. The source itself is still verified on every read.
_located: dict[tuple[str, int, int, int, str], SourceRecord] = {}
_located_lock = threading.Lock()
_LOCATED_MAX: Final = 256


@dataclass(frozen=True)
class SourceRecord:
    """Where a published recording's source file is, per the catalog.

    Attributes
    ----------
    file_id
        SHA-256 of the source file at ingest.
    kind
        ``mea`` or ``icephys``.
    source_path
        A local path holding the source's bytes (the landed file itself, or a
        verified cached copy of an ``s3://`` object).
    file_size_bytes
        Size recorded at ingest, or None when the catalog has no such column.
    source_uri
        Where the file landed, as recorded at ingest (a path or an ``s3://`` URI).
    lab, condition, timepoint
        Partition of the recording.
    """

    file_id: str
    kind: Kind
    source_path: Path
    file_size_bytes: int | None
    source_uri: str = ""
    lab: str | None = None
    condition: str | None = None
    timepoint: str | None = None


@dataclass(frozen=True)
class Snippet:
    """A window of raw samples of one recording.

    Attributes
    ----------
    file_id, kind, source_path
        The recording (see :class:`SourceRecord`).
    data
        Samples, shape (n_samples, n_channels), float32, in :attr:`unit`.
    channels
        Channel names in column order (``A1_23`` electrodes for MEA; the response
        channel for patch clamp).
    unit
        ``uV`` (MEA), ``mV`` (current clamp) or ``pA`` (voltage clamp).
    sampling_rate_hz
        Samples per second.
    start_s
        Time of the first sample: seconds from the recording start (MEA) or from
        the sweep start (patch clamp).
    sweep
        Sweep number (patch clamp), None for MEA.
    command, command_unit
        The sweep's command window (patch clamp, where the file has one).
    verification
        How the source was checked against ``file_id``: ``sha256``, ``fingerprint``
        (unchanged since it was hashed) or ``size``; ``archive`` when the original is
        gone and the lake's verified raw archive of the content was read instead
        (``source_path`` is then the archive).
    window
        The window asked for, ``(start_s, stop_s)``; :attr:`wells` /
        :attr:`electrodes` the channel selection asked for.
    """

    file_id: str
    kind: Kind
    source_path: Path
    data: np.ndarray
    channels: tuple[str, ...]
    unit: str
    sampling_rate_hz: float
    start_s: float
    sweep: int | None = None
    command: np.ndarray | None = field(default=None, repr=False)
    command_unit: str | None = None
    verification: str = "size"
    window: tuple[float, float] = (0.0, 0.0)
    wells: tuple[str, ...] | None = None
    electrodes: tuple[str, ...] | None = None

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sampling_rate_hz

    def time_s(self) -> np.ndarray:
        """Sample times in seconds (same origin as :attr:`start_s`)."""
        return self.start_s + np.arange(self.n_samples, dtype=np.float64) / self.sampling_rate_hz

    def metadata(self) -> dict[str, Any]:
        """JSON-ready description of the snippet (everything but the samples)."""
        return {
            "file_id": self.file_id,
            "kind": self.kind,
            "source_path": str(self.source_path),
            "channels": list(self.channels),
            "unit": self.unit,
            "sampling_rate_hz": self.sampling_rate_hz,
            "start_s": self.start_s,
            "n_samples": self.n_samples,
            "sweep": self.sweep,
            "command_unit": self.command_unit if self.command is not None else None,
            "verification": self.verification,
            "window_s": list(self.window),
            "shape": list(self.data.shape),
            "dtype": str(self.data.dtype),
        }

    def save(self, path: str | Path) -> Path:
        """Write the snippet as ``.npy`` (+ ``<path>.json`` metadata) or ``.nwb``.

        Parameters
        ----------
        path
            Output file; its suffix picks the format.

        Returns
        -------
        Path
            ``path``.

        Raises
        ------
        SpecError
            For any other suffix.
        """
        out = Path(path)
        suffix = out.suffix.lower()
        out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            np.save(out, self.data)
            side = out.with_name(out.name + ".json")
            side.write_text(json.dumps(self.metadata(), indent=1), encoding="utf-8")
            return out
        if suffix == ".nwb":
            if self.kind == "mea":
                return self._save_nwb_mea(out)
            return self._save_nwb_icephys(out)
        raise SpecError(f"snippet output must end in .npy or .nwb, got {out.name!r}")

    def _save_nwb_mea(self, out: Path) -> Path:
        from transforms.formats.nwb_ecephys import write_nwb_ecephys

        with _open_mea(self.source_path) as source:
            return write_nwb_ecephys(
                out,
                source,
                start_s=self.window[0],
                stop_s=self.window[1],
                electrodes=list(self.channels),
                session_description=f"window {self.window} s of recording {self.file_id}",
                identifier=f"{self.file_id}-{self.window[0]:g}-{self.window[1]:g}",
            )

    def _save_nwb_icephys(self, out: Path) -> Path:
        from transforms.formats.nwb_icephys_export import export_nwb
        from transforms.recording.icephys import ClampMode, IcephysRecording, Sweep

        rec = _read_icephys(self.source_path)
        mode: ClampMode = "current_clamp" if self.unit == "mV" else "voltage_clamp"
        sweep = Sweep(
            number=int(self.sweep or 0),
            sampling_rate_hz=self.sampling_rate_hz,
            clamp_mode=mode,
            response=self.data[:, 0].astype(np.float64),
            command=None if self.command is None else self.command.astype(np.float64),
            response_unit=self.unit,
            command_unit=self.command_unit or ("pA" if mode == "current_clamp" else "mV"),
            start_time_s=self.start_s,
        )
        window = IcephysRecording(
            source_format=rec.source_format,
            format_version=rec.format_version,
            protocol=rec.protocol,
            recorded_at=rec.recorded_at,
            sweeps=(sweep,),
            channel_names=rec.channel_names,
            channel_units=rec.channel_units,
        )
        desc = f"sweep {self.sweep}, window {self.window} s of recording {self.file_id}"
        return export_nwb(
            window,
            out,
            file_id=f"{self.file_id}-{self.sweep}-{self.window[0]:g}-{self.window[1]:g}",
            metadata={"session_description": desc},
            compress=False,
        )


# --------------------------------------------------------------------------- lookup


def _view_columns(con: DuckDBPyConnection, view: str) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [view]
    ).fetchall()
    return {r[0] for r in rows}


def locate(file_id: str, *, lake: str | None = None) -> SourceRecord:
    """Find a published recording's source file through the catalog.

    Parameters
    ----------
    file_id
        SHA-256 hex digest of the recording.
    lake
        Lake root (default ``$NEUROCYTE_LAKE`` / ``./lake``).

    Raises
    ------
    SpecError
        Malformed ``file_id``.
    LakeError
        No catalog, or no published recording with this ``file_id``.
    """
    spec.check_file_id(file_id)
    catalog = spec.catalog_path(lake)
    key: tuple[str, int, int, int, str] | None = None
    if not spec.is_remote(catalog):
        try:
            st = os.stat(catalog)
        except OSError:
            st = None
        if st is not None:
            key = (str(catalog), st.st_ino, st.st_size, st.st_mtime_ns, file_id)
            with _located_lock:
                found = _located.get(key)
            if found is not None:
                return found
    record = _locate(file_id, lake=lake)
    if key is not None:
        with _located_lock:
            if len(_located) >= _LOCATED_MAX:
                _located.clear()
            _located[key] = record
    return record


def _locate(file_id: str, *, lake: str | None) -> SourceRecord:
    from transforms.lake.catalog import connect

    con = connect(lake=lake, read_only=True)
    try:
        for view, kind in SOURCE_VIEWS:  # fixed whitelist: safe as identifiers
            cols = _view_columns(con, view)
            if not {"file_id", "source_path"} <= cols:
                continue
            extra = [c for c in ("file_size_bytes", *spec.PARTITION_COLUMNS) if c in cols]
            select = ", ".join(["source_path", *extra])
            row = con.execute(
                f"SELECT {select} FROM {view} WHERE file_id = ? LIMIT 1",  # noqa: S608
                [file_id],
            ).fetchone()
            if row is None:
                continue
            values = dict(zip(["source_path", *extra], row, strict=True))
            size = values.get("file_size_bytes")
            uri = str(values["source_path"])
            return SourceRecord(
                file_id=file_id,
                kind=kind,  # type: ignore[arg-type]
                source_path=storage.readable_source(uri, file_id=file_id),
                source_uri=uri,
                file_size_bytes=None if size is None else int(size),
                lab=values.get("lab"),
                condition=values.get("condition"),
                timepoint=values.get("timepoint"),
            )
    finally:
        con.close()
    raise LakeError(f"no published recording with file_id {file_id} in the catalog")


def forget_verified() -> None:
    """Drop this process's memory of verified files (the next read checks as a new process)."""
    with _verified_lock:
        _verified.clear()


def verify_source(record: SourceRecord, *, verify: Verify = "auto", lake: str | None = None) -> str:
    """Check that the source file still is the content ingested as ``file_id``.

    Parameters
    ----------
    record
        The catalog's record of the file.
    verify
        ``auto``: compare the size recorded at ingest (when known), then the file's
        :class:`~transforms.lake.fingerprints.Fingerprint` (size, mtime, ctime, inode,
        sampled blocks) with the one taken when it was staged or last verified; if it
        differs or none is known, the full SHA-256 before serving. ``full``: always the
        SHA-256. ``size``: the size only.
    lake
        The lake whose stored fingerprints to use.

    Returns
    -------
    str
        ``sha256`` when the content hash was checked, ``fingerprint`` when the file is
        unchanged since it was hashed, else ``size``.

    Raises
    ------
    LakeError
        The file is missing, a symbolic link, or its size or hash differs from the
        ingested one.
    """
    from transforms.lake import fingerprints
    from transforms.lake.storage import sha256 as sha256_file

    path = record.source_path
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise LakeError(f"source of {record.file_id} is gone: {path} ({exc})") from exc
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise LakeError(f"{path} is no longer a regular file (a link or other): refused")
    if record.file_size_bytes is not None and st.st_size != record.file_size_bytes:
        raise LakeError(
            f"{path} changed since ingest: {st.st_size} bytes, "
            f"{record.file_size_bytes} recorded for file_id {record.file_id}"
        )
    if verify == "size":
        return "size"
    try:
        now = fingerprints.Fingerprint.of(path, st)
    except OSError as exc:
        raise LakeError(f"source of {record.file_id} cannot be read: {path} ({exc})") from exc
    key = (str(path), record.file_id)
    with _verified_lock:
        known = _verified.get(key)
    if known is None and lake is not None:
        known = fingerprints.recall(path, file_id=record.file_id, lake=lake)
    if verify == "auto" and known == now:
        return "fingerprint"
    digest = sha256_file(path)  # changed, or never seen: the whole content
    if digest != record.file_id:
        raise LakeError(
            f"{path} changed since ingest: SHA-256 {digest} != file_id {record.file_id}"
        )
    with _verified_lock:
        _verified[key] = now
    if lake is not None and known != now:
        fingerprints.remember(path, now, file_id=record.file_id, lake=lake)
    return "sha256"


# --------------------------------------------------------------------------- reading


def _open_mea(path: Path) -> Any:
    """The recording's continuous source, through the format registry."""
    return formats.open_continuous(path)


#: Decoded patch-clamp recordings kept per process (a cell page asks for several sweeps
#: of one file in a row; an NWB file takes seconds to decode).
ICEPHYS_CACHE_SIZE: Final = 8
_icephys_cache: dict[tuple[str, int, int], Any] = {}
_icephys_lock = threading.Lock()


def _read_icephys(path: Path) -> Any:
    """The decoded recording, cached by (path, size, mtime): a changed file is re-read."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _icephys_lock:
        hit = _icephys_cache.get(key)
    if hit is not None:
        return hit
    rec = formats.read_icephys(path)
    with _icephys_lock:
        _icephys_cache[key] = rec
        while len(_icephys_cache) > ICEPHYS_CACHE_SIZE:
            _icephys_cache.pop(next(iter(_icephys_cache)))
    return rec


def _check_window(start_s: float, stop_s: float) -> tuple[float, float]:
    for name, value in (("start_s", start_s), ("stop_s", stop_s)):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise SpecError(f"{name} must be a number of seconds, got {value!r}")
    start, stop = float(start_s), float(stop_s)
    if not (math.isfinite(start) and math.isfinite(stop)) or not 0 <= start < stop:
        raise SpecError(f"bad window [{start_s}, {stop_s}] s: need 0 <= start_s < stop_s")
    if stop - start > MAX_WINDOW_S:
        raise SpecError(f"window of {stop - start:g} s exceeds the {MAX_WINDOW_S:g} s limit")
    return start, stop


def _names(value: str | Sequence[str] | None, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = (value,) if isinstance(value, str) else tuple(value)
    if not items or not all(isinstance(v, str) and v for v in items):
        raise SpecError(f"{what} must be a name or a non-empty list of names, got {value!r}")
    return items


def _mea_snippet(
    record: SourceRecord,
    *,
    wells: tuple[str, ...] | None,
    electrodes: tuple[str, ...] | None,
    start_s: float,
    stop_s: float,
    verification: str,
) -> Snippet:
    with _open_mea(record.source_path) as source:
        duration_s = float(source.n_samples) / float(source.sampling_rate_hz)
        if start_s >= duration_s:
            raise SpecError(
                f"window starts at {start_s:g} s, after the end of the {duration_s:g} s recording"
            )
        cols = source.columns(electrodes=electrodes, wells=wells)
        fs = float(source.sampling_rate_hz)
        n_values = round((min(stop_s, duration_s) - start_s) * fs) * len(cols)
        if n_values > MAX_VALUES:
            raise SpecError(
                f"window of {len(cols)} channels x {min(stop_s, duration_s) - start_s:g} s is "
                f"{n_values} samples, over the {MAX_VALUES} limit: pick wells or a shorter window"
            )
        data = source.read(start_s, min(stop_s, duration_s), electrodes=electrodes, wells=wells)
        names = tuple(source.electrodes[int(c)] for c in cols)
    return Snippet(
        file_id=record.file_id,
        kind="mea",
        source_path=record.source_path,
        data=data,
        channels=names,
        unit="uV",
        sampling_rate_hz=fs,
        start_s=round(start_s * fs) / fs,
        verification=verification,
        window=(start_s, min(stop_s, duration_s)),
        wells=wells,
        electrodes=electrodes,
    )


def _icephys_snippet(
    record: SourceRecord, *, sweep: int | None, start_s: float, stop_s: float, verification: str
) -> Snippet:
    rec = _read_icephys(record.source_path)
    numbers = [s.number for s in rec.sweeps]
    if sweep is None:
        if len(numbers) != 1:
            raise SpecError(
                f"{record.source_path.name} has {len(numbers)} sweeps: pass sweep= (one of "
                f"{numbers[0]}..{numbers[-1]})"
            )
        sweep = numbers[0]
    if isinstance(sweep, bool) or not isinstance(sweep, int | np.integer):
        raise SpecError(f"sweep must be an integer, got {sweep!r}")
    chosen = next((s for s in rec.sweeps if s.number == int(sweep)), None)
    if chosen is None:
        raise SpecError(f"{record.source_path.name} has no sweep {sweep}; sweeps: {numbers}")
    fs = chosen.sampling_rate_hz
    if start_s >= chosen.duration_s:
        raise SpecError(
            f"window starts at {start_s:g} s, after the end of the {chosen.duration_s:g} s sweep"
        )
    k0 = round(start_s * fs)
    k1 = min(chosen.n_samples, round(stop_s * fs))
    data = chosen.response[k0:k1].astype(np.float32)[:, None]
    command = None if chosen.command is None else chosen.command[k0:k1].astype(np.float32)
    return Snippet(
        file_id=record.file_id,
        kind="icephys",
        source_path=record.source_path,
        data=data,
        channels=(rec.channel_names[0] if rec.channel_names else "response",),
        unit=chosen.response_unit,
        sampling_rate_hz=float(fs),
        start_s=k0 / fs,
        sweep=int(sweep),
        command=command,
        command_unit=chosen.command_unit if command is not None else None,
        verification=verification,
        window=(start_s, min(stop_s, chosen.duration_s)),
    )


def _archive_of(record: SourceRecord, *, lake: str | None) -> Path | None:
    """The lake's complete raw archive of an MEA recording, if it has one."""
    if record.kind != "mea":
        return None
    from transforms.serve.archive import archived_source

    return archived_source(record.file_id, lake=lake)


def fetch_snippet(
    file_id: str,
    *,
    lake: str | None = None,
    well: str | Sequence[str] | None = None,
    electrodes: str | Sequence[str] | None = None,
    sweep: int | None = None,
    start_s: float,
    stop_s: float,
    verify: Verify = "auto",
) -> Snippet:
    """Read a time window of a published recording, located by its ``file_id``.

    Parameters
    ----------
    file_id
        SHA-256 of the recording (as in every table of the lake).
    lake
        Lake root (default ``$NEUROCYTE_LAKE`` / ``./lake``).
    well, electrodes
        MEA channel selection: one or more wells (``B2``) and/or electrodes
        (``B2_11``); neither means every electrode of the plate.
    sweep
        Patch-clamp sweep number (required when the file has several sweeps).
    start_s, stop_s
        The window in seconds: from the recording start (MEA) or from the sweep
        start (patch clamp); clamped to the recording's end.
    verify
        How to check the source file against ``file_id`` (see :func:`verify_source`).

    Returns
    -------
    Snippet
        The samples and their description; ``.save(path)`` writes ``.npy`` / ``.nwb``.

    Raises
    ------
    SpecError
        Bad ``file_id``, window, channel names or sweep, or a selection that does
        not fit the kind of recording.
    LakeError
        Unknown ``file_id``, or a source file that is missing or changed since ingest.
    UnsupportedRecording
        The source holds no continuous samples (e.g. an MEA spike file).
    """
    start, stop = _check_window(start_s, stop_s)
    wells = _names(well, "well")
    chosen = _names(electrodes, "electrodes")
    if verify not in ("auto", "full", "size"):
        raise SpecError(f"verify must be 'auto', 'full' or 'size', got {verify!r}")
    record = locate(file_id, lake=lake)
    if record.kind == "mea" and sweep is not None:
        raise SpecError(f"{record.source_path.name} is an MEA recording: it has no sweeps")
    if record.kind == "icephys" and (wells or chosen):
        raise SpecError(f"{record.source_path.name} is a patch-clamp recording: no wells")
    try:
        verification = verify_source(record, verify=verify, lake=lake)
    except LakeError:
        archived = _archive_of(record, lake=lake)
        if archived is None:
            raise
        # The original is gone or changed: the lake's verified archive of the content.
        record = dataclasses.replace(record, source_path=archived)
        verification = "archive"
    if record.kind == "mea":
        return _mea_snippet(
            record,
            wells=wells,
            electrodes=chosen,
            start_s=start,
            stop_s=stop,
            verification=verification,
        )
    return _icephys_snippet(
        record, sweep=sweep, start_s=start, stop_s=stop, verification=verification
    )


def envelope(y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Min/max decimation of a trace for display: sample indices and values.

    Splits ``y`` into at most ``max_points // 2`` equal bins and keeps each bin's
    minimum and maximum in time order, so spikes survive decimation.

    Parameters
    ----------
    y
        1-D samples.
    max_points
        Upper bound on the points returned (at least 2).

    Returns
    -------
    tuple of numpy.ndarray
        Indices into ``y`` and the values at them.
    """
    if max_points < 2:
        raise SpecError(f"max_points must be >= 2, got {max_points}")
    n = int(y.shape[0])
    if n <= max_points:
        idx = np.arange(n)
        return idx, y[idx]
    # Equal bins of ``width`` samples (the last padded with its own final sample, which
    # never wins: argmin/argmax return the first occurrence), reduced in one pass.
    width = -(-n // (max_points // 2))
    n_bins = -(-n // width)
    padded = np.empty(n_bins * width, dtype=y.dtype)
    padded[:n] = y
    padded[n:] = y[-1]
    bins = padded.reshape(n_bins, width)
    starts = np.arange(n_bins, dtype=np.int64) * width
    idx_lo = starts + np.argmin(bins, axis=1)
    idx_hi = starts + np.argmax(bins, axis=1)
    first = np.minimum(idx_lo, idx_hi)
    second = np.maximum(idx_lo, idx_hi)
    idx = np.stack([first, second], axis=1).ravel()
    return idx, y[idx]
