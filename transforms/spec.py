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

from transforms.errors import CatalogUnavailable, SpecError
from transforms.untrusted import excerpt

#: Bumped whenever a transform changes the rows it produces; stored in every
#: row and in ``ingest_log`` so the nightly DAG can re-ingest stale files.
TRANSFORM_VERSION: Final = "0.3.0"

ENV_LAKE: Final = "NEUROCYTE_LAKE"
ENV_LANDING: Final = "NEUROCYTE_LANDING"
#: Names the local DuckDB catalog file (required when the lake is remote: an object
#: store cannot hold a DuckDB database file).
ENV_CATALOG: Final = "NEUROCYTE_CATALOG"
DEFAULT_LAKE: Final = "./lake"
DEFAULT_LANDING: Final = "./landing"

PARTITION_COLUMNS: Final = ("lab", "condition", "timepoint")

#: Letters, digits, '.', '_' and '-', not starting with '.' (so never '.' or
#: '..'), at most 64 characters. Nothing else can reach a path or a view.
_PARTITION_VALUE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")

#: Files the landing-zone scanner treats as recordings, by suffix. AxIS
#: spike-list exports are CSV (plain or gzipped) whose name contains
#: ``spike_list`` (AxIS's default export name); other CSVs are plate maps.
_SPIKE_LIST_NAME = re.compile(r"spike_?list.*\.csv(\.gz)?$", re.IGNORECASE)
#: Axion Neural Metric Tool exports: ``<recording>_neuralMetrics.csv`` (plain or gzipped).
_NEURAL_METRICS_NAME = re.compile(r"neural_?metrics.*\.csv(\.gz)?$", re.IGNORECASE)


def is_recording_name(name: str) -> bool:
    """A recording by its name: not hidden, not a sidecar, a known kind."""
    return recording_kind(name) is not None


def recording_kind(name: str) -> str | None:
    """What a landing file holds, from its name: ``abf``, ``nwb``, ``axion_raw``,
    ``axion_spk``, ``spike_list``, ``neural_metrics`` (an Axion Neural Metric Tool
    export), or ``None`` (not a recording: plate maps, sidecars, notes)."""
    lower = name.lower()
    if lower.endswith(SIDECAR_SUFFIX) or lower.startswith("."):  # sidecars, hidden, partial
        return None
    if _SPIKE_LIST_NAME.search(lower):
        return "spike_list"
    if _NEURAL_METRICS_NAME.search(lower):
        return "neural_metrics"
    suffix = lower.rsplit(".", 1)[-1] if "." in lower else ""
    return {"abf": "abf", "nwb": "nwb", "raw": "axion_raw", "spk": "axion_spk"}.get(suffix)


SIDECAR_SUFFIX: Final = ".meta.json"
#: A lab's parameter set, in its landing folder: ``<landing>/<lab>/neurocyte.toml``
#: (see :mod:`transforms.pipeline.paramset`).
PARAMS_FILE_NAME: Final = "neurocyte.toml"
#: Subject details stored with a recording (NWB ``/general/subject``'s names):
#: read from NWB files and sidecars, kept as columns of the recordings table and
#: written back into NWB exports. ``age`` is an ISO 8601 duration (``P60D``),
#: ``date_of_birth`` an ISO 8601 date or date-time, ``sex`` M/F/U/O.
SUBJECT_FIELDS: Final = ("species", "sex", "age", "genotype", "strain", "date_of_birth")
#: Sidecar keys a lab may set; anything else is an error, not silently dropped.
#: ``subject_id`` is NWB's name for ``subject`` (a sidecar may use either, not both).
SIDECAR_KEYS: Final = frozenset(
    {"cell_id", "subject", "subject_id", "notes", "lab", "condition", "timepoint"}
    | set(SUBJECT_FIELDS)
)

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
#: Axion Neural Metric Tool values, one row per well (or electrode) and metric.
MEA_VENDOR_METRICS: Final = "mea_vendor_metrics"

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
    MEA_VENDOR_METRICS,
)
DATA_TABLES: Final = (*ICEPHYS_TABLES, *MEA_TABLES)
ALL_TABLES: Final = (*DATA_TABLES, INGEST_LOG)
#: Curators' append-only audit trail (notes, exclusions, restores, accepted
#: quarantines: who, when, what, why). Not partitioned, never pruned or rewritten.
CURATION_LOG: Final = "curation_log"

#: ``not_retried``: a file whose latest attempt failed or was quarantined, seen again with
#: the same content, metadata and transform version (see :mod:`transforms.pipeline.identity`).
INGEST_STATUSES: Final = ("published", "quarantined", "failed", "duplicate", "not_retried")

#: A content hash (``file_id``: SHA-256, 64 hex digits) or an attempt / batch id
#: (``uuid4().hex``, 32 hex digits): lowercase hex, nothing else.
_HEX_ID = re.compile(r"^[0-9a-f]{32,64}$")
_FILE_ID = re.compile(r"^[0-9a-f]{64}$")
#: The file_id recorded for a file that could not be read at all (no content hash).
UNREADABLE_FILE_ID: Final = "0" * 64

CATALOG_FILE: Final = "catalog.duckdb"
QC_DIR: Final = "qc"
QUARANTINE_DIR: Final = "quarantine"
#: Losslessly compressed raw plates: ``<lake>/archive/raw/<file_id>.zarr``.
RAW_ARCHIVE_DIR: Final = "archive/raw"
RAW_ARCHIVE_SUFFIX: Final = ".zarr"


#: The project's declarative resources beside the package: one SQL file per view or
#: page query, one Great Expectations suite per table.
RESOURCE_DIRS: Final = ("sql", "expectations")


def resource_dir(name: str) -> Path:
    """``sql/`` or ``expectations/``: beside the package in a checkout, else packaged.

    Raises
    ------
    SpecError
        If ``name`` is not a resource directory, or it cannot be found.
    """
    if name not in RESOURCE_DIRS:
        raise SpecError(f"unknown resource directory {name!r}; known: {', '.join(RESOURCE_DIRS)}")
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / name, package / "_data" / name):
        if candidate.is_dir():
            return candidate
    raise SpecError(f"{name}/ directory not found next to the transforms package")


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
            f"invalid {name} {excerpt(value) if isinstance(value, str) else repr(value)}{where}: "
            "use 1-64 letters, digits, '.', '_' or '-' "
            "(not starting with '.')"
        )
    return value


#: The numeric column stored beside ``timepoint`` in every data table.
TIMEPOINT_DAYS_COLUMN: Final = "timepoint_days"
#: Days in vitro (``DIV14``) or postnatal days (``P21``, also ISO 8601's ``P21D``).
_TIMEPOINT_DAYS = re.compile(r"^(?:DIV|P)[_-]?(\d{1,5})(?:D)?$", re.IGNORECASE)


def timepoint_days(value: str | None) -> int | None:
    """Days of a timepoint partition value, so timepoints sort in time order.

    ``DIV14`` -> 14 (days in vitro), ``P21`` or ``P21D`` -> 21 (postnatal day),
    anything else (``t0``, ``baseline``, ``E18``) -> ``None``. Embryonic days
    are left out on purpose: E18 and P0 are two days apart in a mouse but 18
    and 0 on any shared scale, and a day count that mixes the two would sort
    wrongly; DIV and P are both days since a zero the lab chose (plating, birth).
    """
    if value is None:
        return None
    match = _TIMEPOINT_DAYS.match(value)
    return int(match.group(1)) if match else None


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

    @property
    def timepoint_days(self) -> int | None:
        """:func:`timepoint_days` of this partition's timepoint."""
        return timepoint_days(self.timepoint)


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
    """Location of a Delta table: one of :data:`ALL_TABLES` or :data:`CURATION_LOG`."""
    if table not in ALL_TABLES and table != CURATION_LOG:
        known = ", ".join((*ALL_TABLES, CURATION_LOG))
        raise SpecError(f"unknown table {table!r}; known: {known}")
    return _join(lake_root(lake), "tables", table)


def catalog_path(lake: str | None = None) -> str:
    """Where the DuckDB catalog file is published and read: the one rule.

    ``$NEUROCYTE_CATALOG`` if set; else ``<lake>/catalog.duckdb`` inside a local
    lake. A remote lake needs ``$NEUROCYTE_CATALOG``.

    Raises
    ------
    CatalogUnavailable
        If the lake is remote and ``$NEUROCYTE_CATALOG`` is not set.
    SpecError
        If ``$NEUROCYTE_CATALOG`` names a remote location.
    """
    explicit = os.environ.get(ENV_CATALOG)
    if explicit:
        if is_remote(explicit):
            raise SpecError(f"{ENV_CATALOG} must be a local path, got {explicit!r}")
        return str(Path(explicit).expanduser().resolve())
    root = lake_root(lake)
    if is_remote(root):
        raise CatalogUnavailable(
            f"the lake is remote ({root}); set {ENV_CATALOG} to a local path for the catalog"
        )
    return _join(root, CATALOG_FILE)


def qc_dir(lake: str | None = None) -> str:
    """Root of QC artefacts (GX project, Data Docs) inside the lake."""
    return _join(lake_root(lake), QC_DIR)


def quarantine_dir(file_id: str, lake: str | None = None) -> str:
    """Where a quarantined batch is kept for curators, by file_id."""
    return _join(lake_root(lake), QUARANTINE_DIR, check_file_id(file_id))


def raw_archive_path(file_id: str, lake: str | None = None) -> str:
    """``<lake>/archive/raw/<file_id>.zarr``: the compressed archive of a raw plate."""
    return _join(lake_root(lake), RAW_ARCHIVE_DIR, check_file_id(file_id) + RAW_ARCHIVE_SUFFIX)


def is_raw_archive_name(name: str) -> bool:
    """True for a raw archive's directory name (``<file_id>.zarr``)."""
    return name.lower().endswith(RAW_ARCHIVE_SUFFIX)


def staging_dir(ingest_id: str, lake: str | None = None) -> str:
    """``<lake>/_staging/<ingest_id>``: where an attempt's rows wait for the gate.

    Staging lives with the lake so the extract and commit tasks may run on
    different workers.
    """
    return _join(lake_root(lake), "_staging", check_id("ingest_id", ingest_id))


def check_id(name: str, value: object) -> str:
    """``value`` if it is a lowercase hex id (a file_id, ingest_id or batch_id).

    Ids are the only values that enter Delta predicates and paths, so this is
    what keeps them safe there.

    Raises
    ------
    SpecError
        If ``value`` is not 32-64 lowercase hex digits.
    """
    if not isinstance(value, str) or not _HEX_ID.match(value):
        raise SpecError(f"{name} must be lowercase hex, got {value!r}")
    return value


def check_file_id(value: object) -> str:
    """``value`` if it is a file_id: the SHA-256 hex digest of a file's bytes.

    Raises
    ------
    SpecError
        If ``value`` is not 64 lowercase hex digits.
    """
    if not isinstance(value, str) or not _FILE_ID.match(value):
        raise SpecError(f"file_id must be a 64-character lowercase hex digest, got {value!r}")
    return value


@dataclass(frozen=True)
class SourceFile:
    """One landed file, identified once when it is staged.

    Attributes
    ----------
    uri
        Where the file landed: an absolute local path or an ``s3://`` URI. This
        is what rows record as ``source_path`` and what raw access reads.
    name
        The file name (last path segment).
    size_bytes
        Its size when it was hashed.
    file_id
        SHA-256 of its bytes.
    local_path
        Where its bytes are readable on this worker now: ``uri`` itself for a
        local landing zone, a temporary copy for an object store.
    """

    uri: str
    name: str
    size_bytes: int
    file_id: str
    local_path: Path

    def __post_init__(self) -> None:
        check_file_id(self.file_id)
