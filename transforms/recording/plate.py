"""Axion plate layouts and the Axion naming convention for wells and electrodes.

Well names are row letter + column number (``A1``, ``D6``); electrode names are
electrode column digit then row digit (``23`` = column 2, row 3); combined,
``A1_23``. See ``docs/axion-file-format.md`` section 5.3 (shared material).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from transforms.errors import SpecError

_ELECTRODE_NAME = re.compile(r"^([A-P])(\d{1,2})_(\d)(\d)$")
_WELL_NAME = re.compile(r"^([A-P])(\d{1,2})$")


@dataclass(frozen=True)
class PlateLayout:
    """Geometry of a plate: a grid of wells, each with a grid of electrodes.

    Attributes
    ----------
    name
        Product name, e.g. ``Classic MEA 48``.
    plate_type
        The AxIS ``PlateType`` code.
    well_rows, well_cols
        Wells per column / per row of the plate.
    electrode_cols, electrode_rows
        The electrode grid inside one well.
    missing
        Electrode positions (column, row) absent from the grid (96-well: (3, 2)).
    """

    name: str
    plate_type: int
    well_rows: int
    well_cols: int
    electrode_cols: int
    electrode_rows: int
    missing: tuple[tuple[int, int], ...] = ()

    @property
    def n_wells(self) -> int:
        return self.well_rows * self.well_cols

    @cached_property
    def wells(self) -> tuple[str, ...]:
        """Well names in row-major order (A1, A2, ..., B1, ...)."""
        return tuple(
            f"{chr(ord('A') + r)}{c + 1}"
            for r in range(self.well_rows)
            for c in range(self.well_cols)
        )

    @cached_property
    def electrode_positions(self) -> tuple[tuple[int, int], ...]:
        """(column, row) of each electrode within a well, 1-based, row-major."""
        return tuple(
            (c, r)
            for r in range(1, self.electrode_rows + 1)
            for c in range(1, self.electrode_cols + 1)
            if (c, r) not in self.missing
        )

    @property
    def electrodes_per_well(self) -> int:
        return len(self.electrode_positions)

    @cached_property
    def electrodes(self) -> tuple[str, ...]:
        """Every electrode name on the plate, well by well (``A1_11``, ``A1_21``, ...)."""
        return tuple(f"{w}_{c}{r}" for w in self.wells for (c, r) in self.electrode_positions)

    @cached_property
    def electrode_index(self) -> dict[str, int]:
        """Electrode name -> position in :attr:`electrodes`."""
        return {name: i for i, name in enumerate(self.electrodes)}

    @property
    def n_channels(self) -> int:
        return self.n_wells * self.electrodes_per_well

    def has_well(self, well: str) -> bool:
        return well in self.wells

    def well_of(self, electrode: str) -> str:
        """The well name of an electrode name, validated against this layout."""
        if electrode not in self.electrode_index:
            raise SpecError(f"electrode {electrode!r} does not exist on a {self.name} plate")
        return electrode.split("_", 1)[0]


def parse_electrode(name: str) -> tuple[str, int, int]:
    """Split ``A1_23`` into (well ``A1``, electrode column 2, electrode row 3)."""
    m = _ELECTRODE_NAME.match(name.strip())
    if not m:
        raise SpecError(f"not an Axion electrode name: {name!r} (expected e.g. 'A1_23')")
    return f"{m.group(1)}{int(m.group(2))}", int(m.group(3)), int(m.group(4))


def parse_well(name: str) -> tuple[int, int]:
    """Split ``B3`` into 1-based (row 2, column 3)."""
    m = _WELL_NAME.match(name.strip())
    if not m:
        raise SpecError(f"not a well name: {name!r} (expected e.g. 'B3')")
    return ord(m.group(1)) - ord("A") + 1, int(m.group(2))


_96_MISSING: Final = ((3, 2),)

#: The Maestro layouts this project generates and reads, by well count (the
#: default layout of each count, also used to infer a plate from names alone).
LAYOUTS: Final[dict[int, PlateLayout]] = {
    12: PlateLayout("CytoView MEA 12", 0x3000001, 3, 4, 8, 8),
    24: PlateLayout("CytoView MEA 24", 0x1800001, 4, 6, 4, 4),
    48: PlateLayout("Classic MEA 48", 0x3000002, 6, 8, 4, 4),
    96: PlateLayout("Classic MEA 96", 0x3000003, 8, 12, 3, 3, _96_MISSING),
}

#: Every known plate type code -> layout (from the format document's table).
PLATE_TYPES: Final[dict[int, PlateLayout]] = {
    layout.plate_type: layout
    for layout in (
        *LAYOUTS.values(),
        PlateLayout("Maestro Edge six-well debug map", 0x1800000, 2, 3, 8, 8),
        PlateLayout("BioCircuit MEA 24", 0x1800002, 4, 6, 4, 4),
        PlateLayout("CytoView MEA 6", 0x1800003, 2, 3, 8, 8),
        PlateLayout("Lumos MEA 24", 0x1800004, 4, 6, 4, 4),
        PlateLayout("Maestro Pro twelve-well debug map", 0x3000000, 3, 4, 8, 8),
        PlateLayout("CytoView MEA 48", 0x3000004, 6, 8, 4, 4),
        PlateLayout("Lumos MEA 48", 0x3000006, 6, 8, 4, 4),
        PlateLayout("Classic MEA 48 with E-Stim+", 0x3000007, 6, 8, 4, 4),
        PlateLayout("BioCircuit MEA 96", 0x3000008, 8, 12, 3, 3, _96_MISSING),
        PlateLayout("CytoView MEA 96", 0x3000009, 8, 12, 3, 3, _96_MISSING),
        PlateLayout("Lumos MEA 96", 0x300000A, 8, 12, 3, 3, _96_MISSING),
        PlateLayout("BioCircuit MEA 48", 0x300000B, 6, 8, 4, 4),
        PlateLayout("Classic MEA 48 with AccuSpot", 0x300000C, 6, 8, 4, 4),
        PlateLayout("CytoView MEA 48 Organoid", 0x3000015, 6, 8, 4, 4),
        PlateLayout("CytoView MEA 12 Transparent", 0x3000016, 3, 4, 8, 8),
    )
}


def _name_key(text: str) -> str:
    return re.sub(r"[^a-z0-9+]", "", text.lower().replace(" with ", " "))


_BY_NAME: Final[dict[str, PlateLayout]] = {
    _name_key(layout.name): layout for layout in PLATE_TYPES.values()
}
_WELLS_IN_NAME: Final = re.compile(r"(\d+)\s*-?\s*well|mea\s*(\d+)", re.IGNORECASE)


def layout_for_plate_name(text: str) -> PlateLayout | None:
    """The layout an AxIS ``Plate Type`` text names, or None if it names no well count.

    The product names of the format document's table match exactly (case, spaces
    and "with" ignored: ``Classic MEA 48 E-Stim+``, ``Lumos MEA 96``); other texts
    by their well count (``Maestro 48-Well (Transparent)`` of AxIS 2,
    ``CytoView MEA 6``), giving the default layout of that count.

    Raises
    ------
    SpecError
        If the text names a well count no layout has.
    """
    found = _BY_NAME.get(_name_key(text))
    if found is not None:
        return found
    m = _WELLS_IN_NAME.search(text)
    if not m:
        return None
    try:
        return layout_for_wells(int(m.group(1) or m.group(2)))
    except SpecError as exc:
        raise SpecError(f"plate type {text!r}: {exc}") from exc


def layout_for_wells(n_wells: int) -> PlateLayout:
    """The default Maestro layout with ``n_wells`` wells (6, 12, 24, 48 or 96).

    The 6-well CytoView MEA 6 is not in :data:`LAYOUTS` (the plates inferred from
    well or electrode names): only a plate type that says so gives it.
    """
    if n_wells == 6:
        return PLATE_TYPES[0x1800003]
    try:
        return LAYOUTS[n_wells]
    except KeyError:
        raise SpecError(f"no {n_wells}-well layout; known: {sorted(LAYOUTS)}") from None


def window_spikes(
    spikes: pa.Table,
    *,
    offset_s: float = 0.0,
    duration_s: float | None,
    end_slack_s: float,
) -> tuple[pa.Table, int, int]:
    """Spikes of the analysed window ``[0, duration_s + end_slack_s]`` after ``- offset_s``.

    Returns the kept spikes (``time_s`` shifted by ``-offset_s``) and the numbers of
    spikes before the window and after it (``duration_s=None``: no end).
    """
    t = spikes["time_s"]
    if offset_s:
        t = pc.subtract(t, offset_s)
        i = spikes.schema.get_field_index("time_s")
        spikes = spikes.set_column(i, spikes.schema.field(i), t)
    before = pc.less(t, 0.0)
    n_before = int(pc.sum(before).as_py() or 0)
    if duration_s is None:
        after = pc.less(t, -1.0)  # all false
        n_after = 0
    else:
        after = pc.greater(t, duration_s + end_slack_s)
        n_after = int(pc.sum(after).as_py() or 0)
    if n_before or n_after:
        spikes = spikes.filter(pc.invert(pc.or_(before, after)))
    return spikes, n_before, n_after


@dataclass(frozen=True)
class PlateSpikes:
    """What a reader hands to the metrics: spikes, layout and the duration to divide by."""

    kind: str
    spikes: pa.Table
    layout: PlateLayout
    duration_s: float
    declared_duration_s: float | None
    sampling_rate_hz: float | None
    recorded_at: Any
    qc_flags: tuple[str, ...]
    detection: dict[str, Any] | None
    embedded_map: dict[str, str]
    #: The wells these spikes cover (a well group of a split plate); None: every well.
    wells: tuple[str, ...] | None = None
    #: The wells the source names (spikes, well information, channel array); a
    #: well neither it nor a plate map names gets no rows. None: every well.
    named_wells: tuple[str, ...] | None = None
    #: Header metadata (``experiment_started_at``, ``axis_version``, ``instrument``,
    #: ``plate_serial``, ``voltage_scale_uv_per_count``, ``detector_threshold``, ...).
    metadata: dict[str, Any] = field(default_factory=dict)
