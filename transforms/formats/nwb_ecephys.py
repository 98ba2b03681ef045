"""MEA plates as NWB extracellular recordings (``ElectricalSeries``), written and read.

Writing streams a recording (an :class:`~transforms.readers.axion.AxionFile`, or any
source with the same ``read_counts`` access) into one ``ElectricalSeries`` of int16
counts with ``conversion`` = volts per count, so the NWB file holds exactly the stored
samples and no whole plate is ever in memory (an HDMF ``GenericDataChunkIterator``
pulls one buffer at a time). The electrodes table has one row per channel with the
standard ``x``/``y``/``z`` (µm, nominal plate geometry), ``group`` (one electrode group
per well), ``location``, and the added columns ``well`` and ``electrode_name``
(``A1_23``). The plate type and layout name are stored in the device description.

Reading gives an :class:`NwbEcephysFile` with the same access API as ``AxionFile``
(``read``, ``iter_chunks``, ``read_counts``, ``columns``, ``electrodes``...), so
detection and tests treat both alike. Times are seconds from the series' start.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from hdmf.backends.hdf5 import H5DataIO
from hdmf.data_utils import GenericDataChunkIterator
from pynwb import NWBHDF5IO, NWBFile
from pynwb.ecephys import ElectricalSeries

from transforms.errors import DecodeError, InvalidArgument, UnsupportedRecording
from transforms.recording.continuous import CountsSource, fill
from transforms.recording.plate import PLATE_TYPES, PlateLayout, parse_electrode, parse_well

SERIES_NAME: Final = "ElectricalSeries"
_PLATE_RE: Final = re.compile(r"plate type (0x[0-9a-fA-F]+)")
#: Nominal electrode pitch (µm) by electrode grid size; well pitch spans a 127 mm plate.
_ELECTRODE_PITCH_UM: Final = {8: 200.0, 4: 350.0, 3: 300.0}
_PLATE_WIDTH_UM: Final = 108_000.0


def electrode_position_um(layout: PlateLayout, name: str) -> tuple[float, float]:
    """Nominal (x, y) of an electrode on the plate in µm (well A1's first electrode at 0).

    Geometry is approximate (equal well pitch across a 108 mm wide grid); it places
    electrodes consistently, it is not a manufacturer drawing.
    """
    well, ec, er = parse_electrode(name)
    wr, wc = parse_well(well)
    well_pitch = _PLATE_WIDTH_UM / layout.well_cols
    pitch = _ELECTRODE_PITCH_UM.get(layout.electrode_cols, 200.0)
    return (wc - 1) * well_pitch + (ec - 1) * pitch, (wr - 1) * well_pitch + (er - 1) * pitch


class _CountsIterator(GenericDataChunkIterator):  # type: ignore[misc]
    """Pulls (time, channel) blocks of int16 counts from a source on demand."""

    def __init__(self, source: Any, start: int, stop: int, columns: np.ndarray, **kw: Any):
        self._source = source
        self._start = start
        self._stop = stop
        self._cols = columns
        probe = source.read_counts(start, min(stop, start + 1), columns=columns)
        self._dtype = probe.dtype
        super().__init__(**kw)

    def _get_data(self, selection: tuple[slice, slice]) -> np.ndarray:
        t, c = selection
        cols = self._cols[c]
        return self._source.read_counts(
            self._start + (t.start or 0), self._start + t.stop, columns=cols
        )

    def _get_maxshape(self) -> tuple[int, int]:
        return (self._stop - self._start, len(self._cols))

    def _get_dtype(self) -> np.dtype:
        return self._dtype


def write_nwb_ecephys(
    path: str | Path,
    source: Any,
    *,
    start_s: float = 0.0,
    stop_s: float | None = None,
    electrodes: Sequence[str] | None = None,
    wells: Sequence[str] | None = None,
    well_conditions: Mapping[str, str] | None = None,
    session_description: str = "MEA plate recording",
    identifier: str | None = None,
    compression: bool = False,
    buffer_s: float = 2.0,
) -> Path:
    """Write a plate recording (or a window / channel subset) as an NWB file.

    Parameters
    ----------
    path
        Output ``.nwb`` (overwritten).
    source
        An opened recording with ``layout``, ``sampling_rate_hz``,
        ``voltage_scale_uv_per_count``, ``electrodes``, ``n_samples``, ``recorded_at``,
        ``columns()`` and ``read_counts()`` (an ``AxionFile`` or ``NwbEcephysFile``).
    start_s, stop_s
        Window to write (default: everything); ``starting_time`` records ``start_s``.
    electrodes, wells
        Optional channel subset.
    well_conditions
        Well -> condition, stored in the electrode groups' descriptions.
    compression
        gzip the samples (slower, smaller).
    buffer_s
        Seconds of data pulled from ``source`` at a time.

    Returns
    -------
    Path
        ``path``.
    """
    layout: PlateLayout = source.layout
    fs = float(source.sampling_rate_hz)
    cols = np.asarray(source.columns(electrodes=electrodes, wells=wells), dtype=np.int64)
    k0 = round(start_s * fs)
    k1 = source.n_samples if stop_s is None else min(source.n_samples, round(stop_s * fs))
    if not 0 <= k0 < k1:
        raise InvalidArgument(f"write_nwb_ecephys: empty window [{start_s}, {stop_s}] s")
    names = [source.electrodes[int(c)] for c in cols]
    started = source.recorded_at or dt.datetime(1970, 1, 1)
    if started.tzinfo is None:
        # AxIS stores no time zone (format doc section 13); NWB needs one: say UTC.
        started = started.replace(tzinfo=dt.UTC)
    nwb = NWBFile(
        session_description=session_description,
        identifier=identifier or str(uuid.uuid4()),
        session_start_time=started,
    )
    device = nwb.create_device(
        name="Maestro",
        description=f"Axion {layout.name}, plate type {layout.plate_type:#x}",
        manufacturer="Axion BioSystems",
    )
    nwb.add_electrode_column(name="well", description="well name (row letter, column number)")
    nwb.add_electrode_column(name="electrode_name", description="Axion electrode name, A1_23")
    groups = {}
    for well in dict.fromkeys(n.split("_", 1)[0] for n in names):
        cond = (well_conditions or {}).get(well)
        groups[well] = nwb.create_electrode_group(
            name=well,
            description=f"well {well}" + (f", condition {cond}" if cond else ""),
            location=f"well {well}",
            device=device,
        )
    for name in names:
        well = name.split("_", 1)[0]
        x, y = electrode_position_um(layout, name)
        nwb.add_electrode(
            group=groups[well],
            location=f"well {well}",
            x=x,
            y=y,
            z=0.0,
            well=well,
            electrode_name=name,
        )
    region = nwb.create_electrode_table_region(
        region=list(range(len(names))), description="recorded electrodes"
    )
    buffer_rows = max(1, min(k1 - k0, round(buffer_s * fs)))
    data = _CountsIterator(
        source,
        k0,
        k1,
        cols,
        buffer_shape=(buffer_rows, len(cols)),
        chunk_shape=(min(buffer_rows, 12500), min(len(cols), 64)),
        display_progress=False,
    )
    wrapped = H5DataIO(data, compression="gzip" if compression else None)
    series = ElectricalSeries(
        name=SERIES_NAME,
        data=wrapped,
        electrodes=region,
        rate=fs,
        starting_time=k0 / fs,
        conversion=float(source.voltage_scale_uv_per_count) * 1e-6,
        description="Axion raw voltage in stored counts; volts = counts * conversion",
    )
    nwb.add_acquisition(series)
    out = Path(path)
    with NWBHDF5IO(str(out), mode="w") as io:
        io.write(nwb)
    return out


class NwbEcephysFile(CountsSource):
    """An NWB MEA recording with the :class:`~transforms.readers.axion.AxionFile` access API.

    Attributes
    ----------
    layout, sampling_rate_hz, voltage_scale_uv_per_count, n_samples, duration_s,
    electrodes, recorded_at, start_time_s
        As for ``AxionFile``; ``start_time_s`` is the series' ``starting_time``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.source_name = self.path.name
        try:
            self._io = NWBHDF5IO(str(self.path), mode="r")
            nwb = self._io.read()
        except (OSError, KeyError, ValueError) as exc:
            raise DecodeError(f"{self.path.name}: not a readable NWB file ({exc})") from exc
        try:
            series = nwb.acquisition[SERIES_NAME]
        except KeyError:
            self._io.close()
            raise UnsupportedRecording(
                f"{self.path.name}: no {SERIES_NAME} in acquisition"
            ) from None
        self._data = series.data
        if self._data.ndim != 2:
            self._io.close()
            raise DecodeError(f"{self.path.name}: ElectricalSeries data is not 2-D")
        if series.rate is None or not (math.isfinite(series.rate) and series.rate > 0):
            self._io.close()
            raise DecodeError(f"{self.path.name}: ElectricalSeries without a sampling rate")
        table = series.electrodes.table
        rows = list(series.electrodes.data[:])
        if "electrode_name" not in table.colnames:
            self._io.close()
            raise UnsupportedRecording(f"{self.path.name}: electrodes table has no electrode_name")
        all_names = table["electrode_name"].data[:]
        self.electrodes: tuple[str, ...] = tuple(str(all_names[r]) for r in rows)
        if len(self.electrodes) != self._data.shape[1]:
            self._io.close()
            raise DecodeError(
                f"{self.path.name}: {self._data.shape[1]} data columns but "
                f"{len(self.electrodes)} electrodes"
            )
        device = next(iter(nwb.devices.values()), None)
        m = _PLATE_RE.search(device.description or "") if device is not None else None
        layout = PLATE_TYPES.get(int(m.group(1), 16)) if m else None
        if layout is None:
            self._io.close()
            raise UnsupportedRecording(f"{self.path.name}: no known Axion plate type recorded")
        self.layout: PlateLayout = layout
        self.sampling_rate_hz = float(series.rate)
        self.voltage_scale_uv_per_count = float(series.conversion) * 1e6
        self.n_samples = int(self._data.shape[0])
        self.duration_s = self.n_samples / self.sampling_rate_hz
        self.start_time_s = float(series.starting_time or 0.0)
        self.recorded_at = nwb.session_start_time

    def close(self) -> None:
        self._io.close()

    def __enter__(self) -> NwbEcephysFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_counts(
        self,
        start_sample: int,
        stop_sample: int,
        *,
        columns: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Stored values of frames ``[start_sample, stop_sample)``, (samples, channels).

        ``out``: as in :meth:`transforms.readers.axion.AxionFile.read_counts`.
        """
        return fill(out, self._read_counts(start_sample, stop_sample, columns))

    def _read_counts(
        self, start_sample: int, stop_sample: int, columns: np.ndarray | None
    ) -> np.ndarray:
        start = max(0, int(start_sample))
        stop = min(self.n_samples, int(stop_sample))
        if stop <= start:
            width = self._data.shape[1] if columns is None else len(columns)
            return np.empty((0, width), dtype=self._data.dtype)
        if columns is None:
            return np.asarray(self._data[start:stop, :])
        cols = np.asarray(columns, dtype=np.int64)
        if len(cols) == 0:
            return np.empty((stop - start, 0), dtype=self._data.dtype)
        lo, hi = int(cols.min()), int(cols.max()) + 1
        # One rectangular read (HDF5 fancy selection is slow), then pick columns.
        block = np.asarray(self._data[start:stop, lo:hi])
        return block[:, cols - lo]


def open_nwb_ecephys(path: str | Path) -> NwbEcephysFile:
    """Open an NWB file written by :func:`write_nwb_ecephys` (or shaped like one).

    Raises
    ------
    DecodeError
        Unreadable file or inconsistent series / electrodes table.
    UnsupportedRecording
        No ``ElectricalSeries`` named ``ElectricalSeries``, no ``electrode_name`` column,
        or no Axion plate type in the device description.
    """
    return NwbEcephysFile(path)
