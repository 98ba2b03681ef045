"""The MEA spike table: how spikes travel between readers, the detector and metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.errors import InvalidArgument

#: ``electrode`` (``A1_23``), ``well`` (``A1``), ``time_s`` from recording start,
#: ``amplitude_uv`` (signed peak, nullable); rows sorted by ``time_s``.
MEA_SPIKE_SCHEMA: Final = pa.schema(
    [
        pa.field("electrode", pa.string(), nullable=False),
        pa.field("well", pa.string(), nullable=False),
        pa.field("time_s", pa.float64(), nullable=False),
        pa.field("amplitude_uv", pa.float32(), nullable=True),
    ]
)


def spikes_table(
    electrode: Sequence[str] | np.ndarray,
    time_s: Sequence[float] | np.ndarray,
    amplitude_uv: Sequence[float] | np.ndarray | None = None,
) -> pa.Table:
    """Build a spike table in the MEA convention, sorted by ``time_s`` then electrode.

    Parameters
    ----------
    electrode
        Electrode names (``A1_23``); the well is the part before ``_``.
    time_s
        Spike times in seconds from the recording start.
    amplitude_uv
        Signed amplitudes in µV; NaN or ``None`` entries become nulls.

    Raises
    ------
    InvalidArgument
        If the arrays differ in length or an electrode name has no well part.
    """
    names = pa.array(np.asarray(electrode, dtype=object), type=pa.string())
    times = np.asarray(time_s, dtype=np.float64)
    if len(names) != len(times):
        raise InvalidArgument(f"spikes_table: {len(names)} electrodes but {len(times)} times")
    encoded = names.dictionary_encode()
    return coded_spikes_table(
        encoded.dictionary,
        encoded.indices.to_numpy(zero_copy_only=False),
        times,
        amplitude_uv,
    )


def coded_spikes_table(
    dictionary: pa.StringArray,
    codes: np.ndarray,
    times: np.ndarray,
    amplitude_uv: Sequence[float] | np.ndarray | None,
) -> pa.Table:
    """:func:`spikes_table` from electrode codes into ``dictionary`` (the detector's form).

    Names are checked, split and ranked once per distinct electrode, not per spike.
    """
    if amplitude_uv is None:
        amps = pa.nulls(len(times), type=pa.float32())
    else:
        a = np.asarray(amplitude_uv, dtype=np.float32)
        if len(a) != len(times):
            raise InvalidArgument(f"spikes_table: {len(a)} amplitudes but {len(times)} times")
        amps = pa.array(a, mask=np.isnan(a), type=pa.float32())
    parts = pc.split_pattern(dictionary, "_", max_splits=1)
    if len(dictionary) and pc.any(pc.not_equal(pc.list_value_length(parts), 2)).as_py():
        raise InvalidArgument("spikes_table: electrode names must look like 'A1_23'")
    well_names = pc.list_element(parts, 0) if len(dictionary) else pa.array([], pa.string())
    if len(times) > 1:
        # by time, then electrode name: the names' rank stands in for the strings
        rank = np.empty(len(dictionary), dtype=np.int64)
        rank[pc.sort_indices(dictionary).to_numpy()] = np.arange(len(dictionary))
        order = np.lexsort((rank[codes], times))
        codes, times = codes[order], times[order]
        amps = amps.take(pa.array(order))
    take = pa.array(codes, type=pa.int64())
    return pa.table(
        [dictionary.take(take), well_names.take(take), pa.array(times), amps],
        schema=MEA_SPIKE_SCHEMA,
    )
