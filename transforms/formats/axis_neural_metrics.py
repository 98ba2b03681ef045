"""Axion's Neural Metric Tool (NMT) exports: ``*_neuralMetrics.csv``.

AxIS Navigator's Neural Metric Tool (and AxIS's Statistics Compiler) write one CSV
per recording: a settings block of ``key,value`` rows in AxIS's style (section titles
not indented, keys under them indented; the recording's own settings such as
``Original File Time``, ``Plate Serial Number``, ``Recording Name``, then the NMT's:
analysis window, active-electrode criterion, burst and network-burst detectors,
synchrony window), then blocks of metric rows whose columns are wells:

* ``Well Averages,A1,A2,...`` — one column per well; a ``Treatment/ID`` row (kept as
  the well's treatment), category rows without values (``Activity Metrics``,
  ``Burst Metrics``, ...: the category of the rows below), then one row per metric
  (``Number of Spikes``, ``Mean Firing Rate (Hz)``, ``Burst Duration - Avg (sec)``);
* a per-electrode block: ``Measurement,A1_11,A1_12,...`` (also ``Electrode Averages``;
  electrode names ``A1_11`` or ``A1 11``), the same metric rows per electrode;
* ``Treatment Averages`` blocks (columns are treatments, already averaged over wells)
  and the ``Well Information`` block are not metrics of a well: the first is skipped,
  the second gives treatments.

A block ends at a blank row or at the next block's header. Cells are separated by
commas, TABs or (a European Excel export) semicolons, detected from the first block
header; with semicolons a decimal comma is read as a decimal point. Empty cells,
``NaN`` and ``N/A`` are missing values (kept as NULL, never 0); any other value that
is not a number is an error naming the file and the line. UTF-8 with or without BOM
(Latin-1 accepted for ``kΩ``), CR/LF/CRLF, plain or gzipped.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from transforms.errors import DecodeError, UnsupportedRecording
from transforms.formats.axis_settings import collect_settings, header_metadata, parse_float

Level = Literal["well", "electrode"]

_WELL: Final = re.compile(r"^[A-P](?:[1-9]|1\d|2[0-4])$")
_ELECTRODE: Final = re.compile(r"^([A-P](?:[1-9]|1\d|2[0-4]))[_ ](\d{2})$")
_UNIT: Final = re.compile(r"^(?P<name>.*?)\s*\((?P<unit>[^()]*)\)\s*$")
_MISSING: Final = frozenset({"", "nan", "n/a", "na", "-", "--"})
#: Labels of block headers whose columns are not wells (skipped).
_SKIPPED_BLOCKS: Final = ("treatment averages", "condition averages")
_WELL_INFO: Final = "well information"
_TREATMENT_ROWS: Final = ("treatment/id", "treatment")
_DELIMITERS: Final = (",", "\t", ";")
#: A line must hold this marker (any case) before the reader takes it for an NMT export.
MARKERS: Final = ("well averages", "measurement", "electrode averages")


@dataclass(frozen=True)
class VendorMetric:
    """One metric value of one well (or one electrode) as the NMT wrote it.

    Attributes
    ----------
    well, electrode
        The well; the electrode (``A1_11``) for rows of a per-electrode block, else None.
    level
        ``well`` (a ``Well Averages`` block) or ``electrode``.
    category
        The category row above the metric (``Activity Metrics``), or None.
    metric, label, unit
        The metric's name without its unit (``Mean Firing Rate``), as written
        (``Mean Firing Rate (Hz)``), and the unit (``Hz``; None when not stated).
    value
        The number; None for an empty or ``NaN`` cell.
    line
        The line of the file the value is on (1-based).
    """

    well: str
    electrode: str | None
    level: Level
    category: str | None
    metric: str
    label: str
    unit: str | None
    value: float | None
    line: int


@dataclass(frozen=True)
class NeuralMetrics:
    """A parsed NMT export.

    Attributes
    ----------
    rows
        Every metric value, in file order.
    settings
        The settings block as ``key -> value`` (see :func:`collect_settings`).
    metadata
        Typed header values (:func:`header_metadata`) plus the NMT's analysis
        settings (``nmt_*`` keys, see :func:`nmt_settings`).
    treatments
        Well -> treatment from the ``Treatment/ID`` row or the ``Well Information`` block.
    delimiter
        The cell separator found.
    blocks
        The block labels read, in order (``Well Averages``, ``Measurement``).
    """

    rows: tuple[VendorMetric, ...]
    settings: dict[str, str]
    metadata: dict[str, Any]
    treatments: dict[str, str] = field(default_factory=dict)
    delimiter: str = ","
    blocks: tuple[str, ...] = ()

    @property
    def wells(self) -> tuple[str, ...]:
        """The wells with at least one row, in file order."""
        return tuple(dict.fromkeys(r.well for r in self.rows))


def split_unit(label: str) -> tuple[str, str | None]:
    """``Mean Firing Rate (Hz)`` -> (``Mean Firing Rate``, ``Hz``); no unit -> None."""
    text = " ".join(label.split())
    m = _UNIT.match(text)
    if not m or not m.group("name"):
        return text, None
    unit = m.group("unit").strip()
    return m.group("name"), unit or None


def _decode_text(raw: bytes, name: str) -> str:
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DecodeError(f"{name}: corrupt gzip data ({exc})") from exc
    if b"\x00" in raw:
        raise DecodeError(f"{name}: binary content, not a Neural Metric Tool CSV")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # an Excel save in the Windows code page (kΩ)


def _detect_delimiter(lines: Sequence[str], name: str) -> str:
    for line in lines:
        low = line.strip().lower()
        if not low.startswith(MARKERS):
            continue
        counts = {d: line.count(d) for d in _DELIMITERS}
        best = max(_DELIMITERS, key=lambda d: counts[d])
        if counts[best]:
            return best
    raise UnsupportedRecording(
        f"{name}: not a Neural Metric Tool export (no 'Well Averages' or per-electrode "
        "'Measurement' block)"
    )


def _number(cell: str, *, decimal_comma: bool, name: str, line: int) -> float | None:
    text = cell.strip()
    if text.lower() in _MISSING:
        return None
    if decimal_comma:
        text = text.replace(",", ".")
    try:
        value = float(text)
    except ValueError:
        if not decimal_comma and re.fullmatch(r"[-+]?\d+,\d+", text):
            raise DecodeError(
                f"{name}, line {line}: decimal comma in {cell!r} (a European Excel export "
                "saved with commas as separators); export with '.' as the decimal point"
            ) from None
        raise DecodeError(f"{name}, line {line}: {cell!r} is not a number") from None
    return value if math.isfinite(value) else None


#: Labels of block headers (a header with another label needs two or more columns, so
#: a setting whose value happens to be a well name is not taken for one).
_HEADER_LABELS: Final = frozenset(
    {"well averages", "measurement", "electrode averages", "electrode measurements", "well"}
)


def _header_kind(cells: Sequence[str]) -> Level | None:
    names = [c.strip() for c in cells[1:] if c.strip()]
    label = " ".join((cells[0] if cells else "").split()).lower()
    if not names or (len(names) < 2 and label not in _HEADER_LABELS):
        return None
    if all(_WELL.match(c) for c in names):
        return "well"
    if all(_ELECTRODE.match(c) for c in names):
        return "electrode"
    return None


def read_neural_metrics(path: str | Path) -> NeuralMetrics:
    """Parse an NMT ``*_neuralMetrics.csv`` (plain or gzipped).

    Raises
    ------
    UnsupportedRecording
        If the file has no metric block at all.
    DecodeError
        A value that is not a number (naming the line), a metric block without a
        metric row, or unreadable bytes.
    """
    path = Path(path)
    name = path.name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DecodeError(f"{name}: cannot read ({exc})") from exc
    text = _decode_text(raw, name)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    delimiter = _detect_delimiter(lines, name)
    decimal_comma = delimiter == ";"
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)

    pairs: list[tuple[str, str]] = []
    rows: list[VendorMetric] = []
    treatments: dict[str, str] = {}
    blocks: list[str] = []
    columns: list[tuple[str, str | None]] | None = None  # (well, electrode) per cell
    level: Level = "well"
    mode = "settings"  # settings | metrics | info | skip
    category: str | None = None
    n_block_rows = 0
    for cells in reader:
        line = reader.line_num  # the physical line a row ends on (quoted values may span lines)
        label_raw = cells[0] if cells else ""
        label = " ".join(label_raw.split())
        low = label.lower()
        values = cells[1:]
        blank = not any(c.strip() for c in cells)
        if blank:
            if mode == "metrics" and n_block_rows == 0:
                raise DecodeError(f"{name}, line {line}: block {blocks[-1]!r} holds no metric")
            if mode in ("metrics", "info", "skip"):
                mode = "between"
            continue
        kind = _header_kind(cells)
        if kind is not None and low not in _TREATMENT_ROWS:
            if mode == "info" or low == "well":
                columns = [(c.strip(), None) for c in values]
                mode = "info"
                continue
            if mode == "metrics" and n_block_rows == 0:
                raise DecodeError(f"{name}, line {line}: block {blocks[-1]!r} holds no metric")
            level = kind
            blocks.append(label or "Measurement")
            columns = []
            for c in values:
                c = c.strip()
                m = _ELECTRODE.match(c)
                columns.append((m.group(1), f"{m.group(1)}_{m.group(2)}") if m else (c, None))
            mode = "metrics"
            category = None
            n_block_rows = 0
            continue
        if low == _WELL_INFO:
            mode = "info"
            continue
        if low.startswith(_SKIPPED_BLOCKS):
            mode = "skip"  # columns are treatments, not wells
            continue
        if mode in ("settings", "between") and not blocks:
            if low in MARKERS:
                continue  # a lone 'Measurement' title above the first header
            mode = "settings"
            pairs.append((label_raw, ",".join(v for v in values if v.strip())))
            continue
        if mode in ("skip", "between", "settings"):
            continue
        if columns is None:
            continue
        if mode == "info":
            if low in _TREATMENT_ROWS:
                for (well, _), cell in zip(columns, values, strict=False):
                    if cell.strip() and _WELL.match(well):
                        treatments[well] = " ".join(cell.split())
            continue
        # metrics
        if low in _TREATMENT_ROWS:
            for (well, electrode), cell in zip(columns, values, strict=False):
                if cell.strip() and electrode is None:
                    treatments.setdefault(well, " ".join(cell.split()))
            continue
        if not any(v.strip() for v in values):
            category = label  # a category title (Activity Metrics)
            continue
        metric, unit = split_unit(label)
        for (well, electrode), cell in zip(columns, values, strict=False):
            if not well:
                continue
            rows.append(
                VendorMetric(
                    well=well,
                    electrode=electrode,
                    level=level,
                    category=category,
                    metric=metric,
                    label=label,
                    unit=unit,
                    value=_number(cell, decimal_comma=decimal_comma, name=name, line=line),
                    line=line,
                )
            )
        n_block_rows += 1
    if mode == "metrics" and n_block_rows == 0:
        raise DecodeError(f"{name}: block {blocks[-1]!r} holds no metric")
    if not rows:
        raise UnsupportedRecording(f"{name}: a Neural Metric Tool export without metric rows")
    settings = collect_settings(pairs)
    meta = header_metadata(pairs)
    meta.update(nmt_settings(settings))
    return NeuralMetrics(
        rows=tuple(rows),
        settings=settings,
        metadata=meta,
        treatments=treatments,
        delimiter=delimiter,
        blocks=tuple(blocks),
    )


def nmt_settings(settings: dict[str, str]) -> dict[str, Any]:
    """The NMT's own analysis settings, typed where a number is stated.

    ``nmt_version`` (``Neural Metric Tool`` / ``Software Version`` rows),
    ``nmt_analysis_start_s``, ``nmt_analysis_duration_s``,
    ``nmt_min_active_rate_per_min`` (``Minimum Spike Rate for Active Electrode``),
    ``nmt_burst_max_isi_ms``, ``nmt_burst_min_spikes``, ``nmt_synchrony_window_ms``.
    """

    def first(*keys: str) -> str | None:
        lowered = {k.lower(): v for k, v in settings.items()}
        for key in keys:
            for k, v in lowered.items():
                if (k == key.lower() or k.endswith("/" + key.lower())) and v:
                    return v
        return None

    def seconds(text: str | None) -> float | None:
        value = parse_float(text)
        if value is None or text is None:
            return None
        return value / 1e3 if re.search(r"\bms\b", text) else value

    def millis(text: str | None) -> float | None:
        value = parse_float(text)
        if value is None or text is None:
            return None
        return (
            value
            if re.search(r"\bms\b", text) or not re.search(r"\bs(ec)?\b", text)
            else (value * 1e3)
        )

    return {
        "nmt_version": first("Neural Metric Tool", "Neural Metrics Tool", "Software Version"),
        "nmt_analysis_start_s": seconds(first("Analysis Start", "Analysis Start (s)")),
        "nmt_analysis_duration_s": seconds(first("Analysis Duration", "Analysis Duration (s)")),
        "nmt_min_active_rate_per_min": parse_float(
            first("Minimum Spike Rate for Active Electrode")
        ),
        "nmt_burst_max_isi_ms": millis(first("Maximum Inter-Spike Interval", "Max ISI")),
        "nmt_burst_min_spikes": parse_float(first("Minimum Number of Spikes", "Min Spikes")),
        "nmt_synchrony_window_ms": millis(first("Synchrony Window")),
    }
