"""Write a published MEA plate as NWB: electrodes, spikes as Units, plate map and metrics.

The file holds:

* the device (the Maestro, with the plate type) and one electrode group per well;
* the electrodes table with ``well``, ``well_row`` (letter), ``well_column``, the
  electrode's ``row`` and ``column`` inside its well (Axion's ``A1_23``: column 2,
  row 3), ``electrode_name``, the well's ``treatment`` (the published ``condition``),
  ``dose`` and ``dose_units``, and x/y positions in µm;
* the spikes as ``Units``, one unit per electrode (its row of the electrodes table),
  with spike times (s from the recording start) and a ragged ``amplitude_uv``
  column; detected (or exported by AxIS) multi-unit activity, not sorted neurons;
* the plate map and the well metrics (and the electrode metrics) as DynamicTables in
  a processing module ``plate``, with every published column;
* optionally the raw voltage as an ``ElectricalSeries`` (stored ADC counts,
  ``conversion`` to volts), chunked 1 s x one well's electrodes and gzip-compressed,
  read window by window from any continuous source (the lake's raw archive or the
  original).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa

from transforms.errors import InvalidArgument
from transforms.formats.nwb_ecephys import electrode_position_um
from transforms.recording.continuous import ContinuousSource
from transforms.recording.plate import PlateLayout, parse_electrode

#: Processing module holding the plate map and metrics tables.
MODULE_NAME: Final = "plate"
#: Subject keys understood in ``metadata`` (NWB ``Subject`` field names).
SUBJECT_KEYS: Final = ("subject", "species", "sex", "age", "date_of_birth", "genotype", "strain")


def _counts_iterator(source: ContinuousSource, columns: np.ndarray, chunk: tuple[int, int]) -> Any:
    from hdmf.data_utils import GenericDataChunkIterator

    class Counts(GenericDataChunkIterator):  # type: ignore[misc]
        def __init__(self) -> None:
            self._dtype = np.dtype(source.read_counts(0, 1, columns=columns[:1]).dtype)
            super().__init__(
                buffer_shape=(min(source.n_samples, chunk[0] * 4), len(columns)),
                chunk_shape=chunk,
                display_progress=False,
            )

        def _get_data(self, selection: tuple[slice, slice]) -> np.ndarray:
            rows, cols = selection
            picked = columns[cols]
            return np.asarray(source.read_counts(rows.start, rows.stop, columns=picked))

        def _get_maxshape(self) -> tuple[int, int]:
            return (int(source.n_samples), len(columns))

        def _get_dtype(self) -> np.dtype:
            return self._dtype

    return Counts()


def _column(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist() if name in table.column_names else []


def _add_table(module: Any, name: str, description: str, table: pa.Table) -> None:
    """A pyarrow table as an hdmf DynamicTable (NULLs as NaN / empty strings)."""
    from hdmf.common import DynamicTable, VectorData

    columns = []
    for field in table.schema:
        values = table.column(field.name).to_pylist()
        if pa.types.is_floating(field.type) or pa.types.is_integer(field.type):
            data: Any = np.array(
                [math.nan if v is None else v for v in values],
                dtype=np.float64 if pa.types.is_floating(field.type) or None in values else None,
            )
        elif pa.types.is_boolean(field.type):
            data = np.array([bool(v) for v in values])
        else:
            data = ["" if v is None else str(v) for v in values]
        columns.append(VectorData(name=field.name, description=field.name, data=data))
    module.add(DynamicTable(name=name, description=description, columns=columns))


def export_mea_nwb(
    out: str | Path,
    *,
    file_id: str,
    layout: PlateLayout,
    electrodes: Sequence[str],
    treatments: Mapping[str, str],
    spikes: pa.Table,
    plate_map: pa.Table,
    well_metrics: pa.Table,
    electrode_metrics: pa.Table | None = None,
    recorded_at: dt.datetime | None = None,
    metadata: Mapping[str, str] | None = None,
    raw: ContinuousSource | None = None,
) -> Path:
    """Write a plate's published content as NWB.

    Parameters
    ----------
    out
        Output ``.nwb`` (overwritten).
    file_id
        The recording's SHA-256 (the NWB ``identifier``).
    layout, electrodes
        The plate layout and the electrodes to list (the raw's columns when ``raw``).
    treatments
        Well -> treatment (the published condition).
    spikes
        ``electrode``, ``time_s``, ``amplitude_uv`` (the published ``mea_spikes``).
    plate_map, well_metrics, electrode_metrics
        Tables written as they are (columns as published).
    recorded_at
        Session start (naive: taken as UTC, as AxIS stores no time zone).
    metadata
        ``session_description``, ``lab``, ``institution``, ``experimenter``,
        ``session_id`` and the subject keys (:data:`SUBJECT_KEYS`; a culture's
        animal of origin). Without ``subject`` no ``Subject`` is written, which
        DANDI requires.
    raw
        A continuous source whose samples go in as an ``ElectricalSeries``.

    Raises
    ------
    InvalidArgument
        A spike on an electrode not listed, or a raw source whose electrodes differ.
    """
    from hdmf.backends.hdf5 import H5DataIO
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import ElectricalSeries
    from pynwb.file import Subject
    from pynwb.misc import Units

    meta = dict(metadata or {})
    names = list(electrodes)
    if raw is not None and tuple(raw.electrodes) != tuple(names):
        raise InvalidArgument("export_mea_nwb: raw source electrodes differ from the listed ones")
    start = recorded_at or dt.datetime(1970, 1, 1)
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.UTC)
    nwb = NWBFile(
        session_description=meta.get("session_description")
        or f"MEA plate recording ({layout.name}), published by Neurocyte",
        identifier=file_id,
        session_start_time=start,
        session_id=meta.get("session_id") or file_id[:16],
        lab=meta.get("lab") or None,
        institution=meta.get("institution") or None,
        experimenter=[meta["experimenter"]] if meta.get("experimenter") else None,
        keywords=["microelectrode array", "extracellular", "in vitro"],
    )
    if meta.get("subject"):
        nwb.subject = Subject(
            subject_id=meta["subject"],
            species=meta.get("species") or None,
            sex=meta.get("sex") or "U",
            age=meta.get("age") or None,
            genotype=meta.get("genotype") or None,
            strain=meta.get("strain") or None,
            description="animal the cultured cells came from",
        )
    device = nwb.create_device(
        name="Maestro",
        description=f"Axion {layout.name}, plate type {layout.plate_type:#x}",
        manufacturer="Axion BioSystems",
    )
    for col, text in (
        ("well", "well name (row letter, column number)"),
        ("well_row", "the well's row letter"),
        ("well_column", "the well's column number"),
        ("row", "the electrode's row inside its well"),
        ("column", "the electrode's column inside its well"),
        ("electrode_name", "Axion electrode name: well _ column row (A1_23)"),
        ("treatment", "the well's treatment (published condition) from the plate map"),
    ):
        nwb.add_electrode_column(name=col, description=text)
    groups: dict[str, Any] = {}
    for name in names:
        well, el_col, el_row = parse_electrode(name)
        if well not in groups:
            groups[well] = nwb.create_electrode_group(
                name=well,
                description=f"well {well}, treatment {treatments.get(well, '')}",
                location=f"well {well}",
                device=device,
            )
        x_um, y_um = electrode_position_um(layout, name)
        nwb.add_electrode(
            group=groups[well],
            location=f"well {well}",
            x=x_um,
            y=y_um,
            z=0.0,
            well=well,
            well_row=well[0],
            well_column=int(well[1:]),
            row=int(el_row),
            column=int(el_col),
            electrode_name=name,
            treatment=treatments.get(well, ""),
        )
    index = {n: i for i, n in enumerate(names)}
    by_electrode: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in names}
    for e, t, a in zip(
        _column(spikes, "electrode"),
        _column(spikes, "time_s"),
        _column(spikes, "amplitude_uv"),
        strict=True,
    ):
        if e not in by_electrode:
            raise InvalidArgument(f"export_mea_nwb: spike on electrode {e!r} not listed")
        by_electrode[e][0].append(float(t))
        by_electrode[e][1].append(math.nan if a is None else float(a))
    nwb.units = Units(
        name="units", description="multi-unit threshold crossings, one unit per electrode"
    )
    nwb.add_unit_column(name="electrode_name", description="the electrode of this unit")
    nwb.add_unit_column(
        name="amplitude_uv", description="signed peak amplitude of each spike (µV)", index=True
    )
    for name in names:
        times, amps = by_electrode[name]
        order = np.argsort(times, kind="stable")
        nwb.add_unit(
            spike_times=np.asarray(times)[order],
            electrodes=[index[name]],
            electrode_group=groups[name.split("_", 1)[0]],
            electrode_name=name,
            amplitude_uv=np.asarray(amps)[order],
        )
    module = nwb.create_processing_module(MODULE_NAME, "plate map and published MEA metrics")
    _add_table(module, "plate_map", "well -> treatment, dose (the plate map used)", plate_map)
    _add_table(module, "well_metrics", "published mea_well_metrics rows", well_metrics)
    if electrode_metrics is not None:
        _add_table(
            module, "electrode_metrics", "published mea_electrode_metrics rows", electrode_metrics
        )
    if raw is not None:
        fs = float(raw.sampling_rate_hz)
        per_well = max(len(v) for v in _wells(names).values())
        cols = np.arange(len(names), dtype=np.int64)
        data = H5DataIO(
            _counts_iterator(raw, cols, (max(1, min(raw.n_samples, round(fs))), per_well)),
            compression="gzip",
            compression_opts=4,
            shuffle=True,
        )
        region = nwb.create_electrode_table_region(
            region=list(range(len(names))), description="recorded electrodes"
        )
        nwb.add_acquisition(
            ElectricalSeries(
                name="ElectricalSeries",
                data=data,
                electrodes=region,
                rate=fs,
                starting_time=0.0,
                conversion=float(raw.voltage_scale_uv_per_count) * 1e-6,
                description="raw voltage in stored ADC counts; volts = counts * conversion",
            )
        )
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with NWBHDF5IO(str(path), mode="w") as io:
        io.write(nwb)
    return path


def _wells(names: Sequence[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(n.split("_", 1)[0], []).append(n)
    return groups
