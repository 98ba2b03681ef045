"""The QC gate: Great Expectations suites, one JSON file per table.

Validation happens in memory on the batch about to be written (GX called
directly; the GX Airflow provider cannot be installed beside Airflow 3.3).
Results are kept as JSON in the lake and rendered into the GX Data Docs site
at ``<lake>/qc/docs`` by :func:`build_data_docs`, one page per batch.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from transforms import spec
from transforms.errors import QCError, ResourceLimit

log = logging.getLogger(__name__)


def expectations_dir() -> Path:
    """The suites: the repository's ``expectations/`` (or the packaged copy)."""
    return spec.resource_dir("expectations")


@functools.cache
def suite_text(table: str) -> str:
    """The text of ``expectations/<table>.json``, checked to be that table's suite."""
    path = expectations_dir() / f"{table}.json"
    if not path.is_file():
        raise QCError(f"no expectation suite for table {table!r} at {path}")
    text = path.read_text(encoding="utf-8")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QCError(f"{path}: invalid JSON: {exc}") from exc
    if doc.get("name") != table:
        raise QCError(f"{path}: suite name {doc.get('name')!r} must equal the table name")
    return text


@functools.lru_cache(maxsize=64)
def _suite_reads(text: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """The columns a suite (its JSON text) names, and its row conditions as text."""
    doc = json.loads(text)
    names: set[str] = set()
    conditions: list[str] = []
    for exp in doc.get("expectations", []):
        kwargs = exp.get("kwargs", {})
        for key in ("column", "column_A", "column_B"):
            if isinstance(kwargs.get(key), str):
                names.add(kwargs[key])
        names.update(c for c in kwargs.get("column_list") or [] if isinstance(c, str))
        if kwargs.get("row_condition"):
            conditions.append(json.dumps(kwargs["row_condition"]))
    return frozenset(names), tuple(conditions)


def suite_columns(
    table: str, columns: list[str], *, keep: str, suite: str | None = None
) -> list[str]:
    """``columns`` (in order) that the table's suite reads, plus ``keep``.

    A column counts as read when an expectation names it or its name occurs in
    a row condition's text (a superset). Handing GX only these changes no
    expectation's result, and GX's pandas engine costs per column of the frame
    it is given (each row-condition query and the column-type metric walk all
    of them): the 62-column cell-feature rows are read through 15. Checked on the
    corpus: every expectation's result is identical; only the batch marker
    ``pandas_data_fingerprint`` differs (it hashes the frame GX was given).
    """
    names, conditions = _suite_reads(suite_text(table) if suite is None else suite)
    return [c for c in columns if c == keep or c in names or any(c in cond for cond in conditions)]


def load_suite(table: str, *, suite: str | None = None) -> Any:
    """The table's ``gx.ExpectationSuite``, parsed from ``expectations/<table>.json``
    (or from ``suite``, that file's text as a client read it)."""
    import great_expectations as gx

    doc = json.loads(suite_text(table) if suite is None else suite)
    if doc.get("name") != table:
        raise QCError(f"suite name {doc.get('name')!r} must equal the table name {table!r}")
    doc.pop("id", None)
    return gx.ExpectationSuite(**doc)


@functools.cache
def _batch_definition() -> Any:
    """One in-memory GX context per process: creating it costs ~50 ms."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = ctx.data_sources.add_pandas("neurocyte").add_dataframe_asset("batch")
    return asset.add_batch_definition_whole_dataframe("whole")


def warm_up() -> None:
    """Import GX and build this process's context now (a long-lived QC worker starts so)."""
    _batch_definition()


@dataclass(frozen=True)
class QCResult:
    """Outcome of validating one table's batch (one or many files).

    Attributes
    ----------
    failures
        One readable line per failed expectation.
    by_file
        file_id -> the failure lines whose unexpected rows belong to it.
    unattributed
        Failure lines that no row carries (table-level expectations).
    """

    table: str
    success: bool
    failures: tuple[str, ...] = ()
    by_file: dict[str, list[str]] = field(default_factory=dict)
    unattributed: tuple[str, ...] = ()
    result: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def reason(self) -> str:
        return "; ".join(f"{self.table}: {f}" for f in self.failures)


#: Kept per failed expectation in a stored result (the Data Docs page); the
#: attribution to files uses the full list before trimming.
_MAX_LISTED = 50


def _describe_failure(res: dict[str, Any]) -> str:
    cfg = res.get("expectation_config", {})
    skip = {"batch_id", "row_condition", "condition_parser"}
    kwargs = {k: v for k, v in cfg.get("kwargs", {}).items() if k not in skip}
    out = res.get("result", {}) or {}
    detail = ""
    if out.get("unexpected_count") is not None:
        sample = out.get("partial_unexpected_list") or []
        detail = f" ({out['unexpected_count']} unexpected, e.g. {sample[:3]})"
    elif "observed_value" in out:
        detail = f" (observed {out['observed_value']})"
    if res.get("exception_info", {}).get("raised_exception"):
        detail += f" [error: {res['exception_info'].get('exception_message')}]"
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{cfg.get('type')}({args}){detail}"


_OOM_MARKERS = ("MemoryError", "std::bad_alloc", "Unable to allocate", "out of memory")


def _out_of_memory(res: dict[str, Any]) -> str | None:
    """The allocation failure GX recorded for an expectation, if that is why it failed.

    GX catches exceptions while computing an expectation and reports them as a
    failed expectation (``exception_info``, either flat or per metric).
    """
    info = res.get("exception_info") or {}
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("raised_exception"):
            continue
        text = f"{entry.get('exception_message', '')}\n{entry.get('exception_traceback', '')}"
        for marker in _OOM_MARKERS:
            if marker in text:
                message = str(entry.get("exception_message") or "").strip()
                return (message or marker)[:200]
    return None


def validate(
    table: str, rows: pa.Table, *, index_column: str = "file_id", suite: str | None = None
) -> QCResult:
    """Validate a batch against the table's suite.

    Parameters
    ----------
    table
        A table name with a suite in ``expectations/``.
    rows
        The batch, exactly as it would be written (rows of one or many files).
    index_column
        Column reported with every unexpected row, to attribute failures to files.
    suite
        The suite's JSON text; default ``expectations/<table>.json`` as read now.

    Returns
    -------
    QCResult
        ``success``, one readable line per failed expectation, and which
        files each failure belongs to.
    """
    expectations = load_suite(table, suite=suite)
    columns = suite_columns(table, rows.column_names, keep=index_column, suite=suite)
    df = rows.select(columns).to_pandas()
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": df})
    fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": [index_column]}
    result = batch.validate(expectations, result_format=fmt).to_json_dict()
    failures: list[str] = []
    by_file: dict[str, list[str]] = {}
    unattributed: list[str] = []
    for res in result.get("results", []):
        if res.get("success", False):
            continue
        oom = _out_of_memory(res)
        if oom:  # GX caught its own malloc failure: the worker's, not the data's
            cfg = res.get("expectation_config", {})
            raise ResourceLimit(
                f"{table}: the QC gate ran out of memory validating {rows.num_rows} rows "
                f"({cfg.get('type')}: {oom})"
            )
        line = _describe_failure(res)
        failures.append(line)
        out = res.get("result", {}) or {}
        owners = {
            row.get(index_column)
            for row in out.get("unexpected_index_list") or []
            if isinstance(row, dict)
        }
        owners.discard(None)
        if not owners:
            unattributed.append(line)
        for owner in owners:
            by_file.setdefault(str(owner), []).append(line)
        for key in ("unexpected_list", "unexpected_index_list", "partial_unexpected_index_list"):
            if isinstance(out.get(key), list):
                out[key] = out[key][:_MAX_LISTED]
        out.pop("unexpected_index_query", None)
    return QCResult(
        table=table,
        success=bool(result.get("success")),
        failures=tuple(failures),
        by_file=by_file,
        unattributed=tuple(unattributed),
        result=result,
    )


def results_dir(lake: str | None = None) -> Path:
    root = spec.qc_dir(lake)
    if spec.is_remote(root):
        raise QCError("Data Docs are built on a local lake mirror only")
    return Path(root) / "results"


def save_result(qc: QCResult, *, batch_id: str, run_time: str, lake: str | None = None) -> Path:
    """Persist a batch's validation result for the Data Docs builder."""
    out = results_dir(lake) / qc.table / f"{batch_id}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"batch_id": batch_id, "run_time": run_time, "result": qc.result}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, default=str), encoding="utf-8")
    tmp.replace(out)
    return out


def docs_dir(lake: str | None = None) -> Path:
    return Path(spec.qc_dir(lake)) / "docs"


def docs_page(table: str, *, batch_id: str, run_time: str, lake: str | None = None) -> Path:
    """Where the Data Docs page of one validated batch lives (GX's own layout)."""
    from datetime import datetime

    stamp = datetime.fromisoformat(run_time).strftime("%Y%m%dT%H%M%S.%fZ")
    return docs_dir(lake) / "validations" / table / batch_id / stamp / f"{batch_id}.html"


def _pending_pages(lake: str | None) -> list[tuple[str, dict[str, Any]]]:
    rdir = results_dir(lake)
    pending: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(rdir.glob("*/*.json")) if rdir.is_dir() else []:
        doc = json.loads(path.read_text(encoding="utf-8"))
        table = path.parent.name
        page = docs_page(table, batch_id=doc["batch_id"], run_time=doc["run_time"], lake=lake)
        if not page.exists():
            pending.append((table, doc))
    return pending


def docs_pending(*, lake: str | None = None) -> bool:
    """Whether :func:`build_data_docs` has a page to render (and so must import GX)."""
    return bool(_pending_pages(lake)) or not (docs_dir(lake) / "index.html").exists()


def build_data_docs(*, lake: str | None = None) -> Path:
    """Render every saved validation result that has no page yet; return the index.

    GX is imported only when there is something to render: a run whose files were
    all duplicates (or failed before QC) leaves no new result, so no page to build.
    """
    pending = _pending_pages(lake)
    index = docs_dir(lake) / "index.html"
    if not pending and index.exists():
        return index

    import great_expectations as gx
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    root = Path(spec.qc_dir(lake))
    ctx = gx.get_context(mode="file", project_root_dir=str(root / "project"))
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    sites = ctx.variables.data_docs_sites or {}
    site = sites.get("local_site")
    if site is None or site["store_backend"].get("base_directory") != str(docs_dir(lake)):
        sites = {
            "local_site": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir(lake)),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        }
        ctx.variables.data_docs_sites = sites
        ctx.variables.save()

    new_keys = []
    for table, doc in pending:
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=table),
            run_id=RunIdentifier(run_name=doc["batch_id"], run_time=doc["run_time"]),
            batch_identifier=doc["batch_id"],
        )
        ctx.validation_results_store.set(key, ExpectationSuiteValidationResult(**doc["result"]))
        new_keys.append(key)
    ctx.build_data_docs(resource_identifiers=new_keys or None)
    return index
