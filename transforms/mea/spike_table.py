"""The MEA spike table: how spikes travel between readers, the detector and metrics."""

from __future__ import annotations

from typing import Final

import pyarrow as pa

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
