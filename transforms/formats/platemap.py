"""Plate maps: which condition (and timepoint) each well of an MEA plate belongs to.

Two CSV forms are read, told apart by their header row (names are matched case-
and space-insensitively):

* the AxIS-style experiment log (meaRtools' ``expLog``, EPA's
  ``MaestroExperimentLog``): ``Project, Experiment Date, Plate SN, [DIV,] Well,
  Treatment, [Size,] Dose, Units``. The condition is the
  ``Treatment``; an empty treatment gets :data:`DEFAULT_CONDITION`
  (``unassigned``), not ``untreated``: in the sample log the 24 blank wells are
  the unused plate edge (rows A and F, columns 1 and 8, no spikes at all) while
  the control wells say ``untreated`` explicitly, so folding blanks into the
  controls would dilute them with empty wells. The timepoint is
  ``DIV<n>`` from the ``DIV`` column (``None`` without one: the caller supplies
  it). ``Dose`` and ``Units`` are kept; ``NA`` cells are empty.
* a plain map: ``well, condition`` and optionally ``timepoint``, ``dose``,
  ``units``. An empty condition also gets the default; a missing or
  empty timepoint stays ``None`` (the caller supplies it, e.g. from the file name).

Line endings may be LF, CRLF or old Mac CR (the sample experiment log uses CR);
the file may be gzipped (recognised by its magic bytes).
Conditions and timepoints become lake partition values, so they are validated with
:func:`transforms.spec.validate_partition_value`.
"""

from __future__ import annotations

import csv
import io
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa

from transforms.errors import DecodeError, SpecError
from transforms.recording.plate import LAYOUTS, PlateLayout, parse_well
from transforms.spec import validate_partition_value
from transforms.untrusted import excerpt, read_nofollow

#: Condition of a well whose treatment is left empty (see the module docstring).
DEFAULT_CONDITION: Final = "unassigned"

_EXPLOG_KEYS: Final = frozenset({"well", "treatment"})
#: Cells meaning "no value" (R's NA in EPA's MaestroExperimentLog files).
_EMPTY: Final = frozenset({"", "na", "n/a", "nan", "null", "none"})
_PLAIN_KEYS: Final = frozenset({"well", "condition"})
_META_KEYS: Final = ("project", "experimentdate", "platesn")


@dataclass(frozen=True)
class WellAssignment:
    """One well's entry in a plate map.

    Attributes
    ----------
    well
        Well name (``B3``).
    condition
        Validated partition value (the default condition when the map leaves it
        empty).
    timepoint
        Validated partition value (``DIV3``), or ``None`` if the map has none.
    dose
        The dose as a number, ``None`` when empty.
    units
        Unit of ``dose`` as written (``uM``), ``None`` when empty.
    """

    well: str
    condition: str
    timepoint: str | None
    dose: float | None = None
    units: str | None = None


@dataclass(frozen=True)
class PlateMap:
    """A decoded plate map.

    Attributes
    ----------
    source
        The file it was read from.
    layout
        The plate (given by the caller, else the smallest standard plate holding
        every listed well).
    wells
        Well name -> assignment, in file order. Wells the map does not list are
        absent (not defaulted).
    metadata
        Experiment-log columns that hold one value for the whole plate
        (``project``, ``experiment_date``, ``plate_sn``), when present.
    """

    source: str
    layout: PlateLayout
    wells: dict[str, WellAssignment]
    metadata: dict[str, str]

    def condition_of(self, well: str) -> str:
        """The condition of ``well``; :class:`SpecError` if the map does not list it."""
        try:
            return self.wells[well].condition
        except KeyError:
            raise SpecError(f"{self.source}: well {well!r} is not in the plate map") from None

    def to_table(self) -> pa.Table:
        """The map as a table: ``well, condition, timepoint, dose, units``."""
        rows = list(self.wells.values())
        return pa.table(
            {
                "well": pa.array([r.well for r in rows], pa.string()),
                "condition": pa.array([r.condition for r in rows], pa.string()),
                "timepoint": pa.array([r.timepoint for r in rows], pa.string()),
                "dose": pa.array([r.dose for r in rows], pa.float64()),
                "units": pa.array([r.units for r in rows], pa.string()),
            }
        )


def treatment_condition(treatment: str, *, source: str = "") -> str:
    """A treatment as written by a lab or AxIS, as a partition value.

    Runs of spaces and characters a partition value cannot hold become ``_``
    (``Bisindolymaleimide 1`` -> ``Bisindolymaleimide_1``, ``20kV/cm`` ->
    ``20kV_cm``); the result is cut to 64 characters. An empty treatment stays empty.
    """
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", " ".join(treatment.split())).strip("_")
    text = text.lstrip(".")[:64]
    return validate_partition_value("condition", text, source=source) if text else ""


def _key(name: str) -> str:
    return re.sub(r"[\s_]+", "", name).lower()


#: Largest plate map read (bytes, also after decompression): a 96-well map is a few KB.
PLATE_MAP_MAX_BYTES: Final = 16 * 1024 * 1024


def _read_rows(path: Path) -> list[list[str]]:
    try:
        # never through a symbolic link, never more than the cap
        raw = read_nofollow(path, max_bytes=PLATE_MAP_MAX_BYTES)
    except OSError as exc:
        raise DecodeError(f"{path}: cannot read plate map: {exc}") from exc
    if raw[:2] == b"\x1f\x8b":  # gzipped (meaRtools ships its expLog as .csv.gz)
        try:
            inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            raw = inflate.decompress(raw, PLATE_MAP_MAX_BYTES + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise DecodeError(f"{path}: corrupt gzip stream: {exc}") from exc
        if len(raw) > PLATE_MAP_MAX_BYTES:
            raise DecodeError(
                f"{path}: decompresses to more than {PLATE_MAP_MAX_BYTES} bytes: refused"
            )
        if not inflate.eof:
            raise DecodeError(f"{path}: corrupt gzip stream: truncated")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # Excel on old Macs writes Mac Roman/latin-1
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise DecodeError(f"{path}: malformed CSV: {exc}") from exc
    return [r for r in rows if any(c.strip() for c in r)]


def _timepoint(div: str, path: Path, line: int) -> str | None:
    div = div.strip()
    if not div:
        return None
    if re.fullmatch(r"\d+(\.0+)?", div):
        return validate_partition_value("timepoint", f"DIV{int(float(div))}", source=str(path))
    if re.fullmatch(r"(?i)div\s*\d+", div):
        return validate_partition_value("timepoint", "DIV" + div[3:].strip(), source=str(path))
    raise SpecError(f"{path}: line {line}: DIV {div!r} is not a whole number of days")


def _dose(text: str, path: Path, line: int) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{path}: line {line}: dose {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise SpecError(f"{path}: line {line}: dose {text!r} must be a finite number >= 0")
    return value


def _smallest_layout(wells: list[str], path: Path) -> PlateLayout:
    rows, cols = zip(*(parse_well(w) for w in wells), strict=True)
    for n in sorted(LAYOUTS):
        layout = LAYOUTS[n]
        if max(rows) <= layout.well_rows and max(cols) <= layout.well_cols:
            return layout
    raise SpecError(
        f"{path}: wells up to row {max(rows)}, column {max(cols)} fit no standard plate"
    )


def read_plate_map(
    path: str | Path,
    *,
    layout: PlateLayout | None = None,
    default_condition: str = DEFAULT_CONDITION,
) -> PlateMap:
    """Read a plate map CSV (AxIS experiment log or plain ``well,condition``).

    Parameters
    ----------
    path
        The CSV file.
    layout
        The plate the map describes. Every listed well must exist on it. Without
        it, the smallest standard plate (12, 24, 48, 96 wells) holding every
        listed well is assumed.
    default_condition
        Condition of wells whose treatment/condition cell is empty.

    Returns
    -------
    PlateMap

    Raises
    ------
    DecodeError
        If the file cannot be read or is not CSV.
    SpecError
        If the header is neither form, a well is malformed, listed twice or not on
        the plate, a condition or timepoint is not a legal partition value, or a
        dose is not a number.
    """
    source = Path(path)
    default_condition = validate_partition_value("condition", default_condition, source=str(source))
    rows = _read_rows(source)
    if not rows:
        raise SpecError(f"{source}: empty plate map")
    header = [_key(c) for c in rows[0]]
    columns = set(header)
    if columns >= _EXPLOG_KEYS | {"div"}:
        condition_col, time_col = "treatment", "div"
    elif columns >= _PLAIN_KEYS:
        condition_col, time_col = "condition", "timepoint"
    elif columns >= _EXPLOG_KEYS:  # an experiment log without DIV (EPA's)
        condition_col, time_col = "treatment", "div"
    else:
        raise SpecError(
            f"{source}: header {excerpt(','.join(rows[0]))} is neither an AxIS experiment log "
            "(Well, Treatment[, DIV], ...) nor a plain map (well, condition[, timepoint])"
        )
    index = {name: i for i, name in reversed(list(enumerate(header)))}

    def cell(row: list[str], name: str) -> str:
        i = index.get(name)
        value = row[i].strip() if i is not None and i < len(row) else ""
        return "" if value.lower() in _EMPTY else value

    wells: dict[str, WellAssignment] = {}
    metadata_values: dict[str, set[str]] = {k: set() for k in _META_KEYS if k in index}
    for line, row in enumerate(rows[1:], start=2):
        well_text = cell(row, "well").upper()
        try:
            prow, pcol = parse_well(well_text)
        except SpecError as exc:
            raise SpecError(f"{source}: line {line}: {exc}") from exc
        well = f"{chr(ord('A') + prow - 1)}{pcol}"  # normalises "a01"-style spellings
        if layout is not None and not layout.has_well(well):
            raise SpecError(f"{source}: line {line}: well {well!r} is not on a {layout.name} plate")
        if well in wells:
            raise SpecError(f"{source}: line {line}: well {well!r} is listed twice")
        condition = cell(row, condition_col)
        if condition_col == "treatment":
            # "Bisindolymaleimide 1": lab treatments hold spaces, partition values cannot
            condition = treatment_condition(condition, source=str(source))
        condition = condition or default_condition
        try:
            condition = validate_partition_value("condition", condition, source=str(source))
            if time_col == "div":
                timepoint = _timepoint(cell(row, "div"), source, line)
            else:
                tp = cell(row, "timepoint")
                timepoint = (
                    validate_partition_value("timepoint", tp, source=str(source)) if tp else None
                )
        except SpecError as exc:
            raise SpecError(f"{exc} (line {line})") from exc
        units = cell(row, "units") or None
        wells[well] = WellAssignment(
            well=well,
            condition=condition,
            timepoint=timepoint,
            dose=_dose(cell(row, "dose"), source, line),
            units=units,
        )
        for key, values in metadata_values.items():
            if cell(row, key):
                values.add(cell(row, key))
    if not wells:
        raise SpecError(f"{source}: plate map lists no well")
    if layout is None:
        layout = _smallest_layout(list(wells), source)
    names = {"project": "project", "experimentdate": "experiment_date", "platesn": "plate_sn"}
    metadata = {names[k]: next(iter(v)) for k, v in metadata_values.items() if len(v) == 1}
    return PlateMap(source=str(source), layout=layout, wells=wells, metadata=metadata)
