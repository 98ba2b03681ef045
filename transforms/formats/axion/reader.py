"""Axion AxIS container files: continuous ``.raw`` and spike ``.spk``, read and written.

The layout follows ``shared/docs/axion-file-format.md`` (the project's reference; section
numbers below refer to it). A file is a 1024-byte primary header with 123 entry slots
(``type << 56 | length``), optionally chained 1024-byte sub-headers, and entries stored
back to back from ``EntriesStart``: a ChannelArray (plate type + electrode wiring), a
CombinedBlockVectorHeader (sampling rate, volts per count, start time, data region) and
the data region itself, plus Tags (plate map, key-value metadata, annotations) and the
legacy NotesArray.

Reading never loads the data region: :meth:`AxionFile.read` and
:meth:`AxionFile.iter_chunks` memory-map just the frames asked for, so a 5 GB plate is
read window by window. Writing streams too: :func:`write_axion_raw` takes an iterable of
``(samples, channels)`` chunks and patches the header (lengths, CRCs) when done.

Units: samples are returned in µV (float32), times in seconds from the recording start
(the data set's ``BlockVectorStartTime``). The stored volts-per-count factor is signed
(real Maestro files have a negative one) and the sign is kept.
"""

from __future__ import annotations

import datetime as dt
import math
import mmap
import os
import re
import struct
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa

from transforms.errors import DecodeError, InvalidArgument, UnsupportedRecording
from transforms.formats.axion._format import (
    COMBINED_FIXED,
    DATA_CONTINUOUS,
    DATA_RAW_V1,
    DATA_SPIKES,
    E_BV_DATA,
    E_BV_HEADER,
    E_BV_HEADER_EXT,
    E_CHANNEL_ARRAY,
    E_COMBINED,
    E_NOTES,
    E_TAG,
    E_TERMINATE,
    FLAG_BAD_TAG,
    FLAG_CRC_MISMATCH,
    FLAG_EXTRA_DATA_SETS,
    FLAG_PARTIAL_FRAME,
    FLAG_RATE_FROM_SETTINGS,
    FLAG_TRUNCATED,
    FLAG_UNKNOWN_ENTRY,
    FLAG_UNSUPPORTED_SET,
    HEAD,
    HEADER_SIZE,
    KNOWN_ENTRIES,
    KNOWN_TAG_TYPES,
    LENGTH_MASK,
    MAGIC,
    MAX_CHANNELS,
    MAX_PARSED_ENTRY,
    MAX_RATE_HZ,
    NOTE_RECORD_SIZE,
    NOTES_LENGTH,
    PRIMARY_SLOTS,
    RAW_SET_NAMES,
    READ_TO_END,
    SAMPLE_DTYPES,
    SPIKE_HEADER_SIZE,
    SUB_SLOTS,
    TAG_HEAD,
    TAG_KEY_VALUE,
    TAG_SYSTEM_ANNOTATION,
    TAG_USER_ANNOTATION,
    TAG_WELL_TREATMENT,
    Annotation,
    ChannelMapping,
    Cursor,
    DataSet,
    Note,
    WellTreatment,
    clean_text,
    crc32,
    read_datetime,
)
from transforms.formats.axis_settings import header_metadata, parse_settings_text
from transforms.recording.continuous import (
    Chunk,
    ContinuousBase,
    counts_to_uv,
    fill,
    rows_of,
)
from transforms.recording.plate import PLATE_TYPES, PlateLayout, parse_well

# --------------------------------------------------------------------------- the reader


@dataclass
class _LegacySet:
    """A legacy BlockVectorHeader (0x03) and what attaches to it (sections 6.1-6.2)."""

    sampling_rate_hz: float
    voltage_scale_v: float
    start_time: dt.datetime | None
    experiment_start: dt.datetime | None
    first_block: int
    channels_per_block: int
    samples_per_block: int
    block_header_size: int
    where: str
    mappings: list[ChannelMapping] | None = None
    data_type: int = DATA_RAW_V1  # without an extension (section 6.2)
    name: str = ""
    description: str = ""


def _section_length_s(text: str) -> float | None:
    """Length of an AxIS ``A to B`` file section (``0s to 10m0s``), or None."""
    parts = re.split(r"\s+to\s+", text.strip())
    if len(parts) != 2:
        return None
    try:
        a, b = (_duration_s(p) for p in parts)
    except ValueError:
        return None
    return b - a if b >= a else None


def _duration_s(text: str) -> float:
    compact = text.replace(" ", "")
    parts = re.findall(r"(\d+(?:\.\d*)?)(h|ms|m|s)", compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(text)
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3}
    return sum(float(n) * scale[u] for n, u in parts)


#: Pre-fault a mapped window in one call where the OS offers it (Linux).
_MAP_POPULATE: Final = getattr(mmap, "MAP_POPULATE", 0)


class AxionFile(ContinuousBase):
    """An opened AxIS ``.raw`` or ``.spk`` file (header parsed, data left on disk).

    Attributes
    ----------
    path
        The file.
    kind
        ``"raw"`` (continuous voltage) or ``"spk"`` (spike records).
    layout
        The plate layout from the ChannelArray's plate type.
    sampling_rate_hz, voltage_scale_uv_per_count
        From the data set header (the scale is signed).
    n_samples, duration_s
        Frames in the data region (``.raw``) / declared duration (``.spk``).
    electrodes
        Electrode names (``A1_23``) in data-column order (``.raw``) or the
        electrodes the spike set covers (``.spk``).
    recorded_at, experiment_started_at
        ``BlockVectorStartTime`` / ``ExperimentStartTime`` (naive local time).
    metadata
        Key-value tags (``RecordingName``, ``Investigator``, ...), or the legacy note.
    plate_map, annotations, notes
        WellTreatment tags, annotation tags, legacy notes.
    flags
        Tolerated problems (unknown entries skipped, truncation accepted, ...).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        strict_crc: bool = True,
        allow_truncated: bool = False,
    ) -> None:
        self.path = Path(path)
        self.source_name = self.path.name
        self._strict_crc = strict_crc
        self._allow_truncated = allow_truncated
        self._flags: list[str] = []
        self.notes: tuple[Note, ...] = ()
        self.metadata: dict[str, str] = {}
        self.plate_map: tuple[WellTreatment, ...] = ()
        self.annotations: tuple[Annotation, ...] = ()
        #: The AxIS settings text of a legacy header extension, as (key, value) pairs.
        self.settings_pairs: list[tuple[str, str]] = []
        #: Typed values of those settings (see ``axis_settings.header_metadata``).
        self.header_metadata: dict[str, Any] = {}
        self._parse()

    # -- parsing ------------------------------------------------------------------

    def _fail(self, what: str) -> DecodeError:
        return DecodeError(f"{self.path.name}: {what}")

    def _flag(self, flag: str) -> None:
        if flag not in self._flags:
            self._flags.append(flag)

    def _check_crc(self, data: bytes, stored: int, what: str) -> None:
        if crc32(data) != stored:
            if self._strict_crc:
                raise self._fail(f"{what} CRC mismatch (stored {stored:#010x})")
            self._flag(FLAG_CRC_MISMATCH)

    def _parse(self) -> None:
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise DecodeError(f"{self.path}: cannot open ({exc.strerror})") from exc
        self.file_size = size
        with self.path.open("rb") as f:
            head = f.read(HEADER_SIZE)
            if len(head) < 8 or head[:8] != MAGIC:
                if head[:1] == b"\x40":
                    raise UnsupportedRecording(
                        f"{self.path.name}: looks like a legacy 0.0 'beta' AxIS file; not supported"
                    )
                raise self._fail("not an AxIS file (magic 'AxionBio' missing)")
            if len(head) < HEADER_SIZE:
                raise self._fail(f"truncated header ({len(head)} of {HEADER_SIZE} bytes)")
            _, _ptype, major, _minor, _notes_start, notes_len, entries_start = HEAD.unpack_from(
                head
            )
            if major == 0:
                raise UnsupportedRecording(
                    f"{self.path.name}: legacy AxIS header version 0.x is not supported"
                )
            if major != 1:
                raise self._fail(f"unknown header version {major} (expected 1)")
            if notes_len != NOTES_LENGTH:
                raise self._fail(f"NotesLength is {notes_len}, expected {NOTES_LENGTH}")
            (stored_crc,) = struct.unpack_from("<I", head, 1018)
            self._check_crc(head[:1018], stored_crc, "primary header")
            if not HEADER_SIZE <= entries_start <= size:
                raise self._fail(f"EntriesStart {entries_start} outside the file ({size} bytes)")
            slots = struct.unpack_from(f"<{PRIMARY_SLOTS}Q", head, 34)
            self._walk(f, entries_start, slots, size)

    def _walk(self, f, pos: int, slots: Sequence[int], size: int) -> None:  # type: ignore[no-untyped-def]
        mappings: list[ChannelMapping] | None = None
        plate_type: int | None = None
        data_sets: list[tuple[DataSet, list[ChannelMapping]]] = []
        tags: list[tuple[int, dt.datetime | None, str, int, bytes, int]] = []
        notes: list[Note] = []
        legacy: list[_LegacySet] = []
        data_entries: dict[int, int] = {}
        entry_no = 0
        while True:
            terminated = False
            for slot in slots:
                etype, length = slot >> 56, slot & LENGTH_MASK
                if etype == E_TERMINATE:
                    terminated = True
                    break
                last = length == READ_TO_END
                if last:
                    length = size - pos
                where = f"entry {entry_no} (type {etype:#04x}) at offset {pos}"
                if pos + length > size and etype != E_BV_DATA:
                    raise self._fail(f"{where} declares {length} bytes, past the end of the file")
                if etype in (
                    E_NOTES,
                    E_CHANNEL_ARRAY,
                    E_COMBINED,
                    E_TAG,
                    E_BV_HEADER,
                    E_BV_HEADER_EXT,
                ):
                    if length > MAX_PARSED_ENTRY:
                        raise self._fail(f"{where}: absurd length {length}")
                    f.seek(pos)
                    data = f.read(length)
                    cur = Cursor(data, f"{self.path.name}: {where}")
                    if etype == E_CHANNEL_ARRAY:
                        plate_type, mappings = self._parse_channel_array(cur)
                        if legacy and legacy[-1].mappings is None:
                            legacy[-1].mappings = mappings  # section 5.2: attached to the set
                    elif etype == E_BV_HEADER:
                        legacy.append(self._parse_legacy_header(cur))
                    elif etype == E_BV_HEADER_EXT:
                        if not legacy:
                            raise self._fail(f"{where}: header extension before any data set")
                        self._parse_legacy_extension(cur, legacy[-1])
                    elif etype == E_COMBINED:
                        if mappings is None:
                            raise self._fail(f"{where}: data set header before any ChannelArray")
                        ds = self._parse_combined(cur)
                        if ds is not None:
                            data_sets.append((ds, mappings))
                    elif etype == E_TAG:
                        tag = self._parse_tag_head(cur, pos)
                        if tag is not None:
                            tags.append(tag)
                    else:
                        notes.extend(self._parse_notes(cur))
                elif etype == E_BV_DATA:
                    data_entries[pos] = length
                elif etype not in KNOWN_ENTRIES:
                    self._flag(FLAG_UNKNOWN_ENTRY)  # section 3: unknown ids are skipped
                pos += length
                entry_no += 1
                if last:
                    terminated = True
                    break
            if terminated:
                break
            # All slots used: a sub-header follows the last entry's bytes (section 2).
            f.seek(pos)
            sub = f.read(HEADER_SIZE)
            if len(sub) < HEADER_SIZE or sub[:8] != MAGIC:
                raise self._fail(f"sub-header expected at offset {pos} but not found")
            (crc,) = struct.unpack_from("<I", sub, 1016)
            self._check_crc(sub[:1016], crc, f"sub-header at offset {pos}")
            slots = struct.unpack_from(f"<{SUB_SLOTS}Q", sub, 8)
            pos += HEADER_SIZE
        for ls in legacy:
            ds = self._legacy_data_set(ls, data_entries, mappings)
            if ds is not None:
                data_sets.append((ds, ls.mappings or mappings or []))
        self._finish(plate_type, data_sets, tags, notes)

    def _parse_legacy_header(self, cur: Cursor) -> _LegacySet:
        if len(cur.data) != 64:
            raise DecodeError(
                f"{cur.where}: BlockVectorHeader must be 64 bytes, has {len(cur.data)}"
            )
        fs, vscale = cur.unpack("<dd")
        start, experiment = read_datetime(cur.take(14)), read_datetime(cur.take(14))
        first_block, nch, nsamp, bhs = cur.unpack("<qIII")
        return _LegacySet(fs, vscale, start, experiment, first_block, nch, nsamp, bhs, cur.where)

    def _parse_legacy_extension(self, cur: Cursor, ls: _LegacySet) -> None:
        _vmaj, _vmin, data_type = cur.unpack("<HHH")
        cur.take(28)  # Added, Modified (section 6.2)
        ls.data_type = int(data_type)
        ls.name = clean_text(cur.take(50))
        ls.description = cur.data[cur.pos :].decode("utf-8", errors="replace").rstrip("\x00")

    def _legacy_data_set(
        self,
        ls: _LegacySet,
        data_entries: dict[int, int],
        mappings: list[ChannelMapping] | None,
    ) -> DataSet | None:
        """A legacy (0x03 [+ 0x05]) data set in the modern form (section 6.1-6.2)."""
        maps = ls.mappings or mappings
        if maps is None:
            raise self._fail(f"{ls.where}: legacy data set without a ChannelArray")
        if ls.first_block not in data_entries:
            raise self._fail(
                f"{ls.where}: FirstBlock {ls.first_block} is not the start of a data entry"
            )
        settings = parse_settings_text(ls.description) if ls.description else []
        meta = header_metadata(settings) if settings else {}
        fs = ls.sampling_rate_hz
        if not math.isfinite(fs):
            fs = meta.get("sampling_rate_hz") or math.nan  # the extension's own text
            self._flag(FLAG_RATE_FROM_SETTINGS)
        if not (math.isfinite(fs) and 0 < fs <= MAX_RATE_HZ):
            raise self._fail(f"{ls.where}: absurd sampling rate {ls.sampling_rate_hz} Hz")
        if not (math.isfinite(ls.voltage_scale_v) and 0 < abs(ls.voltage_scale_v) < 1.0):
            raise self._fail(f"{ls.where}: absurd voltage scale {ls.voltage_scale_v} V/count")
        if ls.data_type == DATA_RAW_V1:
            data_type = DATA_CONTINUOUS
        elif ls.data_type == DATA_SPIKES:
            data_type = DATA_SPIKES
        else:
            self._flag(FLAG_UNSUPPORTED_SET)
            return None
        duration = None
        section = meta.get("analysed_section")
        if section and data_type == DATA_SPIKES:
            duration = _section_length_s(section)
        self.settings_pairs = settings
        self.header_metadata = meta
        return DataSet(
            data_type=data_type,
            sample_type=0,
            sampling_rate_hz=fs,
            voltage_scale_v=ls.voltage_scale_v,
            channels_per_block=ls.channels_per_block,
            sets_per_block=1,
            samples_per_block=ls.samples_per_block,
            block_header_size=ls.block_header_size,
            start_time=ls.start_time,
            experiment_start=ls.experiment_start,
            duration_s=duration,
            name="Voltage" if data_type == DATA_CONTINUOUS else ls.name,
            region_start=ls.first_block,
            region_length=data_entries[ls.first_block],
            channel_ids=tuple(m.channel_id for m in maps),
            set_names=("Raw",) if data_type == DATA_CONTINUOUS else (ls.name,),
        )

    def _parse_channel_array(self, cur: Cursor) -> tuple[int, list[ChannelMapping]]:
        plate_type, n = cur.unpack("<II")
        if n > MAX_CHANNELS:
            raise DecodeError(f"{cur.where}: absurd channel count {n}")
        if cur.remaining != 8 * n:
            raise DecodeError(
                f"{cur.where}: ChannelArray of {n} channels must be {8 + 8 * n} bytes, "
                f"entry has {len(cur.data)}"
            )
        raw = np.frombuffer(cur.take(8 * n), dtype=np.uint8).reshape(n, 8)
        maps = [ChannelMapping(*(int(v) for v in row[:6])) for row in raw]
        if any(m.well_col < 1 or m.well_row < 1 or m.el_col < 1 or m.el_row < 1 for m in maps):
            raise DecodeError(f"{cur.where}: ChannelArray holds a zero well/electrode coordinate")
        if len({(m.well_col, m.well_row, m.el_col, m.el_row) for m in maps}) != n:
            raise DecodeError(f"{cur.where}: ChannelArray lists an electrode twice")
        if len({m.channel_id for m in maps}) != n:
            raise DecodeError(f"{cur.where}: ChannelArray lists an amplifier channel twice")
        return int(plate_type), maps

    def _parse_combined(self, cur: Cursor) -> DataSet | None:
        fixed = cur.unpack(COMBINED_FIXED.format)
        vmaj, vmin, dtype_code, sample_type, fs, vscale, nch, nsets, nsamp, _vhs, bhs = fixed
        if vmaj < 1:
            raise DecodeError(f"{cur.where}: combined header version {vmaj}.{vmin}")
        times = [read_datetime(cur.take(14)) for _ in range(4)]
        duration: float | None = None
        if vmaj > 1 or vmin >= 1:
            (duration,) = cur.unpack("<d")
        name = cur.lpstring()
        _desc = cur.lpstring()
        region_start, region_length = cur.unpack("<qq")
        body_end = cur.pos
        (crc,) = cur.unpack("<I")
        self._check_crc(cur.data[:body_end], crc, f"{cur.where}: combined header")
        ext_start = cur.pos
        if dtype_code == DATA_CONTINUOUS:
            if not 0 < nch <= MAX_CHANNELS or not 0 < nsets <= 16:
                raise DecodeError(f"{cur.where}: absurd channel/set counts {nch}, {nsets}")
            ids = cur.unpack(f"<{nch}H")
            names = tuple(cur.lpstring() for _ in range(nsets))
        elif dtype_code == DATA_SPIKES:
            (k,) = cur.unpack("<I")
            if k > MAX_CHANNELS:
                raise DecodeError(f"{cur.where}: absurd spike channel count {k}")
            ids = cur.unpack(f"<{k}H")
            names = (cur.lpstring(),)
        else:
            self._flag(FLAG_UNSUPPORTED_SET)  # section 11: skip by length, ignore the set
            return None
        ext_end = cur.pos
        (ext_crc,) = cur.unpack("<I")
        self._check_crc(cur.data[ext_start:ext_end], ext_crc, f"{cur.where}: header extension")
        if sample_type not in SAMPLE_DTYPES:
            raise DecodeError(f"{cur.where}: unknown sample type {sample_type}")
        if not (math.isfinite(fs) and 0 < fs <= MAX_RATE_HZ):
            raise DecodeError(f"{cur.where}: absurd sampling rate {fs} Hz")
        if not (math.isfinite(vscale) and 0 < abs(vscale) < 1.0):
            raise DecodeError(f"{cur.where}: absurd voltage scale {vscale} V/count")
        if region_start < 0 or region_length < 0:
            raise DecodeError(f"{cur.where}: negative data region {region_start}+{region_length}")
        if duration is not None and not (math.isfinite(duration) and duration >= 0):
            raise DecodeError(f"{cur.where}: absurd duration {duration} s")
        return DataSet(
            data_type=dtype_code,
            sample_type=sample_type,
            sampling_rate_hz=fs,
            voltage_scale_v=vscale,
            channels_per_block=nch,
            sets_per_block=nsets,
            samples_per_block=nsamp,
            block_header_size=bhs,
            start_time=times[0],
            experiment_start=times[1],
            duration_s=duration,
            name=name,
            region_start=region_start,
            region_length=region_length,
            channel_ids=tuple(int(i) for i in ids),
            set_names=names,
        )

    def _parse_tag_head(
        self, cur: Cursor, pos: int
    ) -> tuple[int, dt.datetime | None, str, int, bytes, int] | None:
        if cur.remaining < TAG_HEAD.size:
            raise DecodeError(f"{cur.where}: tag entry shorter than its 36-byte head")
        ttype, created, guid, revision = cur.unpack(TAG_HEAD.format)
        return (
            int(ttype),
            read_datetime(created),
            str(uuid.UUID(bytes_le=guid)),
            int(revision),
            cur.take(cur.remaining),
            pos,
        )

    def _parse_notes(self, cur: Cursor) -> list[Note]:
        if len(cur.data) % NOTE_RECORD_SIZE:
            raise DecodeError(f"{cur.where}: NotesArray length is not a multiple of 618")
        out = []
        while cur.remaining:
            inv, name, desc = (clean_text(cur.take(n)) for n in (50, 50, 500))
            (rev,) = cur.unpack("<I")
            out.append(Note(inv, name, desc, int(rev), read_datetime(cur.take(14))))
        return sorted(out, key=lambda n: n.revision)

    def _interpret_tags(
        self, tags: list[tuple[int, dt.datetime | None, str, int, bytes, int]]
    ) -> None:
        heads: dict[str, tuple[int, dt.datetime | None, str, int, bytes, int]] = {}
        for tag in tags:  # section 9.2: the highest revision of each GUID wins
            if tag[2] not in heads or tag[3] >= heads[tag[2]][3]:
                heads[tag[2]] = tag
        plate: list[WellTreatment] = []
        notes: list[Annotation] = []
        meta: dict[str, str] = {}
        for guid in sorted(heads):
            ttype, _, _, _, payload, pos = heads[guid]
            cur = Cursor(payload, f"{self.path.name}: tag at offset {pos}")
            try:
                if ttype == TAG_WELL_TREATMENT:
                    plate.append(_parse_well_treatment(cur))
                elif ttype in (TAG_USER_ANNOTATION, TAG_SYSTEM_ANNOTATION):
                    fs, sample, _dur = cur.unpack("<dqq")
                    cur.take(4)
                    if math.isnan(fs):  # no rate of its own: the data set's
                        fs = self._ds.sampling_rate_hz
                    if not (math.isfinite(fs) and fs > 0):
                        raise DecodeError(f"{cur.where}: annotation sampling rate {fs}")
                    notes.append(
                        Annotation(sample / fs, cur.lpstring(), ttype == TAG_SYSTEM_ANNOTATION)
                    )
                elif ttype == TAG_KEY_VALUE:
                    key = cur.lpstring()
                    meta[key] = cur.lpstring()
                elif ttype not in KNOWN_TAG_TYPES:
                    self._flag(FLAG_BAD_TAG)  # rule 4: unknown tag types read as Deleted
            except DecodeError:
                self._flag(FLAG_BAD_TAG)  # rule 5: an unparsable head means a deleted tag
        self.plate_map = tuple(sorted(plate, key=lambda w: parse_well(w.well)))
        self.annotations = tuple(sorted(notes, key=lambda a: a.time_s))
        self.metadata = meta

    def _finish(
        self,
        plate_type: int | None,
        data_sets: list[tuple[DataSet, list[ChannelMapping]]],
        tags: list[tuple[int, dt.datetime | None, str, int, bytes, int]],
        notes: list[Note],
    ) -> None:
        if plate_type is None:
            raise self._fail("no ChannelArray entry")
        layout = PLATE_TYPES.get(plate_type)
        if layout is None:
            raise UnsupportedRecording(f"{self.path.name}: unknown plate type {plate_type:#x}")
        self.layout: PlateLayout = layout
        self.plate_type = plate_type
        chosen = [
            (ds, maps)
            for ds, maps in data_sets
            if (
                ds.data_type == DATA_CONTINUOUS
                and ds.name == "Voltage"
                and len(ds.set_names) == 1
                and ds.set_names[0].lower() in RAW_SET_NAMES
            )
            or (ds.data_type == DATA_SPIKES and ds.set_names[0] in ("Spikes", ""))
        ]
        if not chosen:
            raise UnsupportedRecording(f"{self.path.name}: no voltage or spike data set")
        if len(chosen) > 1:
            self._flag(FLAG_EXTRA_DATA_SETS)
        ds, maps = chosen[0]
        self._ds = ds
        by_id = {m.channel_id: m for m in maps}
        missing = [i for i in ds.channel_ids if i not in by_id]
        if missing:
            raise self._fail(f"data set lists channel id {missing[0]:#06x} absent from the array")
        cols = [by_id[i] for i in ds.channel_ids]
        for m in cols:
            if (
                (m.el_col, m.el_row) not in layout.electrode_positions
                or m.well_row > (layout.well_rows)
                or m.well_col > layout.well_cols
            ):
                raise self._fail(f"electrode {m.name} does not exist on a {layout.name} plate")
        self.electrodes: tuple[str, ...] = tuple(m.name for m in cols)
        self._channel_names = {m.channel_id: m.name for m in maps}
        on_array = {m.name.split("_", 1)[0] for m in maps}
        #: Wells the ChannelArray wires (AxIS records only the wells "on" in its map).
        self.channel_wells: tuple[str, ...] = tuple(w for w in layout.wells if w in on_array)
        self.sampling_rate_hz = ds.sampling_rate_hz
        self.voltage_scale_uv_per_count = ds.voltage_scale_v * 1e6
        self.recorded_at = ds.start_time
        self.experiment_started_at = ds.experiment_start
        self._dtype = SAMPLE_DTYPES[ds.sample_type]
        available = max(0, min(ds.region_length, self.file_size - ds.region_start))
        if available < ds.region_length:
            if not self._allow_truncated:
                raise self._fail(
                    f"data region declares {ds.region_length} bytes from offset "
                    f"{ds.region_start} but only {available} are in the file (truncated)"
                )
            self._flag(FLAG_TRUNCATED)
        if ds.data_type == DATA_CONTINUOUS:
            self.kind = "raw"
            if ds.samples_per_block != 1 or ds.block_header_size != 0 or ds.sets_per_block != 1:
                raise UnsupportedRecording(
                    f"{self.path.name}: continuous blocks with {ds.samples_per_block} samples, "
                    f"{ds.sets_per_block} sets and a {ds.block_header_size}-byte header"
                )
            self._frame_bytes = ds.channels_per_block * self._dtype.itemsize
            if available % self._frame_bytes:
                self._flag(FLAG_PARTIAL_FRAME)
            self.n_samples = available // self._frame_bytes
            self.duration_s = self.n_samples / ds.sampling_rate_hz
            self.declared_duration_s: float | None = self.duration_s
            self.n_spikes = 0
        else:
            self.kind = "spk"
            if ds.sample_type != 0 or ds.channels_per_block != 1 or ds.sets_per_block != 1:
                raise self._fail("spike set must hold one int16 channel per block")
            if ds.block_header_size < SPIKE_HEADER_SIZE or ds.samples_per_block < 1:
                raise self._fail(
                    f"spike records with a {ds.block_header_size}-byte header and "
                    f"{ds.samples_per_block} samples"
                )
            self._frame_bytes = ds.block_header_size + 2 * ds.samples_per_block
            if ds.region_length % self._frame_bytes:
                raise self._fail(
                    f"spike region of {ds.region_length} bytes is not a whole number of "
                    f"{self._frame_bytes}-byte records"
                )
            self.n_spikes = available // self._frame_bytes
            self.waveform_samples = ds.samples_per_block
            #: The stored duration; None when the file states none (a legacy set
            #: whose settings name no section).
            self.declared_duration_s = ds.duration_s
            self.duration_s = ds.duration_s if ds.duration_s is not None else 0.0
            self.n_samples = round(self.duration_s * ds.sampling_rate_hz)
        self.notes = tuple(notes)
        self._interpret_tags(tags)
        if not self.metadata and self.notes:  # section 4: notes only without key-value tags
            last = self.notes[-1]
            self.metadata = {
                "RecordingName": last.recording_name,
                "Investigator": last.investigator,
                "Description": last.description,
            }

    # -- access -------------------------------------------------------------------

    def plate_metadata(self) -> dict[str, Any]:
        """Header metadata in the form of a spike list's (``header_metadata``).

        The settings text of a legacy extension wins (it holds the recording's own
        times; the data-set header of a batch-processed ``.spk`` holds the time of
        the re-detection); the data-set header fills what it leaves empty. Key-value
        tags go under ``tags``.
        """
        meta: dict[str, Any] = dict(self.header_metadata)
        note = self.notes[-1] if self.notes else None
        defaults = {
            "recorded_at": self.recorded_at,
            "experiment_started_at": self.experiment_started_at,
            "sampling_rate_hz": self.sampling_rate_hz,
            "voltage_scale_uv_per_count": self.voltage_scale_uv_per_count,
            "plate_type_text": self.layout.name,
            "recording_name": self.metadata.get("RecordingName")
            or (note.recording_name if note else None),
            "investigator": self.metadata.get("Investigator")
            or (note.investigator if note else None),
            "description": self.metadata.get("Description") or (note.description if note else None),
        }
        for key, value in defaults.items():
            if meta.get(key) is None:
                meta[key] = value
        if self.metadata:
            meta["tags"] = dict(sorted(self.metadata.items()))
        if self.header_metadata:
            # the data set's own times, kept beside the settings' ones
            meta["data_set_started_at"] = self.recorded_at
        return meta

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(self._flags)

    def __enter__(self) -> AxionFile:
        return self

    def __exit__(self, *exc: object) -> None:
        return None  # nothing stays open: every read maps and unmaps its own window

    def __repr__(self) -> str:
        return (
            f"AxionFile({self.path.name!r}, kind={self.kind}, layout={self.layout.name!r}, "
            f"channels={len(self.electrodes)}, duration_s={self.duration_s:.3f})"
        )

    def columns(
        self, *, electrodes: Sequence[str] | None = None, wells: Sequence[str] | None = None
    ) -> np.ndarray:
        """Data-column indices for an electrode and/or well selection (all if neither).

        Raises
        ------
        SpecError
            If a name is malformed or the file holds no such electrode / well.
        """
        if self.kind != "raw":
            raise InvalidArgument(f"{self.path.name}: a spike file has no data columns")
        return super().columns(electrodes=electrodes, wells=wells)

    def _check_raw(self) -> None:
        if self.kind != "raw":
            raise InvalidArgument(f"{self.path.name} holds spikes, not continuous data")

    def read_counts(
        self,
        start_sample: int,
        stop_sample: int,
        *,
        columns: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Stored counts of frames ``[start_sample, stop_sample)``, (samples, channels).

        ``out``, when given, receives the counts (its first rows; it must be C-contiguous
        with the stored dtype and one column per selected channel) and a view of it is
        returned: a streaming caller reuses its buffers instead of allocating a chunk per
        step.
        """
        self._check_raw()
        start = max(0, int(start_sample))
        stop = min(self.n_samples, int(stop_sample))
        n_cols = len(self.electrodes)
        width = n_cols if columns is None else len(columns)
        if stop <= start:
            return rows_of(out, 0, width, self._dtype)
        offset = self._ds.region_start + start * self._frame_bytes
        if width == n_cols and (columns is None or np.array_equal(columns, np.arange(n_cols))):
            # Whole frames: read straight into the destination, no mapping at all.
            dest = rows_of(out, stop - start, n_cols, self._dtype)
            self._pread_into(dest, offset)
            return dest
        # Map only this window: RSS stays bounded whatever the file size.
        mm = np.memmap(
            self.path, dtype=self._dtype, mode="r", offset=offset, shape=(stop - start, n_cols)
        )
        try:
            cols = np.asarray(columns)
            if len(cols) and np.all(np.diff(cols) == 1):
                picked = mm[:, int(cols[0]) : int(cols[-1]) + 1]
            else:
                picked = mm[:, cols]
            return fill(out, picked) if out is not None else np.array(picked)
        finally:
            mm._mmap.close()  # type: ignore[attr-defined]  # unmap now, not at GC time

    def map_counts(self, start_sample: int, stop_sample: int) -> MappedCounts:
        """Frames ``[start_sample, stop_sample)`` as a read-only view of the file itself.

        The window is mapped and pre-faulted in one system call (``MAP_POPULATE`` on
        Linux) and is unmapped by :meth:`MappedCounts.close`, so a streaming caller
        converts samples straight from the page cache, without a read copy, and RSS
        stays at the windows it holds. Every column is included.

        Raises
        ------
        DecodeError
            If the file has become shorter than the window.
        """
        self._check_raw()
        start = max(0, int(start_sample))
        stop = max(start, min(self.n_samples, int(stop_sample)))
        return MappedCounts(
            self.path,
            offset=self._ds.region_start + start * self._frame_bytes,
            shape=(stop - start, len(self.electrodes)),
            dtype=self._dtype,
        )

    def _pread_into(self, dest: np.ndarray, offset: int) -> None:
        view = memoryview(dest).cast("B")  # type: ignore[arg-type]
        fd = os.open(self.path, os.O_RDONLY)
        try:
            done = 0
            while done < len(view):  # one read returns at most ~2 GB on Linux
                got = os.preadv(fd, [view[done:]], offset + done)
                if got == 0:
                    raise DecodeError(
                        f"{self.path.name}: file ends at byte {offset + done}, inside the "
                        f"data region (expected {offset + len(view)})"
                    )
                done += got
        finally:
            os.close(fd)

    def read(
        self,
        start_s: float,
        stop_s: float,
        *,
        electrodes: Sequence[str] | None = None,
        wells: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Voltages of a time window, (samples, channels) float32 µV.

        Frames ``round(start_s·fs)`` to ``round(stop_s·fs)`` (exclusive), clamped to the
        recording. Columns follow :attr:`electrodes` order restricted to the selection.
        """
        self._check_raw()
        if not (math.isfinite(start_s) and math.isfinite(stop_s)) or not 0 <= start_s <= stop_s:
            raise InvalidArgument(f"{self.path.name}: bad window [{start_s}, {stop_s}] s")
        cols = self.columns(electrodes=electrodes, wells=wells)
        k0 = round(start_s * self.sampling_rate_hz)
        k1 = round(stop_s * self.sampling_rate_hz)
        counts = self.read_counts(k0, k1, columns=cols)
        return counts_to_uv(counts, self.voltage_scale_uv_per_count)

    def iter_chunks(
        self,
        *,
        chunk_s: float,
        electrodes: Sequence[str] | None = None,
        wells: Sequence[str] | None = None,
        start_s: float = 0.0,
        stop_s: float | None = None,
    ) -> Iterator[Chunk]:
        """Consecutive windows of ``chunk_s`` seconds (the last may be shorter), in µV."""
        self._check_raw()
        if not (math.isfinite(chunk_s) and chunk_s > 0):
            raise InvalidArgument(f"{self.path.name}: chunk_s must be positive, got {chunk_s}")
        cols = self.columns(electrodes=electrodes, wells=wells)
        step = max(1, round(chunk_s * self.sampling_rate_hz))
        k = max(0, round(start_s * self.sampling_rate_hz))
        end = (
            self.n_samples
            if stop_s is None
            else min(self.n_samples, round(stop_s * self.sampling_rate_hz))
        )
        while k < end:
            stop = min(end, k + step)
            counts = self.read_counts(k, stop, columns=cols)
            yield Chunk(
                k, k / self.sampling_rate_hz, counts_to_uv(counts, self.voltage_scale_uv_per_count)
            )
            k = stop

    def spike_records(self) -> np.ndarray:
        """The raw spike records as a structured array (a copy; ``.spk`` only)."""
        if self.kind != "spk":
            raise InvalidArgument(f"{self.path.name} holds continuous data, not spikes")
        if self.n_spikes == 0:
            return np.empty(0, dtype=self._record_dtype())
        mm = np.memmap(
            self.path,
            dtype=self._record_dtype(),
            mode="r",
            offset=self._ds.region_start,
            shape=(self.n_spikes,),
        )
        out = np.array(mm)
        mm._mmap.close()  # type: ignore[attr-defined]
        return out

    def _record_dtype(self) -> np.dtype:
        fields: list[tuple] = [  # type: ignore[type-arg]
            ("start_sample", "<i8"),
            ("channel", "u1"),
            ("chip", "u1"),
            ("trigger_offset", "<i4"),
            ("noise_sd", "<f8"),
            ("threshold_multiplier", "<f8"),
        ]
        extra = self._ds.block_header_size - SPIKE_HEADER_SIZE
        if extra:
            fields.append(("reserved", f"V{extra}"))
        fields.append(("waveform", "<i2", (self._ds.samples_per_block,)))
        return np.dtype(fields)

    def read_spikes(self) -> pa.Table:
        """Spikes in the MEA spike-table convention, sorted by ``time_s``.

        ``time_s = (StartingSample + TriggerSampleOffset) / fs``; ``amplitude_uv`` is the
        waveform sample at the trigger offset times the voltage scale (null when the
        offset lies outside the waveform).
        """
        from transforms.recording.spikes import spikes_table  # late: detect imports this module

        rec = self.spike_records()
        ids = rec["chip"].astype(np.int64) << 8 | rec["channel"].astype(np.int64)
        lookup = self._channel_names
        uniq, inverse = np.unique(ids, return_inverse=True)
        for cid in uniq:
            if int(cid) not in lookup:
                raise self._fail(f"spike on amplifier channel {int(cid):#06x} absent from array")
        names = np.array([lookup[int(c)] for c in uniq], dtype=object)
        electrode = names[inverse] if len(rec) else np.empty(0, dtype=object)
        trig = rec["trigger_offset"].astype(np.int64)
        time_s = (rec["start_sample"] + trig) / self.sampling_rate_hz
        w = self._ds.samples_per_block
        inside = (trig >= 0) & (trig < w)
        at = rec["waveform"][np.arange(len(rec)), np.clip(trig, 0, w - 1)].astype(np.float64)
        amp = np.where(inside, at * self.voltage_scale_uv_per_count, np.nan)
        return spikes_table(electrode, time_s, amp.astype(np.float32))


class MappedCounts:
    """A read-only memory-mapped window of a ``.raw`` data region (see ``map_counts``).

    ``array`` is the (samples, channels) view; :meth:`close` unmaps it, after which
    the caller must hold no view of it (``BufferError`` otherwise).
    """

    def __init__(self, path: Path, *, offset: int, shape: tuple[int, int], dtype: np.dtype) -> None:
        n_bytes = shape[0] * shape[1] * dtype.itemsize
        self._mm: mmap.mmap | None = None
        if n_bytes == 0:
            self.array = np.empty(shape, dtype=dtype)
            return
        aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < offset + n_bytes:  # mapping past the end would SIGBUS on access
                raise DecodeError(
                    f"{path.name}: file ends at byte {size}, inside the data region "
                    f"(window ends at {offset + n_bytes})"
                )
            self._mm = mmap.mmap(
                fh.fileno(),
                offset - aligned + n_bytes,
                flags=mmap.MAP_SHARED | _MAP_POPULATE,
                prot=mmap.PROT_READ,
                offset=aligned,
            )
        self.array = np.frombuffer(
            self._mm, dtype=dtype, count=shape[0] * shape[1], offset=offset - aligned
        ).reshape(shape)

    def close(self) -> None:
        """Unmap the window (idempotent)."""
        self.array = np.empty((0, *self.array.shape[1:]), dtype=self.array.dtype)
        if self._mm is not None:
            self._mm.close()
            self._mm = None


def open_axion(
    path: str | Path, *, strict_crc: bool = True, allow_truncated: bool = False
) -> AxionFile:
    """Open an AxIS ``.raw`` or ``.spk`` file (parses headers only).

    Parameters
    ----------
    path
        The file.
    strict_crc
        Raise on a header CRC mismatch (default); if False, record
        :data:`FLAG_CRC_MISMATCH` and go on.
    allow_truncated
        Accept a data region running past the end of the file (an interrupted
        recording): use the whole frames present and flag :data:`FLAG_TRUNCATED`.

    Raises
    ------
    DecodeError
        Corrupt, truncated or absurd content (the message names the file and the field).
    UnsupportedRecording
        Legacy 0.x files, unknown plate types, files without voltage or spike data.
    """
    return AxionFile(path, strict_crc=strict_crc, allow_truncated=allow_truncated)


def _parse_well_treatment(cur: Cursor) -> WellTreatment:
    col, row, _ec, _er, flags = cur.unpack("<5B")
    if col < 1 or row < 1:
        raise DecodeError(f"{cur.where}: WellTreatment with well column/row 0")
    well = f"{chr(ord('A') + row - 1)}{col}"
    if cur.remaining < 12:  # old-style tag: no colour or treatment (section 9.3)
        return WellTreatment(well, active=bool(flags & 1), control=bool(flags & 2))
    r, g, b = cur.unpack("<3B")
    what = cur.lpstring()
    info = cur.lpstring()
    amount = exponent = unit = None
    if cur.remaining > 9:
        amount, exponent = cur.unpack("<db")
        unit = cur.lpstring()
    return WellTreatment(
        well, what, info, amount, exponent, unit, bool(flags & 1), bool(flags & 2), (r, g, b)
    )
