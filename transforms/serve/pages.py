"""Queries behind the Neurocyte page: JSON-ready dicts from the published catalog.

Every function takes an open, read-only DuckDB connection to the catalog
(:func:`open_catalog`) and returns plain ``dict`` / ``list`` values (NaN as
None, timestamps as ISO strings), ready for ``json.dumps``. Views may be
missing (a lake with no MEA data, or a catalog published before a view
existed): each function then returns its empty shape with ``available`` false
and a ``message`` saying what is missing, so a chart shows "no data" instead
of an error.

Identifiers in the SQL come only from the fixed whitelists below (:data:`METRICS`,
the view names); every value (file ids, wells, sweep numbers) is a DuckDB
parameter.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from transforms import spec
from transforms.errors import SpecError

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection
from transforms.pipeline import qc

#: Partition columns, in display order.
PARTITION: Final = spec.PARTITION_COLUMNS
#: Most marks sent for one raster (beyond it spikes are binned per electrode, never cut).
RASTER_MAX_SPIKES: Final = 20_000
#: Longest sweep read when the catalog does not say (raw access's longest window).
MAX_SWEEP_S: Final = 600.0
#: Points per displayed sweep trace (min/max envelope).
TRACE_MAX_POINTS: Final = 4_000

_WELL: Final = re.compile(r"^([A-Z])(\d{1,2})$")
_NUM: Final = re.compile(r"(\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Metric:
    """A metric whose trajectory over timepoints can be plotted.

    Attributes
    ----------
    key
        Public name (used in URLs).
    view
        Catalog view holding it.
    column
        Column of ``view``; for ``per_file`` metrics the column aggregated per file.
    label
        Axis label with unit.
    unit_of_observation
        What one value is: ``cell`` or ``well``.
    per_file
        Aggregate ``column`` per ``file_id`` with ``max`` first (sweep-level columns).
    active_wells_only
        Only wells with at least one active electrode count (the rule of
        ``well_metrics_by_condition``: a metric defined over active electrodes has
        no value for a well without any, so its stored 0 is not an observation).
    """

    key: str
    view: str
    column: str
    label: str
    unit_of_observation: str
    per_file: bool = False
    active_wells_only: bool = False


METRICS: Final[tuple[Metric, ...]] = (
    Metric("rheobase_pa", "icephys_cell_features", "rheobase_pa", "Rheobase (pA)", "cell"),
    Metric(
        "fi_slope_hz_per_pa",
        "icephys_cell_features",
        "fi_slope_hz_per_pa",
        "f-I slope (Hz/pA)",
        "cell",
    ),
    Metric(
        "input_resistance_mohm",
        "icephys_cell_features",
        "input_resistance_mohm",
        "Input resistance (MΩ)",
        "cell",
    ),
    Metric("tau_ms", "icephys_cell_features", "tau_ms", "Membrane τ (ms)", "cell"),
    Metric("v_rest_mv", "icephys_cell_features", "v_rest_mv", "Resting Vm (mV)", "cell"),
    Metric("sag_ratio", "icephys_cell_features", "sag_ratio", "Sag ratio", "cell"),
    Metric(
        "max_avg_rate_hz",
        "icephys_sweeps",
        "avg_rate_hz",
        "Max firing rate over long-square sweeps (Hz)",
        "cell",
        per_file=True,
    ),
    Metric(
        "mean_firing_rate_hz",
        "mea_well_metrics",
        "mean_firing_rate_hz",
        "Well mean firing rate (Hz)",
        "well",
    ),
    Metric(
        "weighted_mean_firing_rate_hz",
        "mea_well_metrics",
        "weighted_mean_firing_rate_hz",
        "Well weighted mean firing rate (Hz)",
        "well",
        active_wells_only=True,
    ),
    Metric(
        "n_active_electrodes",
        "mea_well_metrics",
        "n_active_electrodes",
        "Active electrodes per well",
        "well",
    ),
    Metric("nb_count", "mea_well_metrics", "nb_count", "Network bursts per well", "well"),
    Metric(
        "nb_frequency_hz",
        "mea_well_metrics",
        "nb_frequency_hz",
        "Network burst frequency (Hz)",
        "well",
        active_wells_only=True,
    ),
    Metric(
        "nb_percentage",
        "mea_well_metrics",
        "nb_percentage",
        "Spikes in network bursts (%)",
        "well",
        active_wells_only=True,
    ),
    Metric("sttc", "mea_well_metrics", "sttc", "Spike time tiling coefficient", "well"),
)
_METRIC_BY_KEY: Final = {m.key: m for m in METRICS}

#: Every view name that can appear in generated SQL.
KNOWN_VIEWS: Final = frozenset(
    {
        "ingest_log",
        "published",
        "icephys_recordings",
        "icephys_sweeps",
        "icephys_spikes",
        "icephys_cell_features",
        "mea_recordings",
        "mea_spikes",
        "mea_electrode_metrics",
        "mea_well_metrics",
        "mea_bursts",
        "mea_network_bursts",
    }
)


# --------------------------------------------------------------------------- plumbing


def open_catalog(lake: str | None = None) -> DuckDBPyConnection | None:
    """The published catalog opened read-only, or None when there is none yet."""
    from transforms.lake.catalog import connect

    if not Path(spec.catalog_path(lake)).is_file():
        return None
    return connect(lake=lake, read_only=True)


#: The catalog's schema (view -> columns) read once for the duration of
#: :func:`schema_cache`, for the connection it was read from.
_SCHEMA: ContextVar[tuple[DuckDBPyConnection, dict[str, set[str]]] | None] = ContextVar(
    "neurocyte_catalog_schema", default=None
)


@contextmanager
def schema_cache(con: DuckDBPyConnection) -> Iterator[None]:
    """Within the block, :func:`views` and :func:`columns` of ``con`` are answered from one
    read of its schema (a page request asks for dozens; each is a catalog query)."""
    rows = con.execute("SELECT table_name, column_name FROM information_schema.columns").fetchall()
    found: dict[str, set[str]] = {}
    for table, column in rows:
        found.setdefault(table, set()).add(column)
    token = _SCHEMA.set((con, found))
    try:
        yield
    finally:
        _SCHEMA.reset(token)


def _cached(con: DuckDBPyConnection) -> dict[str, set[str]] | None:
    got = _SCHEMA.get()
    return got[1] if got is not None and got[0] is con else None


def views(con: DuckDBPyConnection) -> set[str]:
    """Names of the views (and tables) in the catalog."""
    cached = _cached(con)
    if cached is not None:
        return set(cached)
    rows = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    return {r[0] for r in rows}


def columns(con: DuckDBPyConnection, view: str) -> set[str]:
    """Column names of a view (empty when it does not exist)."""
    cached = _cached(con)
    if cached is not None:
        return set(cached.get(view, ()))
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [view]
    ).fetchall()
    return {r[0] for r in rows}


def _need(con: DuckDBPyConnection, view: str, cols: Iterable[str]) -> str | None:
    """None if ``view`` exists with ``cols``, else the reason it cannot be used."""
    if view not in KNOWN_VIEWS:
        raise SpecError(f"unknown view {view!r}")
    have = columns(con, view)
    if not have:
        return f"view {view} is not in the catalog"
    missing = [c for c in cols if c not in have]
    if missing:
        return f"view {view} has no column {', '.join(missing)}"
    return None


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _records(con: DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cur = con.execute(sql, list(params))
    names = [d[0] for d in cur.description]
    return [{n: _clean(v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]


def _unavailable(message: str, **empty: Any) -> dict[str, Any]:
    return {"available": False, "message": message, **empty}


def timepoint_key(value: str | None) -> tuple[int, float, str]:
    """Sort key putting ``P7`` before ``P14`` and ``DIV3`` before ``DIV14``."""
    if value is None:
        return (2, 0.0, "")
    m = _NUM.search(value)
    if m is None:
        return (1, 0.0, value)
    return (0, float(m.group(1)), value)


# --------------------------------------------------------------------------- overview


_LATEST_ATTEMPTS: Final = """
    SELECT *
    FROM ingest_log
    WHERE status NOT IN ('duplicate', 'not_retried')
    QUALIFY row_number() OVER (
        PARTITION BY file_id, source_path
        ORDER BY coalesce(log_seq, -1) DESC, finished_at DESC, ingest_id DESC
    ) = 1
"""


def overview(con: DuckDBPyConnection) -> dict[str, Any]:
    """Files per lab / condition / timepoint and QC status, and recordings per partition.

    The status of a file is that of its latest attempt other than ``duplicate`` or
    ``not_retried`` (a re-submitted, already published file stays ``published``; an
    unchanged failed one stays ``failed``).

    Returns
    -------
    dict
        ``status`` (rows of lab, condition, timepoint, status, n_files),
        ``totals`` (status -> n_files), ``recordings`` (rows of lab, condition,
        timepoint, n_cells, n_plates, n_wells) and ``available``.
    """
    reason = _need(con, "ingest_log", ("file_id", "status", "source_path", "finished_at"))
    if reason:
        return _unavailable(reason, status=[], totals={}, recordings=[])
    status = _records(
        con,
        f"""
        SELECT lab, condition, timepoint, status, count(*) AS n_files
        FROM ({_LATEST_ATTEMPTS})
        GROUP BY ALL ORDER BY lab NULLS LAST, condition NULLS LAST, timepoint NULLS LAST, status
        """,  # noqa: S608  (constant SQL)
    )
    totals: dict[str, int] = {}
    for row in status:
        totals[row["status"]] = totals.get(row["status"], 0) + int(row["n_files"])
    counts: dict[tuple[Any, ...], dict[str, Any]] = {}

    def add(view: str, count_sql: str, key: str) -> None:
        if _need(con, view, ("file_id", *PARTITION)):
            return
        rows = _records(
            con,
            f"SELECT lab, condition, timepoint, {count_sql} AS n "  # noqa: S608
            f"FROM {view} GROUP BY ALL",
        )
        for r in rows:
            part = tuple(r[c] for c in PARTITION)
            entry = counts.setdefault(
                part,
                {
                    **dict(zip(PARTITION, part, strict=True)),
                    "n_cells": 0,
                    "n_plates": 0,
                    "n_wells": 0,
                },
            )
            entry[key] += int(r["n"])

    add("icephys_recordings", "count(DISTINCT file_id)", "n_cells")
    add("mea_recordings", "count(DISTINCT file_id)", "n_plates")
    if not _need(con, "mea_well_metrics", ("well",)):
        add("mea_well_metrics", "count(DISTINCT (file_id, well))", "n_wells")
    recordings = sorted(
        counts.values(),
        key=lambda r: (str(r["lab"]), str(r["condition"]), timepoint_key(r["timepoint"])),
    )
    return {"available": True, "status": status, "totals": totals, "recordings": recordings}


def _docs_links(
    qc_report: str | None, reason: str | None, *, lake: str | None
) -> list[dict[str, Any]]:
    """The Data Docs pages of one attempt, from its ``ingest_log.qc_report``.

    ``qc_report`` maps each validated table to its page (relative to
    ``<lake>/qc/docs``); a table failed for this file when a line of the file's
    ``reason`` starts with ``<table>: `` (failures are attributed per file even
    when the batch held several files).
    """
    if not qc_report:
        return []
    try:
        pages = json.loads(qc_report)
    except ValueError:
        return []
    if not isinstance(pages, dict):
        return []
    docs = qc.docs_dir(lake).resolve()
    lines = [part.strip() for part in (reason or "").split(" | ") if part.strip()]
    out: list[dict[str, Any]] = []
    for table, rel in sorted(pages.items()):
        if not isinstance(table, str) or not isinstance(rel, str):
            continue
        page = (docs / rel).resolve()
        inside = page.is_relative_to(docs)
        mine = [ln.split(": ", 1)[1] for ln in lines if ln.startswith(f"{table}: ")]
        out.append(
            {
                "table": table,
                "success": not mine,
                "failed_expectations": [m.split("(", 1)[0] for m in mine],
                "path": page.relative_to(docs).as_posix() if inside and page.is_file() else None,
            }
        )
    return out


def problems(con: DuckDBPyConnection, *, lake: str | None = None) -> dict[str, Any]:
    """Quarantined and failed files (latest attempt), with reasons and Data Docs pages.

    Returns
    -------
    dict
        ``files``: rows of file_name, file_id, ingest_id, status, reason, lab,
        condition, timepoint, finished_at, source_path and ``docs`` (per validated
        table: ``table``, ``success``, ``failed_expectations`` and ``path`` of its
        page relative to ``<lake>/qc/docs``, None when not built yet).
    """
    reason = _need(con, "ingest_log", ("file_id", "ingest_id", "status", "reason", "source_path"))
    if reason:
        return _unavailable(reason, files=[])
    report = "qc_report" if "qc_report" in columns(con, "ingest_log") else "NULL::VARCHAR"
    rows = _records(
        con,
        f"""
        SELECT file_name, file_id, ingest_id, status, reason, lab, condition, timepoint,
               finished_at, source_path, {report} AS qc_report
        FROM ({_LATEST_ATTEMPTS})
        WHERE status IN ('quarantined', 'failed')
        ORDER BY status DESC, finished_at DESC, file_name
        """,  # noqa: S608  (constant SQL)
    )
    for row in rows:
        row["docs"] = _docs_links(row.pop("qc_report"), row["reason"], lake=lake)
    return {"available": True, "files": rows}


# --------------------------------------------------------------------------- patch clamp


def cells(con: DuckDBPyConnection) -> dict[str, Any]:
    """Published patch-clamp recordings (one per cell), with the cell features if any."""
    reason = _need(con, "icephys_recordings", ("file_id", "file_name", *PARTITION))
    if reason:
        return _unavailable(reason, cells=[])
    have = columns(con, "icephys_recordings")
    opt = [c for c in ("cell_id", "clamp_mode", "n_sweeps", "sampling_rate_hz") if c in have]
    select = ", ".join(f"r.{c}" for c in ("file_id", "file_name", *PARTITION, *opt))
    feature_cols = [
        c
        for c in ("rheobase_pa", "fi_slope_hz_per_pa", "input_resistance_mohm", "tau_ms")
        if c in columns(con, "icephys_cell_features")
    ]
    join = ""
    if feature_cols:
        select += ", " + ", ".join(f"f.{c}" for c in feature_cols)
        join = "LEFT JOIN icephys_cell_features f ON f.file_id = r.file_id"
        if "analysis" in columns(con, "icephys_cell_features"):
            # one row per cell: these are long-square features (ramp rows have none)
            join += " AND f.analysis = 'long_square'"
    rows = _records(
        con,
        f"SELECT {select} FROM icephys_recordings r {join} "  # noqa: S608  (whitelisted)
        "ORDER BY r.lab, r.condition, r.timepoint, r.file_name",
    )
    return {"available": True, "cells": rows}


def fi_curves(con: DuckDBPyConnection, *, file_id: str | None = None) -> dict[str, Any]:
    """f-I curves: long-square sweeps' stimulus amplitude vs spike count and rate.

    Parameters
    ----------
    file_id
        One cell, or every published cell when None.

    Returns
    -------
    dict
        ``curves``: per cell ``file_id``, ``cell_id``, ``file_name``, partition and
        the lists ``stim_amp_pa``, ``spike_count``, ``avg_rate_hz``,
        ``sweep_number``, ``qc_pass``, ``qc_reasons`` sorted by amplitude (the
        page draws QC-failed sweeps apart, on their own axes, labelled with
        their reasons, so they never stretch the curves' axes).
    """
    needed = ("file_id", "sweep_number", "stimulus_kind", "stim_amp_pa", "spike_count")
    reason = _need(con, "icephys_sweeps", needed)
    if reason:
        return _unavailable(reason, curves=[])
    have = columns(con, "icephys_sweeps")
    rate = "s.avg_rate_hz" if "avg_rate_hz" in have else "NULL::DOUBLE"
    qc_pass = "s.qc_pass" if "qc_pass" in have else "NULL::BOOLEAN"
    qc_reasons = "s.qc_reasons" if "qc_reasons" in have else "NULL::VARCHAR"
    rec_cols = columns(con, "icephys_recordings")
    cell_id = "r.cell_id" if "cell_id" in rec_cols else "NULL::VARCHAR"
    file_name = "r.file_name" if "file_name" in rec_cols else "NULL::VARCHAR"
    join = "LEFT JOIN icephys_recordings r USING (file_id)" if rec_cols else ""
    if not rec_cols:
        cell_id = file_name = "NULL::VARCHAR"
    where = "s.stimulus_kind = 'long_square' AND s.stim_amp_pa IS NOT NULL"
    params: list[Any] = []
    if file_id is not None:
        where += " AND s.file_id = ?"
        params.append(spec.check_file_id(file_id))
    part = ", ".join(f"s.{c}" for c in PARTITION if c in have)
    rows = _records(
        con,
        f"""
        SELECT s.file_id, {cell_id} AS cell_id, {file_name} AS file_name,
               {part + "," if part else ""}
               s.sweep_number, s.stim_amp_pa, s.spike_count, {rate} AS avg_rate_hz,
               {qc_pass} AS qc_pass, {qc_reasons} AS qc_reasons
        FROM icephys_sweeps s {join}
        WHERE {where}
        ORDER BY s.file_id, s.stim_amp_pa, s.sweep_number
        """,  # noqa: S608  (identifiers whitelisted, values parameters)
        params,
    )
    curves: dict[str, dict[str, Any]] = {}
    for r in rows:
        c = curves.setdefault(
            r["file_id"],
            {
                "file_id": r["file_id"],
                "cell_id": r["cell_id"],
                "file_name": r["file_name"],
                **{k: r.get(k) for k in PARTITION},
                "stim_amp_pa": [],
                "spike_count": [],
                "avg_rate_hz": [],
                "sweep_number": [],
                "qc_pass": [],
                "qc_reasons": [],
            },
        )
        for key in (
            "stim_amp_pa",
            "spike_count",
            "avg_rate_hz",
            "sweep_number",
            "qc_pass",
            "qc_reasons",
        ):
            c[key].append(r[key])
    ordered = sorted(
        curves.values(),
        key=lambda c: (str(c["condition"]), timepoint_key(c["timepoint"]), str(c["cell_id"])),
    )
    return {"available": True, "curves": ordered}


def example_sweep_numbers(con: DuckDBPyConnection, file_id: str) -> list[dict[str, Any]]:
    """Up to three telling long-square sweeps of a cell.

    The most hyperpolarising step, the first step with spikes (rheobase) and the
    step with the most spikes; sweeps of any kind when the cell has no long squares.
    """
    spec.check_file_id(file_id)
    needed = ("file_id", "sweep_number", "stimulus_kind", "stim_amp_pa", "spike_count")
    if _need(con, "icephys_sweeps", needed):
        return []
    rows = _records(
        con,
        "SELECT sweep_number, stimulus_kind, stim_amp_pa, spike_count FROM icephys_sweeps "
        "WHERE file_id = ? ORDER BY sweep_number",
        [file_id],
    )
    long_sq = [
        r for r in rows if r["stimulus_kind"] == "long_square" and r["stim_amp_pa"] is not None
    ]
    if not long_sq:
        return [{**r, "role": "sweep"} for r in rows[:1]]
    picks: list[dict[str, Any]] = []

    def pick(row: dict[str, Any] | None, role: str) -> None:
        if row is not None and all(p["sweep_number"] != row["sweep_number"] for p in picks):
            picks.append({**row, "role": role})

    pick(min(long_sq, key=lambda r: r["stim_amp_pa"]), "most hyperpolarising")
    spiking = sorted(
        (r for r in long_sq if (r["spike_count"] or 0) > 0), key=lambda r: r["stim_amp_pa"]
    )
    pick(spiking[0] if spiking else None, "rheobase")
    pick(
        max(spiking, key=lambda r: (r["spike_count"], -r["stim_amp_pa"])) if spiking else None,
        "most spikes",
    )
    return picks


def sweep_spikes(con: DuckDBPyConnection, file_id: str, sweep: int) -> dict[str, Any]:
    """Detected spikes of one sweep (times from the sweep start) from ``icephys_spikes``."""
    return spikes_of_sweeps(con, file_id, [sweep])[int(sweep)]


def spikes_of_sweeps(
    con: DuckDBPyConnection, file_id: str, sweeps: Sequence[int]
) -> dict[int, dict[str, Any]]:
    """:func:`sweep_spikes` of several sweeps of one file, in one query."""
    spec.check_file_id(file_id)
    numbers = [int(n) for n in sweeps]
    reason = _need(con, "icephys_spikes", ("file_id", "sweep_number", "peak_t_s", "peak_v_mv"))
    if reason:
        return {
            n: _unavailable(reason, peak_t_s=[], peak_v_mv=[], threshold_t_s=[], threshold_v_mv=[])
            for n in numbers
        }
    have = columns(con, "icephys_spikes")
    thr_t = "threshold_t_s" if "threshold_t_s" in have else "NULL::DOUBLE"
    thr_v = "threshold_v_mv" if "threshold_v_mv" in have else "NULL::DOUBLE"
    order = "spike_index" if "spike_index" in have else "peak_t_s"
    rows = _records(
        con,
        f"SELECT sweep_number, peak_t_s, peak_v_mv, {thr_t} AS threshold_t_s, "  # noqa: S608
        f"{thr_v} AS threshold_v_mv FROM icephys_spikes "
        f"WHERE file_id = ? AND list_contains(?, sweep_number) ORDER BY sweep_number, {order}",
        [file_id, numbers],
    )
    keys = ("peak_t_s", "peak_v_mv", "threshold_t_s", "threshold_v_mv")
    out: dict[int, dict[str, Any]] = {
        n: {"available": True, **{k: [] for k in keys}} for n in numbers
    }
    for r in rows:
        spikes = out[int(r["sweep_number"])]
        for k in keys:
            spikes[k].append(r[k])
    return out


def example_sweeps(
    con: DuckDBPyConnection,
    file_id: str,
    *,
    lake: str | None = None,
    max_points: int = TRACE_MAX_POINTS,
) -> list[dict[str, Any]]:
    """The traces of :func:`example_sweep_numbers` (each :func:`sweep_trace` plus its
    ``role``), their rows and spikes read in one query each."""
    from transforms.serve.raw import fetch_snippet

    picks = example_sweep_numbers(con, file_id)
    if not picks:
        return []
    numbers = [int(p["sweep_number"]) for p in picks]
    durations: dict[int, Any] = {}
    if not _need(con, "icephys_sweeps", ("file_id", "sweep_number", "duration_s")):
        durations = dict(
            con.execute(
                "SELECT sweep_number, duration_s FROM icephys_sweeps "
                "WHERE file_id = ? AND list_contains(?, sweep_number)",
                [file_id, numbers],
            ).fetchall()
        )
    spikes = spikes_of_sweeps(con, file_id, numbers)
    out = []
    for p, n in zip(picks, numbers, strict=True):
        stop = durations.get(n) or MAX_SWEEP_S
        snip = fetch_snippet(file_id, lake=lake, sweep=n, start_s=0.0, stop_s=stop)
        row = {"stim_amp_pa": p.get("stim_amp_pa"), "spike_count": p.get("spike_count")}
        trace = _trace_of(con, snip, file_id, n, [row], max_points=max_points, spikes=spikes[n])
        out.append({**trace, "role": p["role"]})
    return out


def sweep_trace(
    con: DuckDBPyConnection,
    file_id: str,
    sweep: int,
    *,
    lake: str | None = None,
    max_points: int = TRACE_MAX_POINTS,
) -> dict[str, Any]:
    """One sweep's response read from the raw file (min/max envelope) with its spikes.

    Returns
    -------
    dict
        ``t_s`` and ``y`` (decimated trace), ``unit``, ``sweep``,
        ``sampling_rate_hz``, ``spikes`` (see :func:`sweep_spikes`) and the
        sweep's ``stim_amp_pa`` / ``spike_count`` where known.
    """
    snip, rows = _sweep_snippet(con, file_id, sweep, lake=lake)
    return _trace_of(con, snip, file_id, sweep, rows, max_points=max_points)


def _sweep_snippet(
    con: DuckDBPyConnection, file_id: str, sweep: int, *, lake: str | None
) -> tuple[Any, list[dict[str, Any]]]:
    """The whole sweep read from the raw file, and its ``icephys_sweeps`` row (if any)."""
    from transforms.serve.raw import fetch_snippet

    spec.check_file_id(file_id)
    rows = []
    if not _need(con, "icephys_sweeps", ("file_id", "sweep_number", "duration_s")):
        rows = _records(
            con,
            "SELECT duration_s, stim_amp_pa, spike_count FROM icephys_sweeps "
            "WHERE file_id = ? AND sweep_number = ?",
            [file_id, int(sweep)],
        )
    duration = rows[0]["duration_s"] if rows and rows[0]["duration_s"] else MAX_SWEEP_S
    snip = fetch_snippet(file_id, lake=lake, sweep=int(sweep), start_s=0.0, stop_s=duration)
    return snip, rows


def _trace_of(
    con: DuckDBPyConnection,
    snip: Any,
    file_id: str,
    sweep: int,
    rows: list[dict[str, Any]],
    *,
    max_points: int,
    spikes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from transforms.serve.raw import envelope

    idx, y = envelope(snip.data[:, 0], max_points)
    t = snip.start_s + idx / snip.sampling_rate_hz
    return {
        "available": True,
        "file_id": file_id,
        "sweep": int(sweep),
        "unit": snip.unit,
        "sampling_rate_hz": snip.sampling_rate_hz,
        "n_samples": snip.n_samples,
        "t_s": [round(float(v), 6) for v in t],
        "y": [_clean(float(v)) for v in y],
        "stim_amp_pa": rows[0].get("stim_amp_pa") if rows else None,
        "spike_count": rows[0].get("spike_count") if rows else None,
        "verification": snip.verification,
        "spikes": sweep_spikes(con, file_id, int(sweep)) if spikes is None else spikes,
    }


# --------------------------------------------------------------------------- MEA


def plates(con: DuckDBPyConnection) -> dict[str, Any]:
    """Published MEA plates (``mea_recordings``)."""
    reason = _need(con, "mea_recordings", ("file_id",))
    if reason:
        return _unavailable(reason, plates=[])
    have = columns(con, "mea_recordings")
    wanted = (
        "file_id",
        "file_name",
        *PARTITION,
        "plate_type",
        "layout",
        "layout_name",
        "n_wells",
        "n_electrodes",
        "duration_s",
        "sampling_rate_hz",
    )
    cols = [c for c in wanted if c in have]
    order = "file_name" if "file_name" in have else "file_id"
    rows = _records(
        con,
        f"SELECT DISTINCT ON (file_id) {', '.join(cols)} FROM mea_recordings "  # noqa: S608
        f"ORDER BY file_id, {order}",
    )
    rows.sort(key=lambda r: (str(r.get("file_name")), r["file_id"]))
    return {"available": True, "plates": rows}


def _check_well(well: str) -> str:
    if not isinstance(well, str) or not _WELL.match(well):
        raise SpecError(f"well must look like B2, got {well!r}")
    return well


def _electrode_key(name: str) -> tuple[int, int, str]:
    well = name.split("_", 1)[0]
    m = _WELL.match(well)
    if m is None:
        return (99, 0, name)
    return (ord(m.group(1)) - ord("A"), int(m.group(2)), name)


def raster(
    con: DuckDBPyConnection,
    file_id: str,
    *,
    well: str | None = None,
    start_s: float | None = None,
    stop_s: float | None = None,
    max_marks: int = RASTER_MAX_SPIKES,
) -> dict[str, Any]:
    """Spike raster of a plate (or one well) over a time window, decimated honestly.

    Every spike of the window is accounted for. When the window holds at most
    ``max_marks`` spikes each is one mark; otherwise the window is cut into equal
    bins, ``n_bins = max_marks // n_electrodes``, and each electrode has one mark
    per bin holding at least one spike, at the bin's centre, with the bin's spike
    count (``count``). The counts sum to ``n_spikes``; nothing is dropped, and
    the window is never cut to its first spikes. (With more electrodes than
    ``max_marks``, one bin: one mark per electrode.)

    Parameters
    ----------
    well
        One well (None: the whole plate).
    start_s, stop_s
        The window (default: the whole recording, 0 to its ``duration_s``).
    max_marks
        Most marks returned.

    Returns
    -------
    dict
        ``electrodes`` (row order: well, then electrode), ``wells`` (each well's
        first row index), ``electrode_index``, ``time_s`` and ``count`` per mark,
        ``n_spikes`` (in the window), ``n_marks``, ``decimated``, ``bin_s`` (None
        when not decimated), ``start_s``, ``stop_s``, ``duration_s``.
    """
    spec.check_file_id(file_id)
    if isinstance(max_marks, bool) or not 1 <= int(max_marks) <= 1_000_000:
        raise SpecError(f"max_marks must be in 1..1000000, got {max_marks!r}")
    empty = {"electrodes": [], "electrode_index": [], "time_s": [], "count": [], "n_spikes": 0}
    reason = _need(con, "mea_spikes", ("file_id", "electrode", "time_s"))
    if reason:
        return _unavailable(reason, **empty)
    where: str = "file_id = ?"
    params: list[Any] = [file_id]
    if well is not None:
        have_well = "well" in columns(con, "mea_spikes")
        where += " AND well = ?" if have_well else " AND split_part(electrode, '_', 1) = ?"
        params.append(_check_well(well))
    duration: float | None = None
    if not _need(con, "mea_recordings", ("file_id", "duration_s")):
        got = con.execute(
            "SELECT max(duration_s) FROM mea_recordings WHERE file_id = ?", [file_id]
        ).fetchone()
        duration = float(got[0]) if got and got[0] is not None else None
    last = con.execute(
        f"SELECT max(time_s) FROM mea_spikes WHERE {where}",  # noqa: S608  (constant SQL)
        params,
    ).fetchone()
    last_s = float(last[0]) if last and last[0] is not None else 0.0
    lo = 0.0 if start_s is None else float(start_s)
    hi = float(stop_s) if stop_s is not None else max(duration or 0.0, last_s)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise SpecError(f"raster window must have start_s <= stop_s, got {lo}..{hi}")
    where += " AND time_s >= ? AND time_s <= ?"
    params += [lo, hi]
    stats = con.execute(
        f"SELECT count(*), count(DISTINCT electrode) FROM mea_spikes WHERE {where}",  # noqa: S608
        params,
    ).fetchone()
    total, n_elec = (int(stats[0]), int(stats[1])) if stats else (0, 0)
    bin_s: float | None = None
    if total <= max_marks:
        rows = con.execute(
            f"SELECT electrode, time_s, 1 FROM mea_spikes WHERE {where} "  # noqa: S608
            "ORDER BY time_s",
            params,
        ).fetchall()
    else:
        n_bins = max(1, int(max_marks) // max(1, n_elec))
        bin_s = max((hi - lo) / n_bins, 1e-9)
        rows = con.execute(
            f"""
            SELECT electrode, ? + (least(floor((time_s - ?) / ?), ? - 1) + 0.5) * ? AS t,
                   count(*) AS n
            FROM mea_spikes WHERE {where}
            GROUP BY electrode, t ORDER BY t
            """,  # noqa: S608  (constant SQL, values parameters)
            [lo, lo, bin_s, n_bins, bin_s, *params],
        ).fetchall()
    names = sorted({r[0] for r in rows}, key=_electrode_key)
    index = {n: i for i, n in enumerate(names)}
    wells: dict[str, int] = {}
    for i, n in enumerate(names):
        wells.setdefault(n.split("_", 1)[0], i)
    return {
        "available": True,
        "file_id": file_id,
        "well": well,
        "electrodes": names,
        "wells": wells,
        "electrode_index": [index[r[0]] for r in rows],
        "time_s": [_clean(float(r[1])) for r in rows],
        "count": [int(r[2]) for r in rows],
        "n_spikes": total,
        "n_marks": len(rows),
        "decimated": bin_s is not None,
        "bin_s": bin_s,
        "start_s": lo,
        "stop_s": hi,
        "duration_s": duration,
    }


def _well_rc(well: str) -> tuple[int, int]:
    m = _WELL.match(well)
    if m is None:
        raise SpecError(f"bad well name {well!r}")
    return ord(m.group(1)) - ord("A"), int(m.group(2)) - 1


def well_heatmap(
    con: DuckDBPyConnection, file_id: str, *, metric: str = "mean_firing_rate_hz"
) -> dict[str, Any]:
    """A plate's wells as a grid of one well metric (default: mean firing rate).

    Returns
    -------
    dict
        ``rows`` (letters), ``cols`` (numbers), ``z`` (rows × cols, None where
        no value), ``conditions`` (same shape), ``metric`` and ``label``.
    """
    spec.check_file_id(file_id)
    m = _METRIC_BY_KEY.get(metric)
    if m is None or m.view != "mea_well_metrics":
        keys = [k.key for k in METRICS if k.view == "mea_well_metrics"]
        raise SpecError(f"unknown well metric {metric!r}; known: {', '.join(keys)}")
    reason = _need(con, "mea_well_metrics", ("file_id", "well", m.column))
    if reason:
        return _unavailable(reason, rows=[], cols=[], z=[], conditions=[])
    has_cond = "condition" in columns(con, "mea_well_metrics")
    cond = "condition" if has_cond else "NULL::VARCHAR"
    rows = _records(
        con,
        f"SELECT well, {m.column} AS value, {cond} AS condition "  # noqa: S608
        "FROM mea_well_metrics WHERE file_id = ?",
        [file_id],
    )
    wells = [r for r in rows if r["well"] and _WELL.match(r["well"])]
    if not wells:
        return _unavailable("no well metrics for this plate", rows=[], cols=[], z=[], conditions=[])
    n_rows = max(_well_rc(r["well"])[0] for r in wells) + 1
    n_cols = max(_well_rc(r["well"])[1] for r in wells) + 1
    z: list[list[Any]] = [[None] * n_cols for _ in range(n_rows)]
    conds: list[list[Any]] = [[None] * n_cols for _ in range(n_rows)]
    for r in wells:
        i, j = _well_rc(r["well"])
        z[i][j] = r["value"]
        conds[i][j] = r["condition"]
    return {
        "available": True,
        "file_id": file_id,
        "metric": m.key,
        "label": m.label,
        "rows": [chr(ord("A") + i) for i in range(n_rows)],
        "cols": list(range(1, n_cols + 1)),
        "z": z,
        "conditions": conds,
    }


# --------------------------------------------------------------------------- trajectories


def metrics(con: DuckDBPyConnection) -> dict[str, Any]:
    """The metrics whose view and column exist in this catalog."""
    out = []
    for m in METRICS:
        cols = ["file_id", m.column, "condition", "timepoint"]
        if m.per_file:
            cols.append("stimulus_kind")
        if _need(con, m.view, cols) is None:
            out.append(
                {"key": m.key, "label": m.label, "view": m.view, "unit": m.unit_of_observation}
            )
    return {"available": bool(out), "metrics": out, "message": "" if out else "no metric views"}


def trajectory(con: DuckDBPyConnection, metric: str, *, lab: str | None = None) -> dict[str, Any]:
    """A metric per condition x timepoint: n, mean, SD, SEM and every observation.

    The numbers are those of the catalog's summary views: a metric defined over
    active electrodes (:attr:`Metric.active_wells_only`) counts only wells with
    at least one active electrode, exactly as ``well_metrics_by_condition`` does.

    Parameters
    ----------
    metric
        A key of :data:`METRICS`.
    lab
        Only this lab's observations (None: every lab pooled).

    Returns
    -------
    dict
        ``timepoints`` (natural order), ``conditions`` and ``series``: per
        condition the lists ``timepoint``, ``mean``, ``sd`` (sample SD, None for
        n < 2), ``sem`` (SD / sqrt(n)), ``n`` and ``points`` (per group, each
        observation's ``value``, ``file_id`` and ``well``); ``observation_rule``
        says which observations count.
    """
    m = _METRIC_BY_KEY.get(metric)
    if m is None:
        raise SpecError(f"unknown metric {metric!r}; known: {', '.join(_METRIC_BY_KEY)}")
    needed = ["file_id", m.column, *PARTITION]
    if m.per_file:
        needed.append("stimulus_kind")
    if m.unit_of_observation == "well":
        needed.append("well")
    if m.active_wells_only:
        needed.append("n_active_electrodes")
    empty = {"metric": m.key, "label": m.label, "timepoints": [], "conditions": [], "series": []}
    reason = _need(con, m.view, needed)
    if reason:
        return _unavailable(reason, **empty)
    if m.per_file:
        source = (
            f"SELECT file_id, NULL::VARCHAR AS well, any_value(lab) AS lab, "  # noqa: S608
            f"any_value(condition) AS condition, any_value(timepoint) AS timepoint, "
            f"max({m.column}) AS value "
            f"FROM {m.view} WHERE stimulus_kind = 'long_square' GROUP BY file_id"
        )
    else:
        well = "well" if m.unit_of_observation == "well" else "NULL::VARCHAR"
        where = "n_active_electrodes > 0" if m.active_wells_only else "true"
        source = (
            f"SELECT file_id, {well} AS well, lab, condition, timepoint, "  # noqa: S608
            f"{m.column} AS value FROM {m.view} WHERE {where}"
        )
    params: list[Any] = []
    lab_filter = ""
    if lab is not None:
        lab_filter = "AND lab = ?"
        params.append(spec.validate_partition_value("lab", lab))
    rows = _records(
        con,
        f"""
        SELECT condition, timepoint, file_id, well, value::DOUBLE AS value
        FROM ({source})
        WHERE value IS NOT NULL AND isfinite(value::DOUBLE) {lab_filter}
        ORDER BY file_id, well
        """,  # noqa: S608  (identifiers whitelisted, values parameters)
        params,
    )
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r["condition"]), str(r["timepoint"])), []).append(
            {"value": r["value"], "file_id": r["file_id"], "well": r["well"]}
        )
    timepoints = sorted({tp for _c, tp in groups}, key=timepoint_key)
    series: dict[str, dict[str, list[Any]]] = {}
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], timepoint_key(kv[0][1])))
    for (cond, tp), points in ordered:
        values = [p["value"] for p in points]
        n = len(values)
        mean = math.fsum(values) / n
        sd = statistics.stdev(values) if n > 1 else None
        s = series.setdefault(
            cond, {"timepoint": [], "mean": [], "sd": [], "sem": [], "n": [], "points": []}
        )
        s["timepoint"].append(tp)
        s["mean"].append(mean)
        s["sd"].append(sd)
        s["sem"].append(sd / math.sqrt(n) if sd is not None else None)
        s["n"].append(n)
        s["points"].append(points)
    rule = (
        f"one value per {m.unit_of_observation}"
        + ("; wells without an active electrode are left out" if m.active_wells_only else "")
        + ("; the cell's largest long-square rate" if m.per_file else "")
    )
    return {
        "available": bool(rows),
        "message": "" if rows else f"no values of {m.key} yet",
        "metric": m.key,
        "label": m.label,
        "lab": lab,
        "unit_of_observation": m.unit_of_observation,
        "observation_rule": rule,
        "timepoints": timepoints,
        "conditions": list(series),
        "series": [{"condition": c, **v} for c, v in series.items()],
    }


# --------------------------------------------------------------------------- curation


def curation_log(con: DuckDBPyConnection, *, file_id: str | None = None) -> dict[str, Any]:
    """Curator actions, newest first (all, or one recording's), from ``curation_log``."""
    if "curation_log" not in views(con):
        return _unavailable("this catalog has no curation_log view yet", actions=[])
    where, params = "true", []
    if file_id is not None:
        where, params = "file_id = ?", [spec.check_file_id(file_id)]
    rows = _records(
        con,
        "SELECT action_id, log_seq, acted_at, curator, curator_roles, action, target_kind, "  # noqa: S608
        f"file_id, well, sweep_number, reason FROM curation_log WHERE {where} "
        "ORDER BY log_seq DESC, acted_at DESC",
        params,
    )
    return {"available": True, "actions": rows}


def excluded(con: DuckDBPyConnection) -> dict[str, Any]:
    """Every excluded recording, well and sweep with who excluded it, when and why."""
    if "excluded" not in views(con):
        return _unavailable("this catalog has no excluded view yet", excluded=[])
    rows = _records(
        con,
        """
        SELECT x.target_kind, x.file_id, l.file_name, x.well, x.sweep_number, x.reason,
               x.curator, x.excluded_at
        FROM excluded x
        LEFT JOIN (SELECT file_id, any_value(file_name) AS file_name FROM ingest_log
                   GROUP BY file_id) l USING (file_id)
        ORDER BY x.excluded_at DESC
        """,
    )
    return {"available": True, "excluded": rows}


def check_curation_target(
    con: DuckDBPyConnection,
    *,
    action: str,
    file_id: str,
    well: str | None = None,
    sweep_number: int | None = None,
) -> str | None:
    """None if the target exists in the lake, else what is wrong with it.

    A recording must have been ingested (any status); a well must be one of a
    published plate's wells, a sweep one of a published cell's sweeps (read
    from the tables, excluded rows included); only a file whose latest attempt
    is quarantined can be accepted.
    """
    spec.check_file_id(file_id)
    attempts = _records(
        con,
        f"SELECT status FROM ({_LATEST_ATTEMPTS}) WHERE file_id = ?",  # noqa: S608
        [file_id],
    )
    if not attempts:
        return f"no ingested file has file_id {file_id}"
    if action == "accept_quarantined" and attempts[0]["status"] != "quarantined":
        return f"file {file_id[:12]} is {attempts[0]['status']}, not quarantined"
    if well is not None:
        found = _records(
            con,
            "SELECT 1 FROM mea_recordings WHERE file_id = ? AND well = ? "
            "UNION ALL SELECT 1 FROM excluded WHERE file_id = ? AND well = ?",
            [file_id, _check_well(well), file_id, well],
        )
        if not found and "mea_recordings" in views(con):
            return f"plate {file_id[:12]} has no well {well}"
    if sweep_number is not None and "icephys_sweeps" in views(con):
        found = _records(
            con,
            "SELECT 1 FROM icephys_sweeps WHERE file_id = ? AND sweep_number = ? "
            "UNION ALL SELECT 1 FROM excluded WHERE file_id = ? AND sweep_number = ?",
            [file_id, int(sweep_number), file_id, int(sweep_number)],
        )
        if not found:
            return f"cell {file_id[:12]} has no sweep {sweep_number}"
    return None


# --------------------------------------------------------------------------- search


#: Facets of the recordings catalog, in display order.
FACETS: Final = (
    "kind",
    "lab",
    "condition",
    "timepoint",
    "subject",
    "species",
    "protocol",
    "qc_status",
)


def _catalog_rows(con: DuckDBPyConnection) -> list[dict[str, Any]]:
    """One row per ingested file (its latest attempt) with its recording's metadata."""
    if _need(con, "ingest_log", ("file_id", "status", "source_path", "finished_at")):
        return []
    parts = []
    rec = columns(con, "icephys_recordings")
    if {"file_id", "cell_id", "recorded_at"} <= rec:
        opt = {
            c: (f"any_value({c})" if c in rec else "NULL::VARCHAR")
            for c in ("subject", "species", "protocol")
        }
        parts.append(
            "SELECT file_id, 'cell' AS kind, any_value(cell_id) AS name, "  # noqa: S608
            f"{opt['subject']} AS subject, {opt['species']} AS species, "
            f"{opt['protocol']} AS protocol, any_value(recorded_at)::VARCHAR AS recorded_at, "
            "NULL::VARCHAR AS conditions FROM icephys_recordings GROUP BY file_id"
        )
    mea = columns(con, "mea_recordings")
    if {"file_id", "well", "condition"} <= mea:
        when = "any_value(recorded_at)::VARCHAR" if "recorded_at" in mea else "NULL::VARCHAR"
        name = "any_value(plate_sn)" if "plate_sn" in mea else "NULL::VARCHAR"
        parts.append(
            f"SELECT file_id, 'plate' AS kind, {name} AS name, NULL::VARCHAR AS subject, "  # noqa: S608
            "NULL::VARCHAR AS species, NULL::VARCHAR AS protocol, "
            f"{when} AS recorded_at, "
            "string_agg(DISTINCT condition, ',' ORDER BY condition) AS conditions "
            "FROM mea_recordings GROUP BY file_id"
        )
    recs = " UNION ALL ".join(parts) or (
        "SELECT NULL::VARCHAR AS file_id, NULL::VARCHAR AS kind, NULL::VARCHAR AS name, "
        "NULL::VARCHAR AS subject, NULL::VARCHAR AS species, NULL::VARCHAR AS protocol, "
        "NULL::VARCHAR AS recorded_at, NULL::VARCHAR AS conditions WHERE false"
    )
    excl = (
        "(SELECT DISTINCT file_id FROM excluded WHERE target_kind = 'recording')"
        if "excluded" in views(con)
        else "(SELECT NULL::VARCHAR AS file_id WHERE false)"
    )
    return _records(
        con,
        f"""
        SELECT l.file_id, l.file_name, l.source_format,
               CASE WHEN l.file_id IN (SELECT file_id FROM {excl}) THEN 'excluded'
                    ELSE l.status END AS qc_status,
               l.reason, l.lab,
               coalesce(l.condition, r.conditions) AS condition, l.timepoint,
               coalesce(r.kind, CASE WHEN l.source_format IN ('abf1', 'abf2') THEN 'cell'
                                     ELSE 'file' END) AS kind,
               r.name, r.subject, r.species, r.protocol,
               coalesce(r.recorded_at, l.finished_at::VARCHAR) AS date
        FROM ({_LATEST_ATTEMPTS}) l LEFT JOIN ({recs}) r USING (file_id)
        ORDER BY l.lab, l.file_name
        """,  # noqa: S608  (constant SQL)
    )


def _matches(row: dict[str, Any], key: str, wanted: Sequence[str]) -> bool:
    if not wanted:
        return True
    value = row.get(key)
    if key == "condition" and isinstance(value, str):
        return bool(set(value.split(",")) & set(wanted))
    return value in wanted


def search(
    con: DuckDBPyConnection,
    *,
    filters: Mapping[str, Sequence[str]] | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    """Faceted search over every ingested file (latest attempt) and its metadata.

    Parameters
    ----------
    filters
        Facet (one of :data:`FACETS`) -> accepted values (any of them matches; a
        plate matches a condition when one of its wells has it).
    date_from, date_to
        ISO dates bounding the recording date (acquisition start, else ingest).
    text
        A substring of the file name, cell or plate name (case-insensitive).

    Returns
    -------
    dict
        ``results`` (rows: file_id, file_name, kind, name, qc_status, reason and
        the facets) and ``facets``: per facet the values with counts among the
        files matching every *other* facet (so choosing a value never hides the
        alternatives).
    """
    filters = {k: list(v) for k, v in (filters or {}).items() if v}
    unknown = set(filters) - set(FACETS)
    if unknown:
        raise SpecError(f"unknown facet {sorted(unknown)}; known: {', '.join(FACETS)}")
    rows = _catalog_rows(con)
    needle = (text or "").strip().lower()

    def other_ok(row: dict[str, Any], skip: str | None) -> bool:
        date = (row.get("date") or "")[:10]
        if date_from and date < date_from:
            return False
        if date_to and date > date_to:
            return False
        if needle and not any(
            needle in str(row.get(k) or "").lower() for k in ("file_name", "name", "file_id")
        ):
            return False
        return all(_matches(row, k, v) for k, v in filters.items() if k != skip)

    facets: dict[str, list[dict[str, Any]]] = {}
    for facet in FACETS:
        counts: dict[str, int] = {}
        for row in rows:
            if not other_ok(row, facet):
                continue
            value = row.get(facet)
            values = value.split(",") if facet == "condition" and value else [value]
            for v in values:
                if v is not None:
                    counts[str(v)] = counts.get(str(v), 0) + 1
        keyf = timepoint_key if facet == "timepoint" else (lambda v: (0, 0.0, v))
        facets[facet] = [
            {"value": v, "count": n, "selected": v in filters.get(facet, [])}
            for v, n in sorted(counts.items(), key=lambda kv: keyf(kv[0]))
        ]
    results = [r for r in rows if other_ok(r, None)]
    dates = sorted((r.get("date") or "")[:10] for r in rows if r.get("date"))
    return {
        "available": True,
        "results": results,
        "n_results": len(results),
        "facets": facets,
        "date_range": [dates[0], dates[-1]] if dates else [None, None],
    }


# --------------------------------------------------------------------------- recording pages

#: Units by column-name suffix (README: units are in column names).
_UNIT_SUFFIXES: Final = (
    ("_mv_per_ms", "mV/ms"),
    ("_hz_per_pa", "Hz/pA"),
    ("_mohm", "MΩ"),
    ("_mv", "mV"),
    ("_pa", "pA"),
    ("_ms", "ms"),
    ("_hz", "Hz"),
    ("_s", "s"),
    ("_uv", "µV"),
    ("_r2", ""),
)


def unit_of(column: str) -> str:
    """The unit a column's name states (``tau_ms`` -> ``ms``), else ``""``."""
    for suffix, unit in _UNIT_SUFFIXES:
        if column.endswith(suffix):
            return unit
    return ""


_HIDDEN: Final = frozenset(
    {"file_id", "ingest_id", "transform_version", "params_json", *PARTITION, "timepoint_days"}
)


def latest_attempt(con: DuckDBPyConnection, file_id: str) -> dict[str, Any] | None:
    rows = _records(
        con,
        f"SELECT file_id, file_name, status, reason, lab, condition, timepoint, batch_id, "  # noqa: S608
        f"finished_at FROM ({_LATEST_ATTEMPTS}) WHERE file_id = ? LIMIT 1",
        [file_id],
    )
    return rows[0] if rows else None


def cell_page(con: DuckDBPyConnection, file_id: str, *, lake: str | None = None) -> dict[str, Any]:
    """Everything the per-cell page shows, from the catalog (no raw file read).

    Returns
    -------
    dict
        ``recording`` (metadata row), ``qc`` (the latest attempt's status and
        reason, its QC report links, the sweeps failing sweep QC with reasons),
        ``features`` (per analysis: column, value, unit), ``sweeps`` (number,
        kind, amplitude, spike count, QC), ``fi`` (this cell's curve), ``curation``
        (its actions) and ``excluded`` (its excluded sweeps).
    """
    spec.check_file_id(file_id)
    attempt = latest_attempt(con, file_id)
    if attempt is None:
        raise SpecError(f"no ingested file has file_id {file_id}")
    rec = []
    if not _need(con, "icephys_recordings", ("file_id",)):
        rec = _records(con, "SELECT * FROM icephys_recordings WHERE file_id = ?", [file_id])
    recording = {k: v for k, v in (rec[0] if rec else {}).items() if k not in ("params_json",)}
    recording.pop("source_path", None)
    features: list[dict[str, Any]] = []
    if not _need(con, "icephys_cell_features", ("file_id",)):
        for row in _records(
            con, "SELECT * FROM icephys_cell_features WHERE file_id = ?", [file_id]
        ):
            analysis = row.get("analysis") or "long_square"
            for k, v in row.items():
                if k in _HIDDEN or k == "analysis" or v is None:
                    continue
                features.append(
                    {"analysis": analysis, "feature": k, "value": v, "unit": unit_of(k)}
                )
    sweeps: list[dict[str, Any]] = []
    if not _need(con, "icephys_sweeps", ("file_id", "sweep_number")):
        have = columns(con, "icephys_sweeps")
        cols = [
            c
            for c in (
                "sweep_number",
                "stimulus_kind",
                "stim_amp_pa",
                "stim_amp_mv",
                "stim_start_s",
                "stim_end_s",
                "spike_count",
                "avg_rate_hz",
                "v_baseline_mv",
                "qc_pass",
                "qc_reasons",
            )
            if c in have
        ]
        sweeps = _records(
            con,
            f"SELECT {', '.join(cols)} FROM icephys_sweeps WHERE file_id = ? "  # noqa: S608
            "ORDER BY sweep_number",
            [file_id],
        )
    fi = fi_curves(con, file_id=file_id)["curves"] if sweeps else []
    docs = []
    if "qc_report" in columns(con, "ingest_log"):
        got = _records(
            con,
            f"SELECT qc_report FROM ({_LATEST_ATTEMPTS}) WHERE file_id = ?",  # noqa: S608
            [file_id],
        )
        if got:
            docs = _docs_links(got[0]["qc_report"], attempt.get("reason"), lake=lake)
    cur = curation_log(con, file_id=file_id).get("actions", [])
    excl = [x for x in excluded(con).get("excluded", []) if x["file_id"] == file_id]
    return {
        "available": True,
        "file_id": file_id,
        "attempt": attempt,
        "recording": recording,
        "qc": {
            "status": attempt["status"],
            "reason": attempt["reason"],
            "docs": docs,
            "failed_sweeps": [
                {"sweep_number": s["sweep_number"], "qc_reasons": s.get("qc_reasons")}
                for s in sweeps
                if s.get("qc_pass") is False
            ],
        },
        "features": features,
        "sweeps": sweeps,
        "fi": fi[0] if fi else None,
        "curation": cur,
        "excluded": excl,
    }


def sweep_detail(
    con: DuckDBPyConnection,
    file_id: str,
    sweep: int,
    *,
    lake: str | None = None,
    max_points: int = TRACE_MAX_POINTS,
) -> dict[str, Any]:
    """One sweep's response and stimulus (read from the raw file) with its spikes.

    Returns
    -------
    dict
        :func:`sweep_trace`'s fields plus ``stimulus`` (``t_s``, ``y``, ``unit``;
        the command waveform as the file stores it, None when it has none) and
        ``waveforms`` (each detected spike's response from 2 ms before to 5 ms
        after its threshold, ``t_ms`` relative to the threshold).
    """
    import numpy as np

    from transforms.serve.raw import envelope

    snip, rows = _sweep_snippet(con, file_id, sweep, lake=lake)
    out = _trace_of(con, snip, file_id, sweep, rows, max_points=max_points)
    fs = snip.sampling_rate_hz
    stim = None
    if snip.command is not None:
        idx, y = envelope(np.asarray(snip.command, dtype=np.float64), max_points)
        stim = {
            "t_s": [round(float(snip.start_s + k / fs), 6) for k in idx],
            "y": [_clean(float(v)) for v in y],
            "unit": snip.command_unit,
        }
    trace = snip.data[:, 0]
    pre, post = round(0.002 * fs), round(0.005 * fs)
    t_ms = [round((k - pre) * 1000.0 / fs, 4) for k in range(pre + post)]
    waveforms = []
    for t in out["spikes"].get("threshold_t_s") or out["spikes"].get("peak_t_s") or []:
        if t is None:
            continue
        k = round((t - snip.start_s) * fs)
        if k - pre < 0 or k + post > len(trace):
            continue
        waveforms.append([_clean(float(v)) for v in trace[k - pre : k + post]])
    return {**out, "stimulus": stim, "waveforms": {"t_ms": t_ms, "y": waveforms}}


def plate_page(con: DuckDBPyConnection, file_id: str, *, lake: str | None = None) -> dict[str, Any]:
    """Everything the per-plate page shows apart from the charts' own queries.

    Returns
    -------
    dict
        ``plate`` (one row of plate metadata), ``wells`` (per well: condition,
        timepoint, dose, dose units, active electrodes, excluded reason), the
        layout (``rows``, ``cols``), ``qc``, ``metrics`` (the well metrics one can
        map), ``curation``.
    """
    spec.check_file_id(file_id)
    attempt = latest_attempt(con, file_id)
    if attempt is None:
        raise SpecError(f"no ingested file has file_id {file_id}")
    have = columns(con, "mea_recordings")
    plate: dict[str, Any] = {}
    wells: list[dict[str, Any]] = []
    if {"file_id", "well"} <= have:
        meta = [
            c
            for c in (
                "file_name",
                "source_kind",
                "plate_type",
                "n_wells",
                "n_electrodes",
                "sampling_rate_hz",
                "duration_s",
                "recorded_at",
                "plate_sn",
                "instrument",
                "axis_version",
                "plate_map",
                "lab",
                "timepoint",
            )
            if c in have
        ]
        got = _records(
            con,
            f"SELECT {', '.join(f'any_value({c}) AS {c}' for c in meta)} "  # noqa: S608
            "FROM mea_recordings WHERE file_id = ?",
            [file_id],
        )
        plate = got[0] if got else {}
        wcols = [c for c in ("well", "condition", "timepoint", "dose", "dose_units") if c in have]
        wells = _records(
            con,
            f"SELECT {', '.join('r.' + c for c in wcols)}, m.n_active_electrodes, "  # noqa: S608
            "m.spike_count FROM mea_recordings r "
            "LEFT JOIN mea_well_metrics m USING (file_id, well) WHERE r.file_id = ?",
            [file_id],
        )
    excl = [x for x in excluded(con).get("excluded", []) if x["file_id"] == file_id]
    by_well = {x["well"]: x for x in excl if x["target_kind"] == "well"}
    for x in by_well.values():
        wells.append({"well": x["well"], "excluded": x["reason"]})
    for w in wells:
        w.setdefault("excluded", None)
    wells.sort(key=lambda w: _electrode_key(w["well"] + "_"))
    rcs = [_well_rc(w["well"]) for w in wells if _WELL.match(w["well"] or "")]
    n_rows = max((r for r, _c in rcs), default=-1) + 1
    n_cols = max((c for _r, c in rcs), default=-1) + 1
    return {
        "available": bool(plate),
        "file_id": file_id,
        "attempt": attempt,
        "plate": plate,
        "wells": wells,
        "rows": [chr(ord("A") + i) for i in range(n_rows)],
        "cols": list(range(1, n_cols + 1)),
        "metrics": [
            {"key": m.key, "label": m.label} for m in METRICS if m.view == "mea_well_metrics"
        ],
        "curation": curation_log(con, file_id=file_id).get("actions", []),
        "excluded": excl,
    }


def network_bursts(
    con: DuckDBPyConnection,
    file_id: str,
    *,
    well: str | None = None,
    start_s: float | None = None,
    stop_s: float | None = None,
) -> dict[str, Any]:
    """Network bursts of a plate (or a well) overlapping a window, for the raster."""
    spec.check_file_id(file_id)
    if _need(con, "mea_network_bursts", ("file_id", "well", "start_s", "end_s")):
        return _unavailable("no network bursts in this catalog", bursts=[])
    where = "file_id = ? AND end_s >= ? AND start_s <= ?"
    params: list[Any] = [file_id, start_s or 0.0, stop_s if stop_s is not None else 1e12]
    if well is not None:
        where += " AND well = ?"
        params.append(_check_well(well))
    rows = _records(
        con,
        f"SELECT well, start_s, end_s, n_spikes, n_electrodes FROM mea_network_bursts "  # noqa: S608
        f"WHERE {where} ORDER BY start_s LIMIT 5000",
        params,
    )
    return {"available": True, "bursts": rows}


def well_metric_by_div(con: DuckDBPyConnection, file_id: str, *, metric: str) -> dict[str, Any]:
    """One well metric of this plate's wells over the timepoints (DIV) of the same plate.

    The same plate is the same ``plate_sn`` in the same lab (recordings of one
    plate on several days); without a serial number, only this recording.

    Returns
    -------
    dict
        ``timepoints`` (in time order) and ``wells``: per well its ``condition``
        and the ``value`` per timepoint (None where not recorded).
    """
    spec.check_file_id(file_id)
    m = _METRIC_BY_KEY.get(metric)
    if m is None or m.view != "mea_well_metrics":
        keys = [k.key for k in METRICS if k.view == "mea_well_metrics"]
        raise SpecError(f"unknown well metric {metric!r}; known: {', '.join(keys)}")
    if _need(con, "mea_well_metrics", ("file_id", "well", m.column, *PARTITION)):
        return _unavailable("no well metrics", timepoints=[], wells=[])
    if "plate_sn" in columns(con, "mea_recordings"):
        same = (
            "SELECT DISTINCT r2.file_id FROM mea_recordings r1 JOIN mea_recordings r2 "
            "ON r1.lab = r2.lab AND r1.plate_sn = r2.plate_sn WHERE r1.file_id = ? "
            "UNION SELECT ?"
        )
    else:
        same = "SELECT ? UNION SELECT ?"
    rows = _records(
        con,
        f"SELECT well, condition, timepoint, {m.column} AS value FROM mea_well_metrics "  # noqa: S608
        f"WHERE file_id IN ({same})",
        [file_id, file_id],
    )
    timepoints = sorted({r["timepoint"] for r in rows}, key=timepoint_key)
    wells: dict[str, dict[str, Any]] = {}
    for r in rows:
        w = wells.setdefault(
            r["well"], {"well": r["well"], "condition": r["condition"], "value": {}}
        )
        w["value"][r["timepoint"]] = r["value"]
    ordered = sorted(wells.values(), key=lambda w: _electrode_key(w["well"] + "_"))
    for w in ordered:
        w["value"] = [w["value"].get(tp) for tp in timepoints]
    return {
        "available": bool(rows),
        "metric": m.key,
        "label": m.label,
        "timepoints": timepoints,
        "wells": ordered,
    }
