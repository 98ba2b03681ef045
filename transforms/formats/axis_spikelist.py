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

Spikes come out in the project's MEA spike-table convention: ``electrode``
(``A1_23``), ``well`` (``A1``), ``time_s`` (float64, from recording start) and
``amplitude_uv`` (float32, nullable; the export gives mV), sorted by ``time_s``.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from transforms.errors import DecodeError, InvalidArgument, SpecError
from transforms.recording.plate import LAYOUTS, PlateLayout, layout_for_wells, parse_electrode
from transforms.recording.spikes import MEA_SPIKE_SCHEMA

#: The columns of the spike part, by header text (case and spaces ignored).
_TIME_HEADER: Final = "time(s)"
_ELECTRODE_HEADER: Final = "electrode"
_AMPLITUDE_HEADER: Final = "amplitude(mv)"
_FOOTER_RE: Final = re.compile(r"^\"?Well Information\"?\s*(,|$)", re.MULTILINE)
_NUMBER_RE: Final = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
_WELLS_IN_PLATE_TYPE: Final = re.compile(r"(\d+)\s*-?\s*well|mea\s*(\d+)", re.IGNORECASE)
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?)\s*(h|ms|m|s)", re.IGNORECASE)

#: Settings naming the analysed section, best first (``0s to 18m2s``).
_SECTION_KEYS: Final = ("Actual File Section Run", "Requested File Section")

#: Flag: spikes stop well before the declared end of the recording.
TRUNCATED: Final = "truncated"
#: Flag: no duration could be read from the settings.
DURATION_UNKNOWN: Final = "duration_unknown"
#: Flag: the list holds no spike at all.
NO_SPIKES: Final = "no_spikes"
#: Flag: spikes lie after the declared end of the recording.
SPIKES_AFTER_END: Final = "spikes_after_declared_end"
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
        The MEA spike table (see the module docstring), sorted by ``time_s``.
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
        Time of the last spike (``None`` without spikes).
    qc_flags
        Problems found while reading (:data:`TRUNCATED`, ...); empty when clean.
    well_info
        The trailing ``Well Information`` block, well -> {property: value}
        (empty when the export has none).
    """

    source: str
    spikes: pa.Table
    settings: dict[str, str]
    layout: PlateLayout
    declared_duration_s: float | None
    last_spike_s: float | None
    qc_flags: tuple[str, ...]
    well_info: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return TRUNCATED in self.qc_flags

    @property
    def analysis_duration_s(self) -> float:
        """The duration the spikes actually cover, to divide counts by.

        The declared duration when the export is complete; when it is truncated (or
        says nothing) the time of the last spike, since nothing is known about the
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


def _collect_settings(keys: list[str | None], values: list[str | None]) -> dict[str, str]:
    settings: dict[str, str] = {}
    section = ""
    for raw_key, raw_value in zip(keys, values, strict=True):
        key = (raw_key or "").strip()
        if not key:
            continue
        value = (raw_value or "").strip()
        indented = (raw_key or "")[:1].isspace()
        if not indented:
            section = key
        if key not in settings:
            settings[key] = value
        elif value:
            # A key repeated in another section (e.g. two "Threshold" lines).
            settings[f"{section}/{key}"] = value
    return settings


def _parse_footer(text: str) -> dict[str, dict[str, str]]:
    rows = [r for r in _csv_rows(text) if any(c.strip() for c in r)]
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


def _csv_rows(text: str) -> list[list[str]]:
    """Split CSV text into rows of cells (quotes honoured), for small blocks only."""
    return list(csv.reader(io.StringIO(text)))


def _infer_layout(settings: dict[str, str], electrodes: pa.Array, source: Path) -> PlateLayout:
    plate_type = settings.get("Plate Type", "")
    m = _WELLS_IN_PLATE_TYPE.search(plate_type)
    if m:
        n_wells = int(m.group(1) or m.group(2))
        try:
            return layout_for_wells(n_wells)
        except SpecError as exc:
            raise SpecError(f"{source}: plate type {plate_type!r}: {exc}") from exc
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


def read_spike_list(path: str | Path, *, truncation_fraction: float = 0.1) -> SpikeList:
    """Read an AxIS spike-list CSV export (``.csv`` or ``.csv.gz``).

    Parameters
    ----------
    path
        The export. Gzip is recognised by its magic bytes, not the suffix.
    truncation_fraction
        The list is flagged :data:`TRUNCATED` when its last spike comes more than
        this fraction of the declared duration (and more than 1 s) before the
        declared end. Active cultures fire on some electrode every few
        milliseconds, so a long silent tail means the export was cut.

    Returns
    -------
    SpikeList

    Raises
    ------
    DecodeError
        If the file is unreadable, lacks the ``Time (s)``/``Electrode``/
        ``Amplitude(mV)`` columns, has ragged rows, or holds a non-numeric time or
        amplitude (the line number is given).
    SpecError
        If an electrode is not an Axion name or does not exist on the plate, or the
        plate type is unknown.
    """
    source = Path(path)
    if not 0.0 <= truncation_fraction < 1.0:
        raise InvalidArgument(f"truncation_fraction must be in [0, 1), got {truncation_fraction}")
    raw = _read_bytes(source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # old exports from Windows AxIS; never fails
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise DecodeError(f"{source}: empty spike list")

    footer = _FOOTER_RE.search(text)
    body, footer_text = (text[: footer.start()], text[footer.start() :]) if footer else (text, "")
    header_line, _, data_text = body.partition("\n")
    header = next(iter(_csv_rows(header_line)), [])
    names = [_norm_header(c) for c in header]
    wanted = {_TIME_HEADER: "time", _ELECTRODE_HEADER: "electrode", _AMPLITUDE_HEADER: "amp"}
    missing = [h for h in wanted if h not in names]
    if missing:
        raise DecodeError(
            f"{source}: not an AxIS spike list: header row {header_line[:120]!r} lacks "
            "'Time (s)', 'Electrode' and 'Amplitude(mV)' columns "
            f"(missing: {', '.join(missing)})"
        )
    col = {wanted[h]: names.index(h) for h in wanted}
    n_cols = len(header)

    try:
        table = pacsv.read_csv(
            io.BytesIO(data_text.encode("utf-8")),
            read_options=pacsv.ReadOptions(
                column_names=[f"c{i}" for i in range(n_cols)], block_size=1 << 24
            ),
            parse_options=pacsv.ParseOptions(newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={f"c{i}": pa.string() for i in range(n_cols)},
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise DecodeError(f"{source}: malformed spike-list rows: {exc}") from exc

    # The settings block shares the rows with the spikes, in columns 0-1.
    settings_keys: list[str | None] = []
    settings_values: list[str | None] = []
    if min(col.values()) >= 2:  # columns 0-1 left of the spikes hold the settings
        settings_keys.append(header[0])
        settings_values.append(header[1])
    if settings_keys and table.num_rows:
        has_key = pc.not_equal(pc.utf8_trim_whitespace(table["c0"]), "")
        with_key = table.filter(has_key)
        settings_keys += with_key["c0"].to_pylist()
        settings_values += with_key["c1"].to_pylist()
    settings = _collect_settings(settings_keys, settings_values)

    time_txt = pc.utf8_trim_whitespace(table[f"c{col['time']}"])
    elec_txt = pc.utf8_trim_whitespace(table[f"c{col['electrode']}"])
    amp_txt = pc.utf8_trim_whitespace(table[f"c{col['amp']}"])
    has_time = pc.not_equal(time_txt, "")
    has_elec = pc.not_equal(elec_txt, "")
    half = pc.not_equal(has_time, has_elec)
    if pc.any(half).as_py():
        i = _first_bad(half)
        raise DecodeError(
            f"{source}: line {i + 2}: a spike needs both a time and an electrode, got "
            f"time {time_txt[i].as_py()!r} and electrode {elec_txt[i].as_py()!r}"
        )
    keep = has_time
    time_txt, elec_txt, amp_txt = (pc.filter(a, keep) for a in (time_txt, elec_txt, amp_txt))
    line_of = pc.filter(pa.array(range(2, table.num_rows + 2)), keep)

    bad_time = pc.invert(pc.match_substring_regex(time_txt, _NUMBER_RE))
    if pc.any(bad_time).as_py():
        i = _first_bad(bad_time)
        raise DecodeError(
            f"{source}: line {line_of[i].as_py()}: non-numeric spike time {time_txt[i].as_py()!r}"
        )
    amp_present = pc.not_equal(amp_txt, "")
    bad_amp = pc.and_(amp_present, pc.invert(pc.match_substring_regex(amp_txt, _NUMBER_RE)))
    if pc.any(bad_amp).as_py():
        i = _first_bad(bad_amp)
        raise DecodeError(
            f"{source}: line {line_of[i].as_py()}: non-numeric amplitude {amp_txt[i].as_py()!r}"
        )
    time_s = pc.cast(time_txt, pa.float64())
    if pc.any(pc.less(time_s, 0.0)).as_py():
        i = _first_bad(pc.less(time_s, 0.0))
        raise DecodeError(f"{source}: line {line_of[i].as_py()}: negative spike time")
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

    last_spike_s = float(pc.max(spikes["time_s"]).as_py()) if spikes.num_rows else None
    section = _declared_section(settings, source)
    declared = None if section is None else section[1] - section[0]
    if section is None:
        flags.append(DURATION_UNKNOWN)
    elif section[0] > 0.0:
        # Times may then count from the file start, not the section start: the
        # [0, duration] analysis window would be wrong, so make it visible.
        flags.append(SECTION_OFFSET)
    if last_spike_s is None:
        flags.append(NO_SPIKES)
    elif declared is not None:
        gap_s = declared - last_spike_s
        if gap_s > max(1.0, truncation_fraction * declared):
            flags.append(TRUNCATED)
        elif gap_s < 0.0:
            flags.append(SPIKES_AFTER_END)

    return SpikeList(
        source=str(source),
        spikes=spikes,
        settings=settings,
        layout=layout,
        declared_duration_s=declared,
        last_spike_s=last_spike_s,
        qc_flags=tuple(flags),
        well_info=_parse_footer(footer_text) if footer_text else {},
    )
