"""The lake specification, stated once: names, partition values and paths.

Everything that names a table, a partition or a location in the lake goes
through this module, so a value is validated once and the same rule holds in
the CLI, the DAGs, the QC runner and the catalog (the IBL ONE approach).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from transforms.errors import SpecError

#: Bumped whenever a transform changes the rows it produces; stored in every
#: row and in ``ingest_log`` so the nightly DAG can re-ingest stale files.
TRANSFORM_VERSION: Final = "0.1.0"

ENV_LAKE: Final = "NEUROCYTE_LAKE"
ENV_LANDING: Final = "NEUROCYTE_LANDING"
DEFAULT_LAKE: Final = "./lake"
DEFAULT_LANDING: Final = "./landing"

PARTITION_COLUMNS: Final = ("lab", "condition", "timepoint")

#: Letters, digits, '.', '_' and '-', not starting with '.' (so never '.' or
#: '..'), at most 64 characters. Nothing else can reach a path or a view.
_PARTITION_VALUE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")

#: Files the landing-zone scanner treats as recordings, by suffix. AxIS
#: spike-list exports are CSV (plain or gzipped) whose name contains
#: ``spike_list`` (AxIS's default export name); other CSVs are plate maps.
RECORDING_SUFFIXES: Final = (".abf", ".nwb", ".raw", ".spk", ".csv", ".gz")
_SPIKE_LIST_NAME = re.compile(r"spike_?list.*\.csv(\.gz)?$", re.IGNORECASE)


def recording_kind(name: str) -> str | None:
    """What a landing file holds, from its name: ``abf``, ``nwb``, ``axion_raw``,
    ``axion_spk``, ``spike_list``, or ``None`` (not a recording: plate maps,
    sidecars, notes)."""
    lower = name.lower()
    if lower.endswith(SIDECAR_SUFFIX) or lower.startswith("."):
        return None
    if _SPIKE_LIST_NAME.search(lower):
        return "spike_list"
    suffix = lower.rsplit(".", 1)[-1] if "." in lower else ""
    return {"abf": "abf", "nwb": "nwb", "raw": "axion_raw", "spk": "axion_spk"}.get(suffix)


SIDECAR_SUFFIX: Final = ".meta.json"
#: Sidecar keys a lab may set; anything else is an error, not silently dropped.
SIDECAR_KEYS: Final = frozenset({"cell_id", "subject", "notes", "lab", "condition", "timepoint"})

# Tables. Data tables are partitioned by PARTITION_COLUMNS; ingest_log is not.
ICEPHYS_RECORDINGS: Final = "icephys_recordings"
ICEPHYS_SWEEPS: Final = "icephys_sweeps"
INGEST_LOG: Final = "ingest_log"

ICEPHYS_SPIKES: Final = "icephys_spikes"
ICEPHYS_CELL_FEATURES: Final = "icephys_cell_features"
MEA_RECORDINGS: Final = "mea_recordings"
MEA_SPIKES: Final = "mea_spikes"
MEA_ELECTRODE_METRICS: Final = "mea_electrode_metrics"
MEA_WELL_METRICS: Final = "mea_well_metrics"
MEA_BURSTS: Final = "mea_bursts"
MEA_NETWORK_BURSTS: Final = "mea_network_bursts"

ICEPHYS_TABLES: Final = (
    ICEPHYS_RECORDINGS,
    ICEPHYS_SWEEPS,
    ICEPHYS_SPIKES,
    ICEPHYS_CELL_FEATURES,
)
MEA_TABLES: Final = (
    MEA_RECORDINGS,
    MEA_SPIKES,
    MEA_ELECTRODE_METRICS,
    MEA_WELL_METRICS,
    MEA_BURSTS,
    MEA_NETWORK_BURSTS,
)
DATA_TABLES: Final = (*ICEPHYS_TABLES, *MEA_TABLES)
ALL_TABLES: Final = (*DATA_TABLES, INGEST_LOG)

INGEST_STATUSES: Final = ("published", "quarantined", "failed", "duplicate")

CATALOG_FILE: Final = "catalog.duckdb"
QC_DIR: Final = "qc"
QUARANTINE_DIR: Final = "quarantine"


def validate_partition_value(name: str, value: object, *, source: str = "") -> str:
    """Return ``value`` as a string if it is a legal partition value.

    Parameters
    ----------
    name
        The partition column (``lab``, ``condition`` or ``timepoint``).
    value
        The candidate value.
    source
        The file the value came from, for the error message.

    Raises
    ------
    SpecError
        If the value is empty, too long, or holds anything but letters,
        digits, ``.``, ``_`` and ``-`` (so it can never address a path
        outside its partition, nor break out of a SQL literal).
    """
    where = f" in {source}" if source else ""
    if name not in PARTITION_COLUMNS:
        raise SpecError(f"unknown partition column {name!r}{where}")
    if not isinstance(value, str) or not _PARTITION_VALUE.match(value):
        raise SpecError(
            f"invalid {name} {value!r}{where}: use 1-64 letters, digits, '.', '_' or '-' "
            "(not starting with '.')"
        )
    return value


@dataclass(frozen=True)
class Partition:
    """A validated lab/condition/timepoint triple."""

    lab: str
    condition: str
    timepoint: str

    @classmethod
    def of(
        cls, lab: object, condition: object, timepoint: object, *, source: str = ""
    ) -> Partition:
        return cls(
            validate_partition_value("lab", lab, source=source),
            validate_partition_value("condition", condition, source=source),
            validate_partition_value("timepoint", timepoint, source=source),
        )

    def as_dict(self) -> dict[str, str]:
        return {"lab": self.lab, "condition": self.condition, "timepoint": self.timepoint}


def is_remote(uri: str) -> bool:
    """True for object-store URIs (``s3://`` and the like)."""
    return "://" in uri and not uri.startswith("file://")


def _normalise_root(uri: str) -> str:
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if is_remote(uri):
        return uri.rstrip("/")
    return str(Path(uri).expanduser().resolve())


def lake_root(uri: str | None = None) -> str:
    """The lake root: ``uri``, else ``$NEUROCYTE_LAKE``, else ``./lake``.

    Local paths are made absolute so the catalog's views work from any
    working directory.
    """
    return _normalise_root(uri or os.environ.get(ENV_LAKE) or DEFAULT_LAKE)


def landing_root(uri: str | None = None) -> str:
    """The landing zone: ``uri``, else ``$NEUROCYTE_LANDING``, else ``./landing``."""
    return _normalise_root(uri or os.environ.get(ENV_LANDING) or DEFAULT_LANDING)


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def table_uri(table: str, lake: str | None = None) -> str:
    """Location of a Delta table; ``table`` must be one of :data:`ALL_TABLES`."""
    if table not in ALL_TABLES:
        raise SpecError(f"unknown table {table!r}; known: {', '.join(ALL_TABLES)}")
    return _join(lake_root(lake), "tables", table)


def catalog_path(lake: str | None = None) -> str:
    """The DuckDB catalog file published inside the (local) lake."""
    return _join(lake_root(lake), CATALOG_FILE)


def qc_dir(lake: str | None = None) -> str:
    """Root of QC artefacts (GX project, Data Docs) inside the lake."""
    return _join(lake_root(lake), QC_DIR)


def quarantine_dir(file_id: str, lake: str | None = None) -> str:
    """Where a quarantined batch is kept for curators, by file_id."""
    if not re.fullmatch(r"[0-9a-f]{64}", file_id):
        raise SpecError(f"file_id must be a SHA-256 hex digest, got {file_id!r}")
    return _join(lake_root(lake), QUARANTINE_DIR, file_id)
