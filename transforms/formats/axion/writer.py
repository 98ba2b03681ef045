"""Write Axion AxIS ``.raw`` and ``.spk`` files (synthetic plates and test fixtures).

Streams: :func:`write_axion_raw` takes an iterable of ``(samples, channels)`` chunks
and patches the header (lengths, CRCs) when done. The layout follows
``shared/docs/axion-file-format.md``.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from transforms.errors import InvalidArgument
from transforms.formats.axion._format import (
    COMBINED_FIXED,
    DATA_CONTINUOUS,
    DATA_SPIKES,
    DEFAULT_VOLTAGE_SCALE_UV,
    DEFAULT_WAVEFORM_SAMPLES,
    E_BV_DATA,
    E_BV_HEADER,
    E_BV_HEADER_EXT,
    E_CHANNEL_ARRAY,
    E_COMBINED,
    E_NOTES,
    E_TAG,
    HEAD,
    HEADER_SIZE,
    MAGIC,
    MAX_RATE_HZ,
    NOTES_LENGTH,
    PRIMARY_SLOTS,
    SPIKE_HEADER_SIZE,
    SUB_SLOTS,
    TAG_HEAD,
    TAG_KEY_VALUE,
    TAG_SYSTEM_ANNOTATION,
    TAG_USER_ANNOTATION,
    TAG_WELL_TREATMENT,
    Annotation,
    ChannelMapping,
    WellTreatment,
    crc32,
    datetime_bytes,
    lpstring,
)
from transforms.recording.plate import PLATE_TYPES, PlateLayout, parse_electrode, parse_well

# --------------------------------------------------------------------------- the writer


def _wiring(layout: PlateLayout, electrodes: Sequence[str]) -> list[ChannelMapping]:
    """ChannelArray records; amplifier (chip, channel) = divmod(plate index, 64)."""
    maps = []
    for name in electrodes:
        idx = layout.electrode_index.get(name)
        if idx is None:
            raise InvalidArgument(f"electrode {name!r} does not exist on a {layout.name} plate")
        well, ec, er = parse_electrode(name)
        wr, wc = parse_well(well)
        chip, channel = divmod(idx, 64)
        maps.append(ChannelMapping(wc, wr, ec, er, chip, channel))
    if len({m.channel_id for m in maps}) != len(maps):
        raise InvalidArgument("an electrode is listed twice")
    return maps


def _channel_array_bytes(plate_type: int, maps: Sequence[ChannelMapping]) -> bytes:
    body = b"".join(
        struct.pack("<6BH", m.well_col, m.well_row, m.el_col, m.el_row, m.chip, m.channel, 0)
        for m in maps
    )
    return struct.pack("<II", plate_type, len(maps)) + body


def _combined_bytes(
    *,
    data_type: int,
    sampling_rate_hz: float,
    voltage_scale_v: float,
    channels_per_block: int,
    samples_per_block: int,
    block_header_size: int,
    times: Sequence[dt.datetime],
    duration_s: float,
    name: str,
    region_start: int,
    region_length: int,
    extension: bytes,
) -> bytes:
    fixed = COMBINED_FIXED.pack(
        1,
        1,
        data_type,
        0,
        sampling_rate_hz,
        voltage_scale_v,
        channels_per_block,
        1,
        samples_per_block,
        0,
        block_header_size,
    )
    common = (
        fixed
        + b"".join(datetime_bytes(t) for t in times)
        + struct.pack("<d", duration_s)
        + lpstring(name)
        + lpstring("")
        + struct.pack("<qq", region_start, region_length)
    )
    ext = extension + struct.pack("<I", crc32(extension))
    return common + struct.pack("<I", crc32(common)) + ext


def _primary_header(primary_type: int, slots: Sequence[int]) -> bytes:
    head = HEAD.pack(MAGIC, primary_type, 1, 3, 0, NOTES_LENGTH, HEADER_SIZE)
    head += struct.pack(f"<{PRIMARY_SLOTS}Q", *slots, *([0] * (PRIMARY_SLOTS - len(slots))))
    return head + struct.pack("<I", crc32(head)) + b"\x00\x00"


def _sub_header(slots: Sequence[int]) -> bytes:
    body = MAGIC + struct.pack(f"<{SUB_SLOTS}Q", *slots, *([0] * (SUB_SLOTS - len(slots))))
    return body + struct.pack("<I", crc32(body)) + b"\x00" * 4


def _tag_bytes(tag_type: int, guid: uuid.UUID, created: dt.datetime, payload: bytes) -> bytes:
    return TAG_HEAD.pack(tag_type, datetime_bytes(created), guid.bytes_le, 1) + payload


_TAG_NAMESPACE: Final = uuid.UUID("6f1c7a52-3d9e-4b8e-9a51-2f0c8d7e4a10")


def _metadata_tags(
    created: dt.datetime,
    metadata: dict[str, str] | None,
    plate_map: Sequence[WellTreatment],
    annotations: Sequence[Annotation],
    sampling_rate_hz: float,
    layout: PlateLayout,
) -> list[bytes]:
    tags = []
    for key, value in (metadata or {}).items():
        guid = uuid.uuid5(_TAG_NAMESPACE, f"kv:{key}")
        tags.append(_tag_bytes(TAG_KEY_VALUE, guid, created, lpstring(key) + lpstring(value)))
    for wt in plate_map:
        if not layout.has_well(wt.well):
            raise InvalidArgument(f"plate map well {wt.well!r} is not on a {layout.name} plate")
        row, col = parse_well(wt.well)
        payload = struct.pack(
            "<5B3B", col, row, 0, 0, int(wt.active) | int(wt.control) << 1, *wt.color_rgb
        )
        payload += lpstring(wt.treatment) + lpstring(wt.additional_info)
        if wt.amount is not None:
            payload += struct.pack("<db", wt.amount, wt.unit_exponent or 0)
            payload += lpstring(wt.unit or "")
        guid = uuid.uuid5(_TAG_NAMESPACE, f"well:{wt.well}")
        tags.append(_tag_bytes(TAG_WELL_TREATMENT, guid, created, payload))
    for i, note in enumerate(annotations):
        sample = round(note.time_s * sampling_rate_hz)
        payload = struct.pack("<dqq", sampling_rate_hz, sample, 0) + b"\x00" * 4
        payload += lpstring(note.text)
        ttype = TAG_SYSTEM_ANNOTATION if note.system else TAG_USER_ANNOTATION
        tags.append(_tag_bytes(ttype, uuid.uuid5(_TAG_NAMESPACE, f"note:{i}"), created, payload))
    return tags


def _write_container(
    f,  # type: ignore[no-untyped-def]
    *,
    primary_type: int,
    channel_array: bytes,
    combined: bytes,
    data_length: int,
    tail_entries: Sequence[tuple[int, bytes]],
) -> None:
    """Write headers and every entry but the data region, which is already in place.

    ``f`` is positioned at the end of the data region. Entries after the data (tags)
    follow it; sub-headers are inserted whenever a header's slots run out.
    """
    entries: list[tuple[int, int]] = [
        (E_CHANNEL_ARRAY, len(channel_array)),
        (E_COMBINED, len(combined)),
        (E_BV_DATA, data_length),
    ] + [(t, len(b)) for t, b in tail_entries]
    slots = [t << 56 | n for t, n in entries]
    # Tail entries go after the data; with > 123 entries sub-headers sit between them.
    cut = PRIMARY_SLOTS
    k = 3
    while True:
        while k < min(cut, len(entries)):
            f.write(tail_entries[k - 3][1])
            k += 1
        if len(entries) < cut:
            break
        f.write(_sub_header(slots[cut : cut + SUB_SLOTS]))
        cut += SUB_SLOTS
    f.seek(0)
    f.write(_primary_header(primary_type, slots[:PRIMARY_SLOTS]))
    f.write(channel_array)
    f.write(combined)


def _check_common(
    layout: PlateLayout, sampling_rate_hz: float, voltage_scale_uv_per_count: float
) -> None:
    if not (math.isfinite(sampling_rate_hz) and 0 < sampling_rate_hz <= MAX_RATE_HZ):
        raise InvalidArgument(f"sampling_rate_hz must be in (0, 1e6], got {sampling_rate_hz}")
    if not (math.isfinite(voltage_scale_uv_per_count) and voltage_scale_uv_per_count != 0):
        raise InvalidArgument(
            f"voltage_scale_uv_per_count must be nonzero, got {voltage_scale_uv_per_count}"
        )
    if layout.plate_type not in PLATE_TYPES:
        raise InvalidArgument(f"layout {layout.name} has no known plate type")


def _quantize(block: np.ndarray, scale_uv: float) -> np.ndarray:
    if block.dtype == np.int16:
        return block  # already counts
    # float32 is exact for the int16 range and halves the memory traffic of float64
    counts = np.multiply(block, np.float32(1.0 / scale_uv), dtype=np.float32)
    np.rint(counts, out=counts)
    np.clip(counts, -32768, 32767, out=counts)
    return counts.astype("<i2")


def write_axion_raw(
    path: str | Path,
    chunks: Iterable[np.ndarray],
    *,
    layout: PlateLayout,
    sampling_rate_hz: float = 12500.0,
    voltage_scale_uv_per_count: float = DEFAULT_VOLTAGE_SCALE_UV,
    electrodes: Sequence[str] | None = None,
    recorded_at: dt.datetime | None = None,
    metadata: dict[str, str] | None = None,
    plate_map: Sequence[WellTreatment] = (),
    annotations: Sequence[Annotation] = (),
) -> Path:
    """Write a continuous AxIS ``.raw`` file from a stream of chunks.

    Parameters
    ----------
    path
        Output file (overwritten).
    chunks
        Arrays of shape (samples, channels): float µV (rounded to counts, clipped to
        int16) or int16 arrays taken as raw counts. Only one chunk is held at a time.
    layout
        Plate layout; its plate type goes into the ChannelArray.
    electrodes
        Data columns in order (default: every electrode of the layout).
    voltage_scale_uv_per_count
        Signed µV per count (default: the Maestro value, −0.0581 µV).
    recorded_at
        Recording start (all four header dates); default: now, to the millisecond.
    metadata, plate_map, annotations
        Key-value, WellTreatment and UserAnnotation tags, written after the data.

    Returns
    -------
    Path
        ``path``.
    """
    _check_common(layout, sampling_rate_hz, voltage_scale_uv_per_count)
    names = list(layout.electrodes if electrodes is None else electrodes)
    maps = _wiring(layout, names)
    n_ch = len(maps)
    when = recorded_at or dt.datetime.now().replace(microsecond=0)
    ca = _channel_array_bytes(layout.plate_type, maps)
    ext = struct.pack(f"<{n_ch}H", *(m.channel_id for m in maps)) + lpstring("Raw")

    def combined(start: int, length: int) -> bytes:
        return _combined_bytes(
            data_type=DATA_CONTINUOUS,
            sampling_rate_hz=sampling_rate_hz,
            voltage_scale_v=voltage_scale_uv_per_count * 1e-6,
            channels_per_block=n_ch,
            samples_per_block=1,
            block_header_size=0,
            times=[when] * 4,
            duration_s=length / (2 * n_ch) / sampling_rate_hz,
            name="Voltage",
            region_start=start,
            region_length=length,
            extension=ext,
        )

    data_start = HEADER_SIZE + len(ca) + len(combined(0, 0))
    out = Path(path)
    tags = _metadata_tags(when, metadata, plate_map, annotations, sampling_rate_hz, layout)
    with out.open("wb") as f:
        f.seek(data_start)
        n_bytes = 0
        for block in chunks:
            arr = np.asarray(block)
            if arr.ndim != 2 or arr.shape[1] != n_ch:
                raise InvalidArgument(
                    f"{out.name}: chunk of shape {arr.shape}, expected (samples, {n_ch})"
                )
            raw = np.ascontiguousarray(_quantize(arr, voltage_scale_uv_per_count))
            f.write(raw.tobytes())
            n_bytes += raw.nbytes
        _write_container(
            f,
            primary_type=DATA_CONTINUOUS,
            channel_array=ca,
            combined=combined(data_start, n_bytes),
            data_length=n_bytes,
            tail_entries=[(E_TAG, t) for t in tags],
        )
    return out


@dataclass(frozen=True)
class SpikeRecords:
    """A batch of spikes to write: one row per spike.

    Attributes
    ----------
    electrode
        Electrode names (``A1_23``).
    start_sample
        Sample index of each waveform's first sample (int64).
    waveforms_uv
        (spikes, W) waveforms in µV (or int16 counts).
    trigger_offset
        Sample within the waveform where the detector triggered (scalar or per spike).
    noise_sd_uv, threshold_multiplier
        Noise level and threshold multiple stored with each record.
    """

    electrode: Sequence[str] | np.ndarray
    start_sample: np.ndarray
    waveforms_uv: np.ndarray
    trigger_offset: int | np.ndarray = 0
    noise_sd_uv: float | np.ndarray = 0.0
    threshold_multiplier: float | np.ndarray = 0.0


def _records(
    batch: SpikeRecords,
    start: np.ndarray,
    cid: np.ndarray,
    waves: np.ndarray,
    voltage_scale_uv_per_count: float,
) -> np.ndarray:
    """Spike_v1 records (section 8) of one batch."""
    rec = np.zeros(
        len(start),
        dtype=[
            ("start_sample", "<i8"),
            ("channel", "u1"),
            ("chip", "u1"),
            ("trigger_offset", "<i4"),
            ("noise_sd", "<f8"),
            ("threshold_multiplier", "<f8"),
            ("waveform", "<i2", (waves.shape[1],)),
        ],
    )
    rec["start_sample"] = start
    rec["channel"] = cid & 0xFF
    rec["chip"] = cid >> 8
    rec["trigger_offset"] = batch.trigger_offset
    rec["noise_sd"] = np.asarray(batch.noise_sd_uv, dtype=np.float64) * 1e-6
    rec["threshold_multiplier"] = batch.threshold_multiplier
    rec["waveform"] = _quantize(waves, voltage_scale_uv_per_count)
    return rec


def _fixed_text(text: str, size: int) -> bytes:
    raw = text.encode("utf-8")[:size]
    return raw + b"\x00" * (size - len(raw))


def write_axion_spk_legacy(
    path: str | Path,
    records: SpikeRecords,
    *,
    layout: PlateLayout,
    sampling_rate_hz: float = 12500.0,
    voltage_scale_uv_per_count: float = DEFAULT_VOLTAGE_SCALE_UV,
    electrodes: Sequence[str] | None = None,
    recorded_at: dt.datetime | None = None,
    settings_text: str = "",
    note: tuple[str, str, str] = ("", "", ""),
    metadata: dict[str, str] | None = None,
    plate_map: Sequence[WellTreatment] = (),
) -> Path:
    """Write a ``.spk`` in the legacy layout AxIS 3.6 still writes for spike files.

    Entries in AxIS's order (research findings on AxIS 3.6.1.14 files):
    BlockVectorHeader (0x03, 64 bytes, ``FirstBlock`` = the data entry's offset),
    ChannelArray, one NotesArray record (``NotesStart`` = its offset),
    BlockVectorHeaderExtension (0x05: DataType 1, an empty name, ``settings_text`` as
    the description: AxIS's ``key,value`` settings lines, CRLF), BlockVectorData, then
    the tags. ``sampling_rate_hz`` may be NaN (then the settings text must state it).
    There is no stored duration: the reader takes it from the settings' section.

    Raises
    ------
    InvalidArgument
        Unsorted spikes, mismatched array lengths, unknown electrodes.
    """
    if not math.isnan(sampling_rate_hz):
        _check_common(layout, sampling_rate_hz, voltage_scale_uv_per_count)
    names = list(layout.electrodes if electrodes is None else electrodes)
    maps = _wiring(layout, names)
    id_of = {n: m.channel_id for n, m in zip(names, maps, strict=True)}
    when = recorded_at or dt.datetime.now().replace(microsecond=0)
    start = np.asarray(records.start_sample, dtype=np.int64)
    waves = np.asarray(records.waveforms_uv)
    if waves.ndim != 2 or waves.shape[0] != len(start) or len(records.electrode) != len(start):
        raise InvalidArgument(f"{Path(path).name}: spike arrays disagree in length")
    if np.any(np.diff(start) < 0):
        raise InvalidArgument(f"{Path(path).name}: spikes must be written in time order")
    try:
        cid = np.array([id_of[e] for e in records.electrode], dtype=np.uint16)
    except KeyError as exc:
        raise InvalidArgument(f"{Path(path).name}: spike on electrode {exc.args[0]!r}") from None
    width = waves.shape[1] if waves.shape[1] else DEFAULT_WAVEFORM_SAMPLES
    data = _records(
        records, start, cid, waves.reshape(len(start), width), voltage_scale_uv_per_count
    )
    data_bytes = data.tobytes()
    ca = _channel_array_bytes(layout.plate_type, maps)
    notes = (
        _fixed_text(note[0], 50)
        + _fixed_text(note[1], 50)
        + _fixed_text(note[2], 500)
        + struct.pack("<I", 1)
        + datetime_bytes(when)
    )
    ext = (
        struct.pack("<HHH", 1, 0, DATA_SPIKES)
        + datetime_bytes(when) * 2
        + b"\x00" * 50
        + settings_text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    )
    bvh_at = HEADER_SIZE
    notes_at = bvh_at + 64 + len(ca)
    data_at = notes_at + len(notes) + len(ext)
    bvh = (
        struct.pack("<dd", sampling_rate_hz, voltage_scale_uv_per_count * 1e-6)
        + datetime_bytes(when) * 2
        + struct.pack("<qIII", data_at, 1, width, SPIKE_HEADER_SIZE)
    )
    tags = _metadata_tags(when, metadata, plate_map, (), 12500.0, layout)
    entries = [
        (E_BV_HEADER, bvh),
        (E_CHANNEL_ARRAY, ca),
        (E_NOTES, notes),
        (E_BV_HEADER_EXT, ext),
        (E_BV_DATA, data_bytes),
        *((E_TAG, t) for t in tags),
    ]
    if len(entries) > PRIMARY_SLOTS:
        raise InvalidArgument(f"{Path(path).name}: too many tags for one header")
    slots = [t << 56 | len(b) for t, b in entries]
    head = HEAD.pack(MAGIC, DATA_SPIKES, 1, 3, notes_at, NOTES_LENGTH, HEADER_SIZE)
    head += struct.pack(f"<{PRIMARY_SLOTS}Q", *slots, *([0] * (PRIMARY_SLOTS - len(slots))))
    head += struct.pack("<I", crc32(head)) + b"\x00\x00"
    out = Path(path)
    out.write_bytes(head + b"".join(b for _, b in entries))
    return out


def write_axion_spk(
    path: str | Path,
    batches: Iterable[SpikeRecords] | SpikeRecords,
    *,
    layout: PlateLayout,
    duration_s: float,
    sampling_rate_hz: float = 12500.0,
    voltage_scale_uv_per_count: float = DEFAULT_VOLTAGE_SCALE_UV,
    electrodes: Sequence[str] | None = None,
    recorded_at: dt.datetime | None = None,
    metadata: dict[str, str] | None = None,
    plate_map: Sequence[WellTreatment] = (),
) -> Path:
    """Write an AxIS ``.spk`` file (Spike_v1 records, section 8) from batches of spikes.

    Batches must come in time order (StartingSample non-decreasing across and within
    batches) and share one waveform length. ``duration_s`` is the recording length
    stored in the header. The noise level is stored in volts (section 8.2).

    Raises
    ------
    InvalidArgument
        Unsorted spikes, mismatched array lengths, unknown electrodes.
    """
    _check_common(layout, sampling_rate_hz, voltage_scale_uv_per_count)
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise InvalidArgument(f"duration_s must be >= 0, got {duration_s}")
    names = list(layout.electrodes if electrodes is None else electrodes)
    maps = _wiring(layout, names)
    id_of = {n: m.channel_id for n, m in zip(names, maps, strict=True)}
    when = recorded_at or dt.datetime.now().replace(microsecond=0)
    ca = _channel_array_bytes(layout.plate_type, maps)
    ext = struct.pack(f"<I{len(maps)}H", len(maps), *(m.channel_id for m in maps)) + lpstring(
        "Spikes"
    )
    if isinstance(batches, SpikeRecords):
        batches = [batches]
    out = Path(path)
    width: int | None = None
    last_start = -(1 << 62)
    n_bytes = 0
    # Placeholder sized for a default waveform; the real header is written at the end,
    # so the data is written to a temporary position only once width is known.
    ca_len = len(ca)
    with out.open("wb") as f:
        data_start = 0
        for batch in batches:
            start = np.asarray(batch.start_sample, dtype=np.int64)
            n = len(start)
            waves = np.asarray(batch.waveforms_uv)
            if waves.ndim != 2 or waves.shape[0] != n or len(batch.electrode) != n:
                raise InvalidArgument(f"{out.name}: spike batch arrays disagree in length")
            if width is None:
                width = waves.shape[1]
                if width < 1:
                    raise InvalidArgument(f"{out.name}: empty spike waveforms")
                combined_len = len(
                    _combined_bytes(
                        data_type=DATA_SPIKES,
                        sampling_rate_hz=sampling_rate_hz,
                        voltage_scale_v=voltage_scale_uv_per_count * 1e-6,
                        channels_per_block=1,
                        samples_per_block=width,
                        block_header_size=SPIKE_HEADER_SIZE,
                        times=[when] * 4,
                        duration_s=duration_s,
                        name="Spikes",
                        region_start=0,
                        region_length=0,
                        extension=ext,
                    )
                )
                data_start = HEADER_SIZE + ca_len + combined_len
                f.seek(data_start)
            elif waves.shape[1] != width:
                raise InvalidArgument(f"{out.name}: waveform length changed from {width}")
            if n == 0:
                continue
            if np.any(np.diff(start) < 0) or start[0] < last_start:
                raise InvalidArgument(f"{out.name}: spikes must be written in time order")
            last_start = int(start[-1])
            try:
                cid = np.array([id_of[e] for e in batch.electrode], dtype=np.uint16)
            except KeyError as exc:
                raise InvalidArgument(
                    f"{out.name}: spike on electrode {exc.args[0]!r} not written"
                ) from None
            rec = _records(batch, start, cid, waves, voltage_scale_uv_per_count)
            f.write(rec.tobytes())
            n_bytes += rec.nbytes
        if width is None:  # no batch at all: an empty set with the default width
            width = DEFAULT_WAVEFORM_SAMPLES
        comb = _combined_bytes(
            data_type=DATA_SPIKES,
            sampling_rate_hz=sampling_rate_hz,
            voltage_scale_v=voltage_scale_uv_per_count * 1e-6,
            channels_per_block=1,
            samples_per_block=width,
            block_header_size=SPIKE_HEADER_SIZE,
            times=[when] * 4,
            duration_s=duration_s,
            name="Spikes",
            region_start=HEADER_SIZE + ca_len,
            region_length=n_bytes,
            extension=ext,
        )
        data_start = HEADER_SIZE + ca_len + len(comb)
        comb = _combined_bytes(
            data_type=DATA_SPIKES,
            sampling_rate_hz=sampling_rate_hz,
            voltage_scale_v=voltage_scale_uv_per_count * 1e-6,
            channels_per_block=1,
            samples_per_block=width,
            block_header_size=SPIKE_HEADER_SIZE,
            times=[when] * 4,
            duration_s=duration_s,
            name="Spikes",
            region_start=data_start,
            region_length=n_bytes,
            extension=ext,
        )
        f.seek(data_start + n_bytes)
        tags = _metadata_tags(when, metadata, plate_map, (), sampling_rate_hz, layout)
        _write_container(
            f,
            primary_type=DATA_SPIKES,
            channel_array=ca,
            combined=comb,
            data_length=n_bytes,
            tail_entries=[(E_TAG, t) for t in tags],
        )
    return out
