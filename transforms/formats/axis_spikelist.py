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
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from transforms.errors import DecodeError, InvalidArgument, SpecError
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


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DecodeError(f"{path}: cannot read spike list: {exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DecodeError(f"{path}: corrupt gzip stream: {exc}") from exc
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return raw


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


def _read_tail(text: str, delimiter: str, n_cols: int, source: Path) -> pa.Table:
    """The spike rows after the head, every cell as a string (fast reader)."""
    try:
        return pacsv.read_csv(
            io.BytesIO(text.encode("utf-8")),
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
        raise DecodeError(f"{source}: malformed spike-list rows: {exc}") from exc


def read_spike_list(
    path: str | Path, *, truncation_fraction: float = 0.1, end_slack_s: float = END_SLACK_S
) -> SpikeList:
    """Read an AxIS spike-list export (``.csv`` or ``.csv.gz``, comma or TAB separated).

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

    Returns
    -------
    SpikeList
        Spikes of the analysed section, times from its start; spikes outside it
        are counted in the flags (``spikes_before_start:<n>``,
        ``spikes_after_end:<n>``), never an error.

    Raises
    ------
    DecodeError
        If the file is unreadable, lacks the ``Time (s)``/``Electrode``/
        ``Amplitude(mV)`` columns, has ragged rows, or holds a non-numeric time or
        amplitude or a decimal comma (the line number is given).
    SpecError
        If an electrode is not an Axion name or does not exist on the plate, or the
        plate type is unknown.
    """
    source = Path(path)
    if not 0.0 <= truncation_fraction < 1.0:
        raise InvalidArgument(f"truncation_fraction must be in [0, 1), got {truncation_fraction}")
    if not (math.isfinite(end_slack_s) and end_slack_s >= 0.0):
        raise InvalidArgument(f"end_slack_s must be >= 0, got {end_slack_s}")
    raw = _read_bytes(source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # old exports from Windows AxIS; never fails
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise DecodeError(f"{source}: empty spike list")

    header_line = text.partition("\n")[0]
    delimiter = _delimiter(header_line)
    footer = None
    for m in _FOOTER_RE.finditer(text):
        if m.group(1) in (delimiter, ""):
            footer = m
            break
    body, footer_text = (text[: footer.start()], text[footer.start() :]) if footer else (text, "")
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

    lines = body.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    head, tail_from = _split_head(lines, delimiter, n_cols, settings_cols, source)
    tail_text = "\n".join(lines[tail_from:])
    if not tail_text.strip():
        table = pa.table({f"c{i}": pa.array([], pa.string()) for i in range(n_cols)})
    else:
        table = _read_tail(tail_text, delimiter, n_cols, source)

    # The settings block shares the rows with the spikes, in columns 0-1.
    pairs: list[tuple[str | None, str | None]] = []
    if settings_cols:
        pairs.append((header[0], header[1]))
        pairs += [(row[0], row[1]) for _, row in head]
        if table.num_rows:
            with_key = table.filter(pc.not_equal(pc.utf8_trim_whitespace(table["c0"]), ""))
            pairs += list(zip(with_key["c0"].to_pylist(), with_key["c1"].to_pylist(), strict=True))
    settings = collect_settings(pairs)

    def column(k: str) -> pa.Array:
        i = col[k]
        head_cells = pa.array([row[i] for _, row in head], pa.string())
        return pc.utf8_trim_whitespace(
            pa.concat_arrays([head_cells, *table[f"c{i}"].chunks]) if table.num_rows else head_cells
        )

    time_txt, elec_txt, amp_txt = column("time"), column("electrode"), column("amp")
    all_lines = pa.concat_arrays(
        [
            pa.array([ln for ln, _ in head], pa.int64()),
            pa.array(range(tail_from + 1, tail_from + 1 + table.num_rows), pa.int64()),
        ]
    )
    has_time = pc.not_equal(time_txt, "")
    has_elec = pc.not_equal(elec_txt, "")
    half = pc.not_equal(has_time, has_elec)
    if pc.any(half).as_py():
        i = _first_bad(half)
        raise DecodeError(
            f"{source}: line {all_lines[i].as_py()}: a spike needs both a time and an "
            f"electrode, got time {time_txt[i].as_py()!r} and electrode {elec_txt[i].as_py()!r}"
        )
    time_txt, elec_txt, amp_txt, line_of = (
        pc.filter(a, has_time) for a in (time_txt, elec_txt, amp_txt, all_lines)
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
                    f"{source}: line {line_of[i].as_py()}: {what} {value!r} has a decimal "
                    "comma; export with a decimal point (AxIS's own format)"
                )
            raise DecodeError(f"{source}: line {line_of[i].as_py()}: non-numeric {what} {value!r}")
    time_s = pc.cast(time_txt, pa.float64())
    amp_present = pc.not_equal(amp_txt, "")
    amp_mv = pc.cast(pc.if_else(amp_present, amp_txt, pa.scalar(None, pa.string())), pa.float64())
    amplitude_uv = pc.cast(pc.multiply(amp_mv, 1000.0), pa.float32())

    electrode = pc.cast(elec_txt, pa.string())
    layout = _infer_layout(settings, electrode, source)
    on_plate = pc.is_in(electrode, value_set=pa.array(layout.electrodes))
    if not pc.all(on_plate).as_py():
        i = _first_bad(pc.invert(on_plate))
        name = electrode[i].as_py()
        try:
            parse_electrode(name)
        except SpecError as exc:
            raise SpecError(f"{source}: line {line_of[i].as_py()}: {exc}") from exc
        raise SpecError(
            f"{source}: line {line_of[i].as_py()}: electrode {name!r} does not exist on a "
            f"{layout.name} plate"
        )
    well = pc.struct_field(pc.extract_regex(electrode, r"^(?P<well>[A-P]\d{1,2})_"), "well")

    spikes = pa.table(
        [electrode, pc.cast(well, pa.string()), time_s, amplitude_uv], schema=SPIKE_SCHEMA
    )
    flags: list[str] = []
    if spikes.num_rows > 1:
        t = spikes["time_s"]
        if pc.any(pc.less(t.slice(1), t.slice(0, len(t) - 1))).as_py():
            flags.append(UNSORTED)
            spikes = spikes.take(pc.sort_indices(spikes, sort_keys=[("time_s", "ascending")]))

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
