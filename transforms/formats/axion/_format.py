"""Axion AxIS container format: constants, entry/tag codes, the header cursor, CRC.

Shared by the reader and the writer (``shared/docs/axion-file-format.md``; section
numbers refer to it).
"""

from __future__ import annotations

import datetime as dt
import struct
import zlib
from dataclasses import dataclass
from typing import Final

import numpy as np

from transforms.errors import DecodeError

MAGIC: Final = b"AxionBio"
HEADER_SIZE: Final = 1024
PRIMARY_SLOTS: Final = 123
SUB_SLOTS: Final = 126
NOTES_LENGTH: Final = 600
NOTE_RECORD_SIZE: Final = 618
LENGTH_MASK: Final = (1 << 56) - 1
#: Slot length meaning "to the end of the file" (section 3).
READ_TO_END: Final = LENGTH_MASK

# Entry type ids (section 3).
E_TERMINATE: Final = 0x00
E_NOTES: Final = 0x01
E_CHANNEL_ARRAY: Final = 0x02
E_BV_HEADER: Final = 0x03
E_BV_DATA: Final = 0x04
E_BV_HEADER_EXT: Final = 0x05
E_TAG: Final = 0x06
E_COMBINED: Final = 0x07
E_SKIP: Final = 0xFF
KNOWN_ENTRIES: Final = frozenset(
    {E_NOTES, E_CHANNEL_ARRAY, E_BV_HEADER, E_BV_DATA, E_BV_HEADER_EXT, E_TAG, E_COMBINED, E_SKIP}
)

# Tag types (section 9.2) this module interprets.
TAG_DELETED: Final = 0
TAG_WELL_TREATMENT: Final = 1
TAG_USER_ANNOTATION: Final = 2
TAG_SYSTEM_ANNOTATION: Final = 3
TAG_KEY_VALUE: Final = 11
KNOWN_TAG_TYPES: Final = frozenset(range(14))

DATA_RAW_V1: Final = 0
DATA_SPIKES: Final = 1
DATA_CONTINUOUS: Final = 2
SAMPLE_DTYPES: Final[dict[int, np.dtype]] = {
    0: np.dtype("<i2"),
    1: np.dtype("<i4"),
    2: np.dtype("<f4"),
    3: np.dtype("<f8"),
}
RAW_SET_NAMES: Final = ("raw", "broadband high-frequency", "broadband low-frequency")

#: Default volts per count of Maestro files (-1/17.2e6 V, section 6.4), in µV.
DEFAULT_VOLTAGE_SCALE_UV: Final = -5.8139534883720935e-08 * 1e6
SPIKE_HEADER_SIZE: Final = 30
#: Default spike waveform length (38 samples, about 3 ms at 12.5 kHz; section 8.4).
DEFAULT_WAVEFORM_SAMPLES: Final = 38

# Sanity bounds for header values; anything outside is treated as corruption.
MAX_CHANNELS: Final = 4096
MAX_RATE_HZ: Final = 1.0e6
MAX_PARSED_ENTRY: Final = 64 * 1024 * 1024
_MAX_TEXT: Final = 1 << 20

# Flags recorded on an AxionFile when something was tolerated rather than fatal.
FLAG_UNKNOWN_ENTRY: Final = "unknown_entry_skipped"
FLAG_TRUNCATED: Final = "truncated_data_region"
FLAG_PARTIAL_FRAME: Final = "partial_frame_dropped"
FLAG_CRC_MISMATCH: Final = "crc_mismatch_ignored"
FLAG_BAD_TAG: Final = "unreadable_tag_ignored"
FLAG_EXTRA_DATA_SETS: Final = "extra_data_sets_ignored"
FLAG_UNSUPPORTED_SET: Final = "unsupported_data_set_skipped"
FLAG_RATE_FROM_SETTINGS: Final = "sampling_rate_nan_replaced"

HEAD: Final = struct.Struct("<8sHHHQIq")  # magic .. EntriesStart (34 bytes)
_DATETIME: Final = struct.Struct("<7H")
COMBINED_FIXED: Final = struct.Struct("<HHHHddIIIII")  # 44 bytes before the DateTimes
TAG_HEAD: Final = struct.Struct("<H14s16sI")
_SPIKE_HEAD: Final = struct.Struct("<qBBidd")


def crc32(data: bytes | bytearray | memoryview) -> int:
    # CRC-32/ISO-HDLC, identical to the AxIS CRC (section 0).
    return zlib.crc32(data) & 0xFFFFFFFF


# --------------------------------------------------------------------------- public types


@dataclass(frozen=True)
class WellTreatment:
    """One plate-map entry (WellTreatment tag, section 9.3).

    ``amount`` is in the base unit (30 µM is ``3e-5`` with ``unit`` ``M``);
    ``unit_exponent`` is the display prefix power (6 for µ).
    """

    well: str
    treatment: str = ""
    additional_info: str = ""
    amount: float | None = None
    unit_exponent: int | None = None
    unit: str | None = None
    active: bool = True
    control: bool = False
    color_rgb: tuple[int, int, int] = (0, 0, 0)


@dataclass(frozen=True)
class Annotation:
    """A time-stamped note (UserAnnotation / SystemAnnotation tag, section 9.4)."""

    time_s: float
    text: str
    system: bool = False


@dataclass(frozen=True)
class Note:
    """A legacy NotesArray record (section 4)."""

    investigator: str
    recording_name: str
    description: str
    revision: int
    revised_at: dt.datetime | None


@dataclass(frozen=True)
class DataSet:
    data_type: int
    sample_type: int
    sampling_rate_hz: float
    voltage_scale_v: float
    channels_per_block: int
    sets_per_block: int
    samples_per_block: int
    block_header_size: int
    start_time: dt.datetime | None
    experiment_start: dt.datetime | None
    duration_s: float | None
    name: str
    region_start: int
    region_length: int
    channel_ids: tuple[int, ...]
    set_names: tuple[str, ...]


@dataclass(frozen=True)
class ChannelMapping:
    well_col: int
    well_row: int
    el_col: int
    el_row: int
    chip: int
    channel: int

    @property
    def channel_id(self) -> int:
        return self.chip << 8 | self.channel

    @property
    def name(self) -> str:
        return f"{chr(ord('A') + self.well_row - 1)}{self.well_col}_{self.el_col}{self.el_row}"


# --------------------------------------------------------------------------- small codecs


def read_datetime(raw: bytes) -> dt.datetime | None:
    y, mo, d, h, mi, s, ms = _DATETIME.unpack(raw)
    if y == 0 and mo == 0 and d == 0:
        return None
    try:
        return dt.datetime(y, mo, d, h, mi, s, ms * 1000)
    except ValueError:
        return None  # invalid stored dates carry no information; not worth failing a file


def datetime_bytes(value: dt.datetime) -> bytes:
    return _DATETIME.pack(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond // 1000,
    )


def lpstring(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<i", len(raw)) + raw


def clean_text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").replace("\r", "").rstrip("\x00 \t\n")


class Cursor:
    """Bounded reader over one entry's bytes; overruns raise DecodeError."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data = data
        self.pos = 0
        self.where = where

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise DecodeError(f"{self.where}: field runs past the end of the entry")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:  # type: ignore[type-arg]
        s = struct.Struct(fmt)
        return s.unpack(self.take(s.size))

    def lpstring(self) -> str:
        (n,) = self.unpack("<i")
        if n < 0 or n > _MAX_TEXT:
            raise DecodeError(f"{self.where}: absurd string length {n}")
        return clean_text(self.take(n))
