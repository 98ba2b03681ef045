"""Axion AxIS ``.raw`` (continuous) and ``.spk`` (spikes) files: read and write.

:func:`open_axion` returns an :class:`AxionFile` (a continuous source for ``.raw``,
spikes for ``.spk``); :func:`write_axion_raw` / :func:`write_axion_spk` write the
same container for synthetic plates and test fixtures.
"""

from transforms.formats.axion._format import (
    DEFAULT_VOLTAGE_SCALE_UV,
    FLAG_BAD_TAG,
    FLAG_CRC_MISMATCH,
    FLAG_EXTRA_DATA_SETS,
    FLAG_PARTIAL_FRAME,
    FLAG_TRUNCATED,
    FLAG_UNKNOWN_ENTRY,
    FLAG_UNSUPPORTED_SET,
    Annotation,
    Note,
    WellTreatment,
)
from transforms.formats.axion.reader import AxionFile, MappedCounts, open_axion
from transforms.formats.axion.writer import (
    SpikeRecords,
    write_axion_raw,
    write_axion_spk,
    write_axion_spk_legacy,
)

__all__ = [
    "DEFAULT_VOLTAGE_SCALE_UV",
    "FLAG_BAD_TAG",
    "FLAG_CRC_MISMATCH",
    "FLAG_EXTRA_DATA_SETS",
    "FLAG_PARTIAL_FRAME",
    "FLAG_TRUNCATED",
    "FLAG_UNKNOWN_ENTRY",
    "FLAG_UNSUPPORTED_SET",
    "Annotation",
    "AxionFile",
    "MappedCounts",
    "Note",
    "SpikeRecords",
    "WellTreatment",
    "open_axion",
    "write_axion_raw",
    "write_axion_spk",
    "write_axion_spk_legacy",
]
