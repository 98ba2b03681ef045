"""AxIS spike-list CSV exports (``*_spike_list.csv``, plain or gzipped).

Layout of the export, as written by AxIS / AxIS Navigator:

* columns 0-1 hold a settings block (``Investigator``, ``Maestro Settings``,
  ``   Sampling Frequency,12500 Hz``, ``Actual File Section Run,0s to 18m2s``, ...),
  section titles with an empty value and indented keys under them;
* columns 2-4 hold the spikes, ``Time (s)``, ``Electrode``, ``Amplitude(mV)``, one
  per row, on the same rows as the settings (the first row is the header row and
  also carries the first setting, ``Investigator``);
* optionally, after the spikes, a block starting with a ``Well Information`` row
  (one row per property, one column per well: ``Well``, ``Treatment``,
  ``Concentration``, ...).

Dialects (research/mea/FINDINGS.md, real AxIS 1.5, 2.0 and 3.6 exports): comma or
TAB separated (detected from the header row; ``;`` is recognised only to report a
decimal comma), UTF-8 BOM, CR/LF/CRLF, ``Amplitude(mV)`` or ``Amplitude (mV)``,
zero-padded (``00000.010960``) or Excel-shortened times, Excel's padding cells, and
quoted settings values running over several lines (AxIS 3.6's ``Description``). The
settings are typed by :mod:`transforms.formats.axis_settings`.

Spikes come out in the project's MEA spike-table convention: ``electrode``
(``A1_23``), ``well`` (``A1``), ``time_s`` (float64, from the start of the analysed
section: AxIS counts the times of a section starting at 27 min from the file start,
and those are re-based) and ``amplitude_uv`` (float32, nullable; the export gives mV),
sorted by ``time_s``. Spikes outside the section (negative times, or more than
:data:`END_SLACK_S` after its whole-second end) are counted in the flags, not kept.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from transforms.errors import DecodeError, InvalidArgument, ResourceLimit, SpecError
from transforms.formats.axis_settings import collect_settings, header_metadata
from transforms.recording.plate import (
    LAYOUTS,
    PlateLayout,
    PlateSpikes,
    layout_for_plate_name,
    parse_electrode,
    window_spikes,
)
from transforms.recording.spikes import MEA_SPIKE_SCHEMA

#: The columns of the spike part, by header text (case, spaces and brackets ignored).
_TIME_HEADERS: Final = frozenset({"time(s)", "time[s]", "time(sec)", "time"})
_ELECTRODE_HEADERS: Final = frozenset({"electrode", "channel(electrode)"})
_AMPLITUDE_HEADERS: Final = frozenset({"amplitude(mv)", "amplitude[mv]"})
_FOOTER_RE: Final = re.compile(r"^\"?Well Information\"?\s*([,\t;]|$)", re.MULTILINE)
_NUMBER_RE: Final = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
_DECIMAL_COMMA_RE: Final = r"^\s*[-+]?\d+,\d+([eE][-+]?\d+)?\s*$"
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?)\s*(h|ms|m|s)", re.IGNORECASE)
#: Rows read with the csv module before the fast reader takes over: the settings
#: block (which may hold quoted values with newlines) ends this many rows before.
_QUIET_ROWS: Final = 64

#: Settings naming the analysed section, best first (``0s to 18m2s``).
_SECTION_KEYS: Final = ("Actual File Section Run", "Requested File Section")

#: AxIS writes the analysed section in whole seconds: a spike this far past the
#: declared end still belongs to it.
END_SLACK_S: Final = 1.0

#: Flag: spikes stop well before the declared end of the recording.
TRUNCATED: Final = "truncated"
#: Flag: no duration could be read from the settings.
DURATION_UNKNOWN: Final = "duration_unknown"
#: Flag: the list holds no spike at all.
NO_SPIKES: Final = "no_spikes"
#: Flag prefix: ``spikes_after_end:<n>`` spikes lay more than :data:`END_SLACK_S`
#: past the declared end and were left out of the analysed window.
SPIKES_AFTER_END: Final = "spikes_after_end"
#: Flag prefix: ``spikes_before_start:<n>`` spikes lay before the analysed section
#: (negative times) and were left out.
SPIKES_BEFORE_START: Final = "spikes_before_start"
#: Flag: the analysed section does not start at the beginning of the file.
SECTION_OFFSET: Final = "section_offset"
#: Flag: the rows were not in time order in the file (they are sorted on read).
UNSORTED: Final = "unsorted_in_file"

#: Flag prefix: ``duplicate_spikes:<n>`` rows repeated an earlier row (same time,
#: electrode and amplitude) and were kept once: a doubled row would double rates.
DUPLICATE_SPIKES: Final = "duplicate_spikes"

#: Spike rows allowed in one file (``$NEUROCYTE_MAX_SPIKE_ROWS``): 50 M spikes is a
#: 96-well plate firing at 40 Hz on every electrode for 30 minutes.
MAX_ROWS: Final = 50_000_000
ENV_MAX_ROWS: Final = "NEUROCYTE_MAX_SPIKE_ROWS"
#: Bytes allowed in one file once decompressed (``$NEUROCYTE_MAX_SPIKE_LIST_MB``):
#: 50 M rows of AxIS text are about 1.5 GB.
MAX_BYTES: Final = 4 << 30
ENV_MAX_BYTES: Final = "NEUROCYTE_MAX_SPIKE_LIST_MB"
#: AxIS text gzips about 4:1 to 8:1; a stream inflating beyond this is a bomb.
MAX_GZIP_RATIO: Final = 100.0
#: The ratio is checked once this much has been inflated.
RATIO_CHECK_AFTER_BYTES: Final = 16 << 20
#: |Amplitude| beyond this (mV) is refused: the Maestro digitises a few mV at most
#: (16 bits at about 0.055-0.065 uV per count: +-2 mV), extracellular spikes are
#: tens to hundreds of uV. 10 mV leaves a wide margin for any amplifier setting.
MAX_ABS_AMPLITUDE_MV: Final = 10.0
#: The worker's memory budget (MiB), set by the ingest worker's entry
#: (:mod:`transforms.pipeline.allocator`). Within it, a spike list needing more than
#: the budget leaves is refused before Arrow is asked for the memory: several of
#: Arrow's C++ paths (the CSV parser, thread pools) abort the process on a failed
#: allocation instead of raising.
ENV_WORKER_MEMORY_MB: Final = "NEUROCYTE_WORKER_MEMORY_MB"
#: Memory one spike costs a worker from decoding to its rows (measured: 10 M spikes
#: took about 1.55 GB above the imports).
WORKER_BYTES_PER_SPIKE: Final = 160
#: Text read at once (the memory of one block, a few times over, while parsing).
BLOCK_BYTES: Final = 16 << 20
#: No line, settings block, footer or settings count beyond these.
MAX_LINE_BYTES: Final = 16 << 20
MAX_HEAD_BYTES: Final = 64 << 20
MAX_FOOTER_BYTES: Final = 16 << 20
MAX_SETTINGS: Final = 100_000

#: The MEA spike table convention, shared with the detector.
SPIKE_SCHEMA: Final = MEA_SPIKE_SCHEMA


@dataclass(frozen=True)
class SpikeList:
    """A decoded AxIS spike list.

    Attributes
    ----------
    source
        The file it was read from.
    spikes
        The MEA spike table (see the module docstring) of the analysed window,
        sorted by ``time_s``, with times from the start of the analysed section.
    settings
        The settings block, key -> value, keys stripped of their indentation. A key
        repeated in two sections is stored a second time as ``"<section>/<key>"``.
    layout
        The plate layout, from the ``Plate Type`` setting or else inferred from the
        electrode names (the smallest standard plate that has them all).
    declared_duration_s
        Length of the analysed section according to the settings (``Actual File
        Section Run``), or ``None`` if the settings do not say.
    last_spike_s
        Time of the last analysed spike (``None`` without spikes).
    qc_flags
        Problems found while reading (:data:`TRUNCATED`, ...); empty when clean.
    well_info
        The trailing ``Well Information`` block, well -> {property: value}
        (empty when the export has none).
    metadata
        Typed header values (:func:`~transforms.formats.axis_settings.header_metadata`).
    time_offset_s
        Subtracted from the file's times: the section start when the export counts
        its times from the file start (AxIS does, for a section not starting at 0).
    n_before_start, n_after_end
        Spikes left out of the analysed window: before its start, or more than
        :data:`END_SLACK_S` after its declared end.
    n_duplicates
        Rows dropped because they repeated an earlier row exactly.
    """

    source: str
    spikes: pa.Table
    settings: dict[str, str]
    layout: PlateLayout
    declared_duration_s: float | None
    last_spike_s: float | None
    qc_flags: tuple[str, ...]
    well_info: dict[str, dict[str, str]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    time_offset_s: float = 0.0
    n_before_start: int = 0
    n_after_end: int = 0
    n_duplicates: int = 0

    @property
    def truncated(self) -> bool:
        return TRUNCATED in self.qc_flags

    @property
    def named_wells(self) -> tuple[str, ...]:
        """Wells the export names, in plate order.

        A well with spikes, or listed in the ``Well Information`` block and not
        marked ``Active,False`` there (AxIS lists every well of the plate, and
        records only the active ones).
        """
        listed = {
            w
            for w, info in self.well_info.items()
            if info.get("Active", "").strip().lower() not in ("false", "0", "no")
        }
        named = set(pc.unique(self.spikes["well"]).to_pylist()) | listed
        return tuple(w for w in self.layout.wells if w in named)

    @property
    def analysis_duration_s(self) -> float:
        """The duration the spikes actually cover, to divide counts by.

        The declared duration when the export is complete (or the last spike, when
        it lies within :data:`END_SLACK_S` past it); when it is truncated (or says
        nothing) the time of the last spike, since nothing is known about the
        recording after it. Rates over the declared 18 minutes of a list cut after
        one minute would be 18 times too low.

        Raises
        ------
        SpecError
            If neither a declared duration nor any spike is available.
        """
        if self.declared_duration_s is not None and not self.truncated:
            return max(self.declared_duration_s, self.last_spike_s or 0.0)
        if self.last_spike_s is None or self.last_spike_s <= 0.0:
            raise SpecError(f"{self.source}: no duration in the settings and no spikes")
        return self.last_spike_s


class _Inflated(io.RawIOBase):
    """A spike list's bytes, gunzipped on the fly, refused past a size or a ratio.

    A gzip bomb (a few MB inflating to many GB) is stopped after at most
    ``max_bytes`` of output, or as soon as it has inflated more than ``max_ratio``
    times the compressed bytes read (checked once :data:`RATIO_CHECK_AFTER_BYTES`
    are out, so a small, very regular file passes); memory stays one block.
    """

    def __init__(self, path: Path, *, max_bytes: int, max_ratio: float) -> None:
        super().__init__()
        self._path = path
        try:
            self._raw = open(path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise DecodeError(f"{path}: cannot read spike list: {exc}") from exc
        self.gzipped = self._raw.read(2) == b"\x1f\x8b"
        self._raw.seek(0)
        self._src: Any = gzip.GzipFile(fileobj=self._raw, mode="rb") if self.gzipped else self._raw
        self._max_bytes, self._max_ratio = max_bytes, max_ratio
        self.bytes_out = 0

    def readable(self) -> bool:
        return True

    def read_block(self, size: int) -> bytes:
        try:
            data = self._src.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            what = "corrupt gzip stream" if self.gzipped else "cannot read spike list"
            raise DecodeError(f"{self._path}: {what}: {exc}") from exc
        self.bytes_out += len(data)
        if self.bytes_out > self._max_bytes:
            raise ResourceLimit(
                f"{self._path}: spike list larger than {self._max_bytes >> 20} MiB "
                f"{'once decompressed ' if self.gzipped else ''}(limit "
                f"${ENV_MAX_BYTES}); refused"
            )
        if self.gzipped and self.bytes_out > RATIO_CHECK_AFTER_BYTES:
            packed = max(1, self._raw.tell())
            if self.bytes_out > self._max_ratio * packed:
                raise ResourceLimit(
                    f"{self._path}: gzip stream inflates more than {self._max_ratio:g}:1 "
                    f"({packed} bytes gave {self.bytes_out} and more); refused as a "
                    "decompression bomb"
                )
        return data

    def close(self) -> None:
        try:
            if self._src is not self._raw:
                self._src.close()
            self._raw.close()
        finally:
            super().close()


def _text_blocks(stream: _Inflated, block_bytes: int) -> Iterator[str]:
    """The export as text blocks that end at line ends, newlines normalised to LF.

    Each block is decoded on its own (UTF-8, else Latin-1 as old Windows AxIS
    wrote); a leading UTF-8 BOM is dropped.
    """
    carry = b""
    first = True
    while True:
        data = stream.read_block(block_bytes)
        buf = carry + data
        if not data:
            if buf:
                yield _decode_text(buf)
            return
        if first:
            first = False
            if buf.startswith(b"\xef\xbb\xbf"):
                buf = buf[3:]
        cut = max(buf.rfind(b"\n"), buf.rfind(b"\r"))
        if cut == len(buf) - 1 and buf.endswith(b"\r"):
            cut = max(buf.rfind(b"\n", 0, cut), buf.rfind(b"\r", 0, cut))  # CRLF may be split
        if cut < 0:
            if len(buf) > MAX_LINE_BYTES:
                raise DecodeError(
                    f"{stream._path}: a line longer than {MAX_LINE_BYTES >> 20} MiB: "
                    "not a spike list"
                )
            carry = buf
            continue
        carry = buf[cut + 1 :]
        yield _decode_text(buf[: cut + 1])


def _decode_text(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # old exports from Windows AxIS; never fails
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _norm_header(cell: str) -> str:
    return re.sub(r"\s+", "", cell.strip().strip('"')).lower()


def _delimiter(header_line: str) -> str:
    """The separator of the export, from its header row: TAB, ``;`` or ``,``."""
    counts = {d: header_line.count(d) for d in ("\t", ";", ",")}
    if counts["\t"] and counts["\t"] >= counts[","]:
        return "\t"
    if counts[";"] > counts[","]:
        return ";"
    return ","


def parse_duration_s(text: str) -> float:
    """Parse an AxIS duration such as ``18m2s``, ``1h0m5.5s`` or ``250ms``, in seconds.

    Raises
    ------
    SpecError
        If the text is not made of number-unit parts.
    """
    compact = text.strip().replace(" ", "")
    parts = _DURATION_PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise SpecError(f"not an AxIS duration: {text!r}")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3}
    return sum(float(n) * scale[u.lower()] for n, u in parts)


def _declared_section(settings: dict[str, str], source: Path) -> tuple[float, float] | None:
    """(start_s, end_s) of the analysed file section, from the settings."""
    for key in _SECTION_KEYS:
        value = settings.get(key, "").strip()
        if not value:
            continue
        bounds = re.split(r"\s+to\s+", value)
        if len(bounds) != 2:
            raise DecodeError(f"{source}: setting {key!r} is {value!r}, expected 'A to B'")
        try:
            start_s, end_s = (parse_duration_s(b) for b in bounds)
        except SpecError as exc:
            raise DecodeError(f"{source}: setting {key!r}: {exc}") from exc
        if end_s < start_s:
            raise DecodeError(f"{source}: setting {key!r} ends before it starts: {value!r}")
        return start_s, end_s
    return None


def _parse_footer(text: str, delimiter: str) -> dict[str, dict[str, str]]:
    rows = [r for r in _csv_rows(text, delimiter) if any(c.strip() for c in r)]
    wells: list[str] = []
    info: dict[str, dict[str, str]] = {}
    for row in rows[1:]:  # rows[0] is the "Well Information" title
        label, cells = row[0].strip(), [c.strip() for c in row[1:]]
        if label.lower() == "well":
            wells = [c for c in cells if c]
            info = {w: {} for w in wells}
        elif wells and label:
            for well, value in zip(wells, cells, strict=False):
                info[well][label] = value
    return info


def _csv_rows(text: str, delimiter: str = ",") -> list[list[str]]:
    """Split CSV text into rows of cells (quotes honoured), for small blocks only."""
    return list(csv.reader(io.StringIO(text), delimiter=delimiter))


def _infer_layout(settings: dict[str, str], electrodes: pa.Array, source: Path) -> PlateLayout:
    plate_type = settings.get("Plate Type", "").strip()
    if plate_type:
        try:
            found = layout_for_plate_name(plate_type)
        except SpecError as exc:
            raise SpecError(f"{source}: {exc}") from exc
        if found is not None:
            return found
    names = pc.unique(electrodes).to_pylist()
    if not names:
        raise SpecError(f"{source}: no 'Plate Type' setting and no spikes to infer the plate")
    for n_wells in sorted(LAYOUTS):
        layout = LAYOUTS[n_wells]
        if all(name in layout.electrode_index for name in names):
            return layout
    raise SpecError(
        f"{source}: no 'Plate Type' setting and no standard plate has all electrodes "
        f"({', '.join(sorted(names)[:5])}, ...)"
    )


def _first_bad(mask: pa.ChunkedArray | pa.Array) -> int:
    """Index of the first true value of a boolean array."""
    return int(pc.index(mask, True).as_py())


def _split_head(
    lines: list[str], delimiter: str, n_cols: int, settings_cols: bool, source: Path
) -> tuple[list[tuple[int, list[str]]], int]:
    """Rows of the head (csv module: quoted values may span lines) and the tail's index.

    The head runs from the line after the header row until :data:`_QUIET_ROWS` rows
    in a row carry no setting; the rest (spike rows only) goes to the fast reader.
    """
    head: list[tuple[int, list[str]]] = []
    if not settings_cols:
        return head, 1
    consumed = 1  # lines[0] is the header row
    quiet = 0

    def feed():  # type: ignore[no-untyped-def]
        nonlocal consumed
        while consumed < len(lines):
            consumed += 1
            yield lines[consumed - 1] + "\n"

    reader = csv.reader(feed(), delimiter=delimiter)
    while quiet < _QUIET_ROWS and consumed < len(lines):
        first_line = consumed + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DecodeError(f"{source}: line {first_line}: malformed CSV: {exc}") from exc
        if not row or not any(c.strip() for c in row):
            quiet += 1
            continue
        if len(row) != n_cols:
            raise DecodeError(
                f"{source}: malformed spike-list rows: line {first_line} has {len(row)} "
                f"cells, the header row {n_cols}"
            )
        head.append((first_line, row))
        quiet = 0 if (row[0].strip() or row[1].strip()) else quiet + 1
    return head, consumed


def _read_tail(
    text: str, delimiter: str, n_cols: int, source: Path, first_line: int = 0
) -> pa.Table:
    """The spike rows after the head, every cell as a string (fast reader)."""
    try:
        return pacsv.read_csv(
            pa.BufferReader(text.encode("utf-8")),  # no Python file adapter (it aborts on OOM)
            read_options=pacsv.ReadOptions(
                column_names=[f"c{i}" for i in range(n_cols)], block_size=1 << 24
            ),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={f"c{i}": pa.string() for i in range(n_cols)},
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        where = f" (in the block from line {first_line})" if first_line else ""
        raise DecodeError(f"{source}: malformed spike-list rows{where}: {exc}") from exc


@dataclass
class _Columns:
    """The spike columns read so far, typed and compact (a few bytes per spike)."""

    time_s: list[pa.Array] = field(default_factory=list)
    amp_uv: list[pa.Array] = field(default_factory=list)
    #: Index into :data:`_ALL_ELECTRODES`.
    code: list[pa.Array] = field(default_factory=list)
    #: (first row, line of that row) of each block: rows map to lines block by block.
    starts: list[tuple[int, pa.Array | int]] = field(default_factory=list)
    rows: int = 0

    def line_of(self, row: int) -> int:
        for first, lines in reversed(self.starts):
            if row >= first:
                if isinstance(lines, int):
                    return lines + (row - first)
                return int(lines[row - first].as_py())
        return 0


def _all_electrodes() -> tuple[str, ...]:
    return tuple(sorted({e for layout in LAYOUTS.values() for e in layout.electrodes}))


_ALL_ELECTRODES: Final = _all_electrodes()
_ALL_ELECTRODES_ARRAY: Final = pa.array(_ALL_ELECTRODES, pa.string())


def _add_rows(
    cols: _Columns,
    time_txt: pa.Array,
    elec_txt: pa.Array,
    amp_txt: pa.Array,
    lines: pa.Array | int,
    *,
    source: Path,
    max_rows: int,
    max_abs_amplitude_mv: float,
) -> None:
    """Check and type one block of spike cells; append them to ``cols``.

    ``lines`` is the line number of every row, or of the first row when the rows
    are consecutive lines.
    """

    def line(i: int) -> int:
        return lines + i if isinstance(lines, int) else int(lines[i].as_py())

    time_txt, elec_txt, amp_txt = (
        pc.utf8_trim_whitespace(a) for a in (time_txt, elec_txt, amp_txt)
    )
    has_time = pc.not_equal(time_txt, "")
    has_elec = pc.not_equal(elec_txt, "")
    half = pc.not_equal(has_time, has_elec)
    if pc.any(half).as_py():
        i = _first_bad(half)
        raise DecodeError(
            f"{source}: line {line(i)}: a spike needs both a time and an "
            f"electrode, got time {time_txt[i].as_py()!r} and electrode {elec_txt[i].as_py()!r}"
        )
    if not pc.all(has_time).as_py():
        kept = pc.indices_nonzero(has_time)
        time_txt, elec_txt, amp_txt = (pc.take(a, kept) for a in (time_txt, elec_txt, amp_txt))
        lines = pc.take(
            lines
            if not isinstance(lines, int)
            else pa.array(range(lines, lines + len(has_time)), pa.int64()),
            kept,
        )
    n = len(time_txt)
    if n == 0:
        return
    if cols.rows + n > max_rows:
        raise ResourceLimit(
            f"{source}: more than {max_rows} spike rows (line {line(max_rows - cols.rows)}); "
            f"refused (limit ${ENV_MAX_ROWS}, or what ${ENV_WORKER_MEMORY_MB} leaves)"
        )
    for what, txt, present in (
        ("spike time", time_txt, None),
        ("amplitude", amp_txt, pc.not_equal(amp_txt, "")),
    ):
        bad = pc.invert(pc.match_substring_regex(txt, _NUMBER_RE))
        if present is not None:
            bad = pc.and_(present, bad)
        if pc.any(bad).as_py():
            i = _first_bad(bad)
            value = txt[i].as_py()
            if re.match(_DECIMAL_COMMA_RE, value):
                raise DecodeError(
                    f"{source}: line {line(i)}: {what} {value!r} has a decimal "
                    "comma; export with a decimal point (AxIS's own format)"
                )
            raise DecodeError(f"{source}: line {line(i)}: non-numeric {what} {_excerpt(value)}")
    time_s = pc.cast(time_txt, pa.float64())
    amp_present = pc.not_equal(amp_txt, "")
    amp_mv = pc.cast(pc.if_else(amp_present, amp_txt, pa.scalar(None, pa.string())), pa.float64())
    cells = {"spike time": time_txt, "amplitude": amp_txt}
    for what, values, bound in (
        ("spike time", time_s, math.inf),
        ("amplitude", amp_mv, max_abs_amplitude_mv),
    ):
        absurd = pc.fill_null(
            pc.or_(pc.invert(pc.is_finite(values)), pc.greater(pc.abs(values), bound)), False
        )
        if pc.any(absurd).as_py():
            i = _first_bad(absurd)
            value = values[i].as_py()
            limit = "" if not math.isfinite(value) else f" (|amplitude| above {bound:g} mV)"
            raise DecodeError(
                f"{source}: line {line(i)}: {what} {_excerpt(str(cells[what][i].as_py()))} "
                f"is {value!r}{limit}: not a physical value"
            )
    code = pc.index_in(elec_txt, value_set=_ALL_ELECTRODES_ARRAY)
    if code.null_count:
        i = _first_bad(pc.is_null(code))
        name = elec_txt[i].as_py()
        try:
            parse_electrode(name)
        except SpecError as exc:
            raise SpecError(f"{source}: line {line(i)}: {exc}") from exc
        raise SpecError(f"{source}: line {line(i)}: electrode {name!r} exists on no Axion plate")
    cols.starts.append((cols.rows, lines))
    cols.time_s.append(time_s)
    cols.amp_uv.append(pc.cast(pc.multiply(amp_mv, 1000.0), pa.float32()))
    cols.code.append(pc.cast(code, pa.int16()))
    cols.rows += n


def _excerpt(value: str, limit: int = 40) -> str:
    """A cell quoted for a message, cut to ``limit`` characters (5 million digits...)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def _budget_left_bytes() -> int | None:
    """Bytes this process's data limit (``RLIMIT_DATA``, the worker budget) still allows."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            used = next((int(x.split()[1]) << 10 for x in fh if x.startswith("VmData:")), 0)
    except OSError:
        return None  # not Linux: no way to tell
    return max(0, soft - used)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError as exc:
        raise InvalidArgument(f"${name} must be an integer, got {text!r}") from exc
    if value <= 0:
        raise InvalidArgument(f"${name} must be > 0, got {value}")
    return value


def read_spike_list(
    path: str | Path,
    *,
    truncation_fraction: float = 0.1,
    end_slack_s: float = END_SLACK_S,
    max_rows: int | None = None,
    max_bytes: int | None = None,
    max_gzip_ratio: float = MAX_GZIP_RATIO,
    max_abs_amplitude_mv: float = MAX_ABS_AMPLITUDE_MV,
    block_bytes: int = BLOCK_BYTES,
) -> SpikeList:
    """Read an AxIS spike-list export (``.csv`` or ``.csv.gz``, comma or TAB separated).

    The file is streamed: it is read (and gunzipped) in blocks of ``block_bytes``
    and only the typed spike columns are kept, about 14 bytes per spike.

    Parameters
    ----------
    path
        The export. Gzip is recognised by its magic bytes, not the suffix; a UTF-8
        BOM and CR, LF or CRLF line ends are accepted; the separator is detected
        from the header row.
    truncation_fraction
        The list is flagged :data:`TRUNCATED` when its last spike comes more than
        this fraction of the declared duration (and more than 1 s) before the
        declared end. Active cultures fire on some electrode every few
        milliseconds, so a long silent tail means the export was cut.
    end_slack_s
        A spike up to this long after the declared end (AxIS rounds the section
        to whole seconds) still belongs to the analysed window.
    max_rows
        Spike rows allowed in one file (default ``$NEUROCYTE_MAX_SPIKE_ROWS`` or
        :data:`MAX_ROWS`).
    max_bytes
        Bytes allowed in one file once decompressed (default
        ``$NEUROCYTE_MAX_SPIKE_LIST_MB`` or :data:`MAX_BYTES`).
    max_gzip_ratio
        A gzip stream inflating more than this many times is a decompression bomb.
    max_abs_amplitude_mv
        An amplitude beyond this (mV) is no extracellular spike: the Maestro's
        input range is a few mV (:data:`MAX_ABS_AMPLITUDE_MV`).
    block_bytes
        Size of the blocks read at once.

    Returns
    -------
    SpikeList
        Spikes of the analysed section, times from its start; spikes outside it
        are counted in the flags (``spikes_before_start:<n>``,
        ``spikes_after_end:<n>``), never an error; repeated rows (same time,
        electrode and amplitude) are kept once and counted
        (``duplicate_spikes:<n>``).

    Raises
    ------
    DecodeError
        If the file is unreadable, lacks the ``Time (s)``/``Electrode``/
        ``Amplitude(mV)`` columns, has ragged rows, or holds a non-numeric,
        non-finite or absurd time or amplitude or a decimal comma (the line
        number is given).
    SpecError
        If an electrode is not an Axion name or does not exist on the plate, or the
        plate type is unknown.
    ResourceLimit
        If the file holds more than ``max_rows`` spikes, inflates past
        ``max_bytes``, or is a gzip bomb.
    """
    source = Path(path)
    if not 0.0 <= truncation_fraction < 1.0:
        raise InvalidArgument(f"truncation_fraction must be in [0, 1), got {truncation_fraction}")
    if not (math.isfinite(end_slack_s) and end_slack_s >= 0.0):
        raise InvalidArgument(f"end_slack_s must be >= 0, got {end_slack_s}")
    if not max_abs_amplitude_mv > 0.0:
        raise InvalidArgument(f"max_abs_amplitude_mv must be > 0, got {max_abs_amplitude_mv}")
    budget_rows = None
    if max_rows is None:
        max_rows = _env_int(ENV_MAX_ROWS, MAX_ROWS)
        left = _budget_left_bytes()
        if left is not None:
            budget_rows = max(0, left // WORKER_BYTES_PER_SPIKE)
            block_bytes = min(block_bytes, max(1 << 16, left // 16))
            if budget_rows < max_rows:
                max_rows = budget_rows
            else:
                budget_rows = None
    max_bytes = (
        max_bytes if max_bytes is not None else _env_int(ENV_MAX_BYTES, MAX_BYTES >> 20) << 20
    )
    stream = _Inflated(source, max_bytes=max_bytes, max_ratio=max_gzip_ratio)
    if budget_rows is not None and not stream.gzipped:
        # about 27 bytes of text per spike row: refuse before reading what cannot fit
        expected = source.stat().st_size // 27
        if expected > budget_rows:
            stream.close()
            raise ResourceLimit(
                f"{source}: about {expected} spike rows need about "
                f"{expected * WORKER_BYTES_PER_SPIKE >> 20} MiB, more than the worker budget "
                f"leaves (${ENV_WORKER_MEMORY_MB})"
            )
    try:
        return _read_stream(
            stream,
            source,
            truncation_fraction=truncation_fraction,
            end_slack_s=end_slack_s,
            max_rows=max_rows,
            max_abs_amplitude_mv=max_abs_amplitude_mv,
            block_bytes=max(1 << 16, block_bytes),
        )
    finally:
        stream.close()


def _read_stream(
    stream: _Inflated,
    source: Path,
    *,
    truncation_fraction: float,
    end_slack_s: float,
    max_rows: int,
    max_abs_amplitude_mv: float,
    block_bytes: int,
) -> SpikeList:
    blocks = _text_blocks(stream, block_bytes)
    text = ""
    exhausted = False
    # The first block holds the header row and the settings block (grown until
    # the settings are over, up to MAX_HEAD_BYTES).
    while not exhausted and len(text) < block_bytes:
        nxt = next(blocks, None)
        exhausted = nxt is None
        text += nxt or ""
    if not text.strip():
        raise DecodeError(f"{source}: empty spike list")

    header_line = text.partition("\n")[0]
    delimiter = _delimiter(header_line)
    header = next(iter(_csv_rows(header_line, delimiter)), [])
    names = [_norm_header(c) for c in header]
    wanted = {"time": _TIME_HEADERS, "electrode": _ELECTRODE_HEADERS, "amp": _AMPLITUDE_HEADERS}
    col = {k: next((i for i, n in enumerate(names) if n in v), -1) for k, v in wanted.items()}
    missing = [next(iter(sorted(wanted[k]))) for k, i in col.items() if i < 0]
    if missing:
        raise DecodeError(
            f"{source}: not an AxIS spike list: header row {header_line[:120]!r} lacks "
            "'Time (s)', 'Electrode' and 'Amplitude(mV)' columns "
            f"(missing: {', '.join(missing)})"
        )
    n_cols = len(header)
    settings_cols = min(col.values()) >= 2  # columns 0-1 left of the spikes hold settings

    def find_footer(chunk: str) -> re.Match[str] | None:
        return next((m for m in _FOOTER_RE.finditer(chunk) if m.group(1) in (delimiter, "")), None)

    footer_parts: list[str] = []
    footer_size = 0

    def take_footer(rest: str) -> None:
        nonlocal footer_size
        footer_parts.append(rest)
        footer_size += len(rest)
        if footer_size > MAX_FOOTER_BYTES:
            raise DecodeError(
                f"{source}: 'Well Information' block larger than {MAX_FOOTER_BYTES >> 20} MiB"
            )

    while True:
        footer = find_footer(text)
        body = text[: footer.start()] if footer else text
        lines = body.split("\n")
        head, tail_from = _split_head(lines, delimiter, n_cols, settings_cols, source)
        if footer or exhausted or tail_from < len(lines) - 1:
            break
        if len(text) > MAX_HEAD_BYTES:
            raise DecodeError(
                f"{source}: settings block longer than {MAX_HEAD_BYTES >> 20} MiB: not a spike list"
            )
        nxt = next(blocks, None)
        exhausted = nxt is None
        text += nxt or ""
    if footer:
        take_footer(text[footer.start() :])

    cols = _Columns()
    pairs: list[tuple[str | None, str | None]] = []
    if settings_cols:
        pairs.append((header[0], header[1]))
        pairs += [(row[0], row[1]) for _, row in head]

    def add(cells: list[pa.Array], lines: pa.Array | int) -> None:
        _add_rows(
            cols,
            cells[0],
            cells[1],
            cells[2],
            lines,
            source=source,
            max_rows=max_rows,
            max_abs_amplitude_mv=max_abs_amplitude_mv,
        )

    if head:
        add(
            [pa.array([row[col[k]] for _, row in head], pa.string()) for k in col],
            pa.array([ln for ln, _ in head], pa.int64()),
        )

    def add_tail(tail_text: str, first_line: int) -> None:
        if not tail_text.strip():
            return
        table = _read_tail(tail_text, delimiter, n_cols, source, first_line)
        if table.num_rows == 0:
            return
        if settings_cols and table.num_rows:
            with_key = table.filter(pc.not_equal(pc.utf8_trim_whitespace(table["c0"]), ""))
            if len(pairs) + with_key.num_rows > MAX_SETTINGS:
                raise DecodeError(f"{source}: more than {MAX_SETTINGS} settings rows")
            pairs.extend(zip(with_key["c0"].to_pylist(), with_key["c1"].to_pylist(), strict=True))
        cells = [pa.concat_arrays(table[f"c{col[k]}"].chunks) for k in col]
        add(cells, first_line)

    # The rest of the first text, then block after block, until the footer.
    add_tail("\n".join(lines[tail_from:]), tail_from + 1)
    line_no = body.count("\n") + 1  # the first line of the next block (text ends a line)
    for chunk in blocks if not exhausted else ():
        if footer_parts:
            take_footer(chunk)
            continue
        found = find_footer(chunk)
        data = chunk[: found.start()] if found else chunk
        add_tail(data, line_no)
        line_no += data.count("\n")
        if found:
            take_footer(chunk[found.start() :])
    footer_text = "".join(footer_parts)
    settings = collect_settings(pairs)
    return _assemble(
        cols,
        settings,
        pairs,
        footer_text,
        delimiter,
        source,
        truncation_fraction=truncation_fraction,
        end_slack_s=end_slack_s,
    )


def _assemble(
    cols: _Columns,
    settings: dict[str, str],
    pairs: list[tuple[str | None, str | None]],
    footer_text: str,
    delimiter: str,
    source: Path,
    *,
    truncation_fraction: float,
    end_slack_s: float,
) -> SpikeList:
    """The :class:`SpikeList` from the typed columns: plate, order, duplicates, window."""
    time_s = pa.chunked_array(cols.time_s, pa.float64()).combine_chunks()
    amp_uv = pa.chunked_array(cols.amp_uv, pa.float32()).combine_chunks()
    code = pa.chunked_array(cols.code, pa.int16()).combine_chunks()
    cols.time_s.clear()
    cols.amp_uv.clear()
    cols.code.clear()
    used = pc.unique(code)
    layout = _infer_layout(settings, pc.take(_ALL_ELECTRODES_ARRAY, used), source)
    on_plate = pc.is_in(pc.take(_ALL_ELECTRODES_ARRAY, used), value_set=pa.array(layout.electrodes))
    if not pc.all(on_plate).as_py():
        bad_code = used[_first_bad(pc.invert(on_plate))]
        row = _first_bad(pc.equal(code, bad_code))
        raise SpecError(
            f"{source}: line {cols.line_of(row)}: electrode "
            f"{_ALL_ELECTRODES[bad_code.as_py()]!r} does not exist on a {layout.name} plate"
        )
    flags: list[str] = []
    n = len(time_s)
    order = None
    if n > 1:
        t = time_s
        if pc.any(pc.less(t.slice(1), t.slice(0, n - 1))).as_py():
            flags.append(UNSORTED)
            order = pc.sort_indices(time_s)
    if order is not None:
        time_s, amp_uv, code = (pc.take(a, order) for a in (time_s, amp_uv, code))
    del order
    time_s, amp_uv, code, n_dup = _drop_duplicates(time_s, amp_uv, code)
    if n_dup:
        flags.append(f"{DUPLICATE_SPIKES}:{n_dup}")
    wells_of = pa.array([e.split("_", 1)[0] for e in _ALL_ELECTRODES], pa.string())
    spikes = pa.table(
        [
            pc.take(_ALL_ELECTRODES_ARRAY, code),
            pc.take(wells_of, code),
            time_s,
            amp_uv,
        ],
        schema=SPIKE_SCHEMA,
    )
    del time_s, amp_uv, code

    section = _declared_section(settings, source)
    declared = None if section is None else section[1] - section[0]
    offset_s = 0.0
    if section is None:
        flags.append(DURATION_UNKNOWN)
    elif section[0] > 0.0:
        # AxIS counts the times of a section that starts later from the file start
        # (27m0s to 42m0s: 1620.9 ... 2520.7 s); a re-based export from the section
        # start. Take the reading that puts more spikes inside the section.
        t = spikes["time_s"]
        start_s, end_s = section
        in_file = pc.sum(
            pc.and_(pc.greater_equal(t, start_s), pc.less_equal(t, end_s + end_slack_s))
        )
        in_rel = pc.sum(
            pc.and_(pc.greater_equal(t, 0.0), pc.less_equal(t, end_s - start_s + end_slack_s))
        )
        if (in_file.as_py() or 0) >= (in_rel.as_py() or 0):
            offset_s = start_s
        flags.append(SECTION_OFFSET)
    spikes, n_before, n_after = window_spikes(
        spikes, offset_s=offset_s, duration_s=declared, end_slack_s=end_slack_s
    )
    if n_before:
        flags.append(f"{SPIKES_BEFORE_START}:{n_before}")
    if n_after:
        flags.append(f"{SPIKES_AFTER_END}:{n_after}")
    last_spike_s = float(pc.max(spikes["time_s"]).as_py()) if spikes.num_rows else None
    if last_spike_s is None:
        flags.append(NO_SPIKES)
    elif declared is not None:
        gap_s = declared - last_spike_s
        if gap_s > max(1.0, truncation_fraction * declared):
            flags.append(TRUNCATED)

    metadata = header_metadata(pairs)
    metadata["time_offset_s"] = offset_s
    return SpikeList(
        source=str(source),
        spikes=spikes,
        settings=settings,
        layout=layout,
        declared_duration_s=declared,
        last_spike_s=last_spike_s,
        qc_flags=tuple(flags),
        well_info=_parse_footer(footer_text, delimiter) if footer_text else {},
        metadata=metadata,
        time_offset_s=offset_s,
        n_before_start=n_before,
        n_after_end=n_after,
        n_duplicates=n_dup,
    )


def _drop_duplicates(
    time_s: pa.Array, amp: pa.Array, code: pa.Array
) -> tuple[pa.Array, pa.Array, pa.Array, int]:
    """Keep the first of rows with the same time, electrode and amplitude.

    The rows are in time order; only rows sharing a time can repeat each other,
    so the search runs over those alone and the order of the others is kept.
    """
    n = len(time_s)
    if n < 2:
        return time_s, amp, code, 0
    t = time_s.to_numpy(zero_copy_only=False)
    tied = np.flatnonzero(t[1:] == t[:-1])
    if tied.size == 0:
        return time_s, amp, code, 0
    rows = np.unique(np.concatenate([tied, tied + 1]))
    sub = pa.table(
        {
            "t": pc.take(time_s, pa.array(rows)),
            "c": pc.take(code, pa.array(rows)),
            "a": pc.fill_null(pc.take(amp, pa.array(rows)), math.nan),
            "row": pa.array(rows),
        }
    )
    sub = sub.sort_by(
        [("t", "ascending"), ("c", "ascending"), ("a", "ascending"), ("row", "ascending")]
    )
    ts, cs, as_ = (sub[k].to_numpy() for k in ("t", "c", "a"))
    same = (
        (ts[1:] == ts[:-1])
        & (cs[1:] == cs[:-1])
        & ((as_[1:] == as_[:-1]) | (np.isnan(as_[1:]) & np.isnan(as_[:-1])))
    )
    drop = sub["row"].to_numpy()[1:][same]
    if drop.size == 0:
        return time_s, amp, code, 0
    keep = np.ones(n, dtype=bool)
    keep[drop] = False
    mask = pa.array(keep)
    return (
        pc.filter(time_s, mask),
        pc.filter(amp, mask),
        pc.filter(code, mask),
        int(drop.size),
    )


def plate_spikes(sl: SpikeList, kind: str = "spike_list") -> PlateSpikes:
    """A spike list as the metrics' input: only the wells it names get rows."""
    meta = dict(sl.metadata)
    if sl.well_info:
        meta["well_info"] = sl.well_info
    return PlateSpikes(
        kind,
        sl.spikes,
        sl.layout,
        sl.analysis_duration_s,
        sl.declared_duration_s,
        sl.metadata.get("sampling_rate_hz"),
        sl.metadata.get("recorded_at"),
        sl.qc_flags,
        None,
        {},
        named_wells=sl.named_wells,
        metadata=meta,
    )
