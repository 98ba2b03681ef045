"""Continuous multichannel recordings (MEA plates): the source protocol and its helpers.

A *continuous source* is anything the spike detector, raw access and the archive can
read windows of: an Axion ``.raw`` file, an NWB ``ElectricalSeries``, an in-memory
array. Samples are integer ADC counts (float µV for arrays) in a time-major
``(samples, channels)`` block; ``voltage_scale_uv_per_count`` converts them to µV.

Streaming a plate allocates one chunk per step; a fresh 40 MB array costs its page
faults again every time (more than the copy from the page cache itself), so the
detector hands its own two alternating buffers to the reader instead
(``read_counts(..., out=)``, :func:`rows_of`, :func:`fill`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from transforms.errors import InvalidArgument
from transforms.recording.plate import parse_electrode, parse_well


class Chunk(NamedTuple):
    """A block of consecutive frames: ``data`` is (samples, channels) float32 µV."""

    start_sample: int
    start_s: float
    data: np.ndarray


@runtime_checkable
class ContinuousSource(Protocol):
    """What the detector, raw access and the archive need from a continuous recording."""

    sampling_rate_hz: float
    voltage_scale_uv_per_count: float
    n_samples: int
    electrodes: tuple[str, ...]

    def columns(
        self, *, electrodes: Sequence[str] | None = None, wells: Sequence[str] | None = None
    ) -> np.ndarray: ...

    def read_counts(
        self,
        start_sample: int,
        stop_sample: int,
        *,
        columns: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray: ...


class ContinuousBase:
    """Shared behaviour of the continuous sources: column selection by name.

    Subclasses set ``electrodes`` (data-column order) and ``source_name`` (for
    messages) and implement ``read_counts``.
    """

    electrodes: tuple[str, ...]
    source_name: str = "recording"

    def columns(
        self, *, electrodes: Sequence[str] | None = None, wells: Sequence[str] | None = None
    ) -> np.ndarray:
        """Data-column indices for an electrode and/or well selection (all if neither).

        Raises
        ------
        InvalidArgument
            If a name is malformed or the recording holds no such electrode / well.
        """
        return select_columns(self.electrodes, electrodes, wells, self.source_name)


class CountsSource(ContinuousBase):
    """A continuous source of ADC counts: voltage windows and chunks in µV from its
    ``read_counts``.

    Subclasses also set ``sampling_rate_hz``, ``n_samples`` and
    ``voltage_scale_uv_per_count``.
    """

    sampling_rate_hz: float
    n_samples: int
    voltage_scale_uv_per_count: float

    def read_counts(
        self,
        start_sample: int,
        stop_sample: int,
        *,
        columns: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        raise NotImplementedError

    def read(
        self,
        start_s: float,
        stop_s: float,
        *,
        electrodes: Sequence[str] | None = None,
        wells: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Voltages of a window (seconds from the recording start), (samples, channels)
        float32 µV; frames ``round(start_s·fs)`` to ``round(stop_s·fs)``, clamped."""
        if not (math.isfinite(start_s) and math.isfinite(stop_s)) or not 0 <= start_s <= stop_s:
            raise InvalidArgument(f"{self.source_name}: bad window [{start_s}, {stop_s}] s")
        cols = self.columns(electrodes=electrodes, wells=wells)
        k0 = round(start_s * self.sampling_rate_hz)
        k1 = round(stop_s * self.sampling_rate_hz)
        return counts_to_uv(self.read_counts(k0, k1, columns=cols), self.voltage_scale_uv_per_count)

    def iter_chunks(
        self,
        *,
        chunk_s: float,
        electrodes: Sequence[str] | None = None,
        wells: Sequence[str] | None = None,
    ) -> Iterator[Chunk]:
        """Consecutive windows of ``chunk_s`` seconds in µV (the last may be shorter)."""
        if not (math.isfinite(chunk_s) and chunk_s > 0):
            raise InvalidArgument(f"{self.source_name}: chunk_s must be positive, got {chunk_s}")
        cols = self.columns(electrodes=electrodes, wells=wells)
        step = max(1, round(chunk_s * self.sampling_rate_hz))
        for k in range(0, self.n_samples, step):
            counts = self.read_counts(k, k + step, columns=cols)
            yield Chunk(
                k, k / self.sampling_rate_hz, counts_to_uv(counts, self.voltage_scale_uv_per_count)
            )


class ArraySource(ContinuousBase):
    """An in-memory (samples, channels) µV array seen through the source protocol."""

    source_name = "array"

    def __init__(self, data: np.ndarray, sampling_rate_hz: float, electrodes: Sequence[str]):
        if data.ndim != 2:
            raise InvalidArgument(f"detect_spikes: expected (samples, channels), got {data.shape}")
        if len(electrodes) != data.shape[1]:
            raise InvalidArgument(
                f"detect_spikes: {data.shape[1]} columns but {len(electrodes)} electrode names"
            )
        self.data = data
        self.sampling_rate_hz = sampling_rate_hz
        self.voltage_scale_uv_per_count = 1.0
        self.n_samples = data.shape[0]
        self.electrodes = tuple(electrodes)

    def read_counts(
        self,
        start_sample: int,
        stop_sample: int,
        *,
        columns: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        block = self.data[max(0, start_sample) : min(self.n_samples, stop_sample)]
        return fill(out, block if columns is None else block[:, columns])


def counts_to_uv(counts: np.ndarray, scale_uv: float) -> np.ndarray:
    """ADC counts as float32 µV (``counts * scale_uv``)."""
    out = counts.astype(np.float32)
    out *= np.float32(scale_uv)
    return out


def select_columns(
    names: Sequence[str],
    electrodes: Sequence[str] | None,
    wells: Sequence[str] | None,
    source: str,
) -> np.ndarray:
    """Indices into ``names`` of the chosen electrodes, then the chosen wells' electrodes.

    Raises
    ------
    InvalidArgument
        A single string instead of a list, a malformed name, or a name the
        recording does not hold.
    """
    if isinstance(electrodes, str) or isinstance(wells, str):
        raise InvalidArgument(
            f"{source}: pass electrodes / wells as a list of names, not one string"
        )
    if electrodes is None and wells is None:
        return np.arange(len(names), dtype=np.int64)
    index = {n: i for i, n in enumerate(names)}
    picked: list[int] = []
    if electrodes is not None:
        for e in electrodes:
            parse_electrode(e)
            if e not in index:
                raise InvalidArgument(f"{source}: no electrode {e!r} in this recording")
            picked.append(index[e])
    if wells is not None:
        for w in wells:
            parse_well(w)
            cols = [i for n, i in index.items() if n.split("_", 1)[0] == w]
            if not cols:
                raise InvalidArgument(f"{source}: no electrode of well {w!r} in this recording")
            picked.extend(sorted(cols))
    seen: set[int] = set()
    ordered = [i for i in picked if not (i in seen or seen.add(i))]  # type: ignore[func-returns-value]
    return np.asarray(ordered, dtype=np.int64)


def rows_of(out: np.ndarray | None, n_rows: int, n_cols: int, dtype: np.dtype) -> np.ndarray:
    """The first ``n_rows`` rows of ``out``, or a new ``(n_rows, n_cols)`` array.

    Raises
    ------
    InvalidArgument
        If ``out`` has the wrong dtype, width or layout, or too few rows.
    """
    if out is None:
        return np.empty((n_rows, n_cols), dtype=dtype)
    if out.dtype != dtype or out.ndim != 2 or out.shape[1] != n_cols:
        raise InvalidArgument(
            f"out must be a ({n_rows}+, {n_cols}) {np.dtype(dtype)} array, "
            f"got {out.shape} {out.dtype}"
        )
    if out.shape[0] < n_rows or not out.flags.c_contiguous or not out.flags.writeable:
        raise InvalidArgument(
            f"out must be writeable, C-contiguous and hold {n_rows} rows, got {out.shape}"
        )
    return out[:n_rows]


def fill(out: np.ndarray | None, block: np.ndarray) -> np.ndarray:
    """``block`` itself, or a copy of it in the first rows of ``out`` (see :func:`rows_of`)."""
    if out is None:
        return block
    dest = rows_of(out, block.shape[0], block.shape[1], block.dtype)
    np.copyto(dest, block)
    return dest
