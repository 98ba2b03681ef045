"""The project's own QC reports: one self-contained HTML page per file, and an index.

Great Expectations' Data Docs load bootstrap, jQuery, font-awesome and Vega from
CDNs, so offline they are unstyled and their filters do nothing. These pages
need nothing but themselves (inline CSS, no script, no external URL): each
names the file (name, lab / condition / timepoint, status, reason) and not only
its hash, lists every expectation of every table its batch was validated
against, and for each failed one the examples of this file's unexpected values
(from the validation results saved in ``<lake>/qc/results``). The index lists
every batch in ``ingest_log`` with its files and links to their reports.

The Neurocyte page serves them at ``/neurocyte/qc-report/``; :func:`write_site`
also writes them as static files under ``<lake>/qc/reports/`` (``index.html`` and
one ``<file_id>.html`` per file), what ``neurocyte ingest``/``publish`` and the DAG's
publish print: they open from disk, offline, with no server.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from transforms import spec
from transforms.errors import SpecError
from transforms.pipeline import qc

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

#: Unexpected values shown per failed expectation.
MAX_EXAMPLES: Final = 10

_CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;margin:0}
header{padding:12px 20px;border-bottom:1px solid #d9e2ec}h1{margin:0;font-size:20px;color:#0b7285}
main{padding:12px 20px 40px}h2{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;width:100%;margin-bottom:8px}
th,td{border-bottom:1px solid #d9e2ec;padding:4px 8px;text-align:left;vertical-align:top}
th{color:#616e7c;font-weight:600}.fail td{background:#fff5f5}.ok{color:#2b8a3e}
.bad{color:#c92a2a;font-weight:600}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px}
.published{background:#2b8a3e}.quarantined{background:#e67700}.failed{background:#c92a2a}
.duplicate{background:#616e7c}code{font-size:12px}.hint{color:#616e7c}
"""

_LATEST: Final = """
    SELECT * FROM ingest_log WHERE status <> 'duplicate'
    QUALIFY row_number() OVER (PARTITION BY file_id
        ORDER BY coalesce(log_seq, -1) DESC, finished_at DESC, ingest_id DESC) = 1
"""


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1></header><main>{body}</main></body></html>"
    )


def _records(con: DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _result(table: str, batch_id: str, *, lake: str | None) -> dict[str, Any] | None:
    path = qc.results_dir(lake) / table / f"{spec.check_id('batch_id', batch_id)}.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    result = doc.get("result")
    return result if isinstance(result, dict) else None


def _examples(res: dict[str, Any], file_id: str) -> tuple[int | None, list[Any]]:
    """This file's unexpected values of one expectation (count, examples)."""
    out = res.get("result") or {}
    rows = out.get("unexpected_index_list") or out.get("partial_unexpected_index_list") or []
    column = (res.get("expectation_config") or {}).get("kwargs", {}).get("column")
    mine = [r for r in rows if isinstance(r, dict) and r.get("file_id") == file_id]
    if mine:
        values = [r.get(column, {k: v for k, v in r.items() if k != "file_id"}) for r in mine]
        return len(mine), values[:MAX_EXAMPLES]
    if rows:  # the failures belong to other files of the batch
        return 0, []
    return out.get("unexpected_count"), list(out.get("partial_unexpected_list") or [])[
        :MAX_EXAMPLES
    ]


def file_report(
    con: DuckDBPyConnection,
    file_id: str,
    *,
    lake: str | None = None,
    index_href: str = "../qc-report/",
) -> str:
    """The QC report of a file's latest attempt, as one self-contained HTML page.

    ``index_href`` is the link back to the index (the served route, or ``index.html``
    beside a static page).

    Raises
    ------
    SpecError
        If no attempt of ``file_id`` was logged.
    """
    spec.check_file_id(file_id)
    rows = _records(con, f"SELECT * FROM ({_LATEST}) WHERE file_id = ?", [file_id])  # noqa: S608
    if not rows:
        raise SpecError(f"no ingested file has file_id {file_id}")
    a = rows[0]
    status = str(a["status"])
    head = (
        f"<p><span class='badge {escape(status)}'>{escape(status)}</span> "
        f"<b id='file-name'>{escape(str(a['file_name']))}</b> · "
        f"{escape(str(a.get('lab')))} / {escape(str(a.get('condition') or 'per well'))} / "
        f"{escape(str(a.get('timepoint')))} · format {escape(str(a.get('source_format')))}</p>"
        f"<p class='hint'>file_id <code>{escape(file_id)}</code> · attempt "
        f"<code>{escape(str(a['ingest_id']))}</code> · batch "
        f"<code>{escape(str(a.get('batch_id')))}</code> · finished {escape(str(a['finished_at']))}"
        f" · transform {escape(str(a['transform_version']))}</p>"
    )
    if a.get("reason"):
        head += f"<h2>Reason</h2><p class='bad' id='reason'>{escape(str(a['reason']))}</p>"
    tables: dict[str, Any] = {}
    if a.get("qc_report"):
        try:
            tables = json.loads(a["qc_report"])
        except ValueError:
            tables = {}
    body = head
    if not tables or not a.get("batch_id"):
        body += "<p class='hint'>Not validated: the file could not be decoded.</p>"
    for table in sorted(tables):
        result = _result(table, str(a["batch_id"]), lake=lake)
        if result is None:
            body += f"<h2>{escape(table)}</h2><p class='hint'>no saved validation result</p>"
            continue
        lines = []
        n_failed = 0
        for res in result.get("results") or []:
            cfg = res.get("expectation_config") or {}
            kwargs = {k: v for k, v in (cfg.get("kwargs") or {}).items() if k != "batch_id"}
            count, examples = _examples(res, file_id)
            failed = not res.get("success") and count != 0
            n_failed += failed
            why = (cfg.get("meta") or {}).get("why", "")
            mark = "<span class='bad'>failed</span>" if failed else "<span class='ok'>passed</span>"
            detail = ""
            if failed:
                detail = f"{count} unexpected, e.g. <code>{escape(json.dumps(examples))}</code>"
            lines.append(
                f"<tr class='{'fail' if failed else ''}'><td>{mark}</td>"
                f"<td><code>{escape(str(cfg.get('type')))}</code></td>"
                f"<td><code>{escape(json.dumps(kwargs, default=str))}</code></td>"
                f"<td>{detail}</td><td class='hint'>{escape(str(why))}</td></tr>"
            )
        body += (
            f"<h2 data-table='{escape(table)}'>{escape(table)}: "
            f"{'<span class=bad>' + str(n_failed) + ' failed</span>' if n_failed else 'all passed'}"
            "</h2><table><tr><th></th><th>expectation</th><th>arguments</th>"
            "<th>this file's unexpected values</th><th>why</th></tr>" + "".join(lines) + "</table>"
        )
    body += f"<p><a href='{escape(index_href)}'>every batch</a></p>"
    return _page(f"QC report: {a['file_name']}", body)


def index(con: DuckDBPyConnection, *, page_suffix: str = "") -> str:
    """Every validated batch (and every unvalidated attempt) with its files, newest first.

    A file links to ``<file_id><page_suffix>`` (``.html`` for the static site).
    """
    rows = _records(
        con,
        "SELECT batch_id, file_id, file_name, status, lab, condition, timepoint, finished_at "
        "FROM ingest_log WHERE status <> 'duplicate' "
        "ORDER BY finished_at DESC, batch_id, file_name",
        [],
    )
    batches: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        batches.setdefault(str(r["batch_id"] or "not validated"), []).append(r)
    body = f"<p>{len(batches)} batches, {len(rows)} file attempts.</p>"
    for batch, files in batches.items():
        items = "".join(
            f"<tr><td><a href='{escape(f['file_id'] + page_suffix)}'>"
            f"{escape(str(f['file_name']))}</a></td>"
            f"<td><span class='badge {escape(str(f['status']))}'>{escape(str(f['status']))}"
            f"</span></td><td>{escape(str(f['lab']))} / {escape(str(f['condition']))} / "
            f"{escape(str(f['timepoint']))}</td><td>{escape(str(f['finished_at']))}</td></tr>"
            for f in files
        )
        body += (
            f"<h2 class='batch' data-batch='{escape(batch)}'>batch <code>{escape(batch)}</code>"
            f"</h2><table>{items}</table>"
        )
    return _page("Neurocyte QC reports", body)


def reports_dir(lake: str | None = None) -> Path:
    """``<lake>/qc/reports``: the static offline QC reports (local lakes)."""
    return Path(spec.qc_dir(lake)) / "reports"


def write_site(con: DuckDBPyConnection, *, lake: str | None = None) -> Path:
    """Write the offline QC reports as static files; return ``index.html``.

    One page per file whose latest attempt has no page yet, or a page of an older
    attempt (the attempt each page shows is kept in ``_attempts.json``), then the
    index. Pages are written to a temporary name and renamed, so a reader never
    opens half a page.

    Raises
    ------
    SpecError
        On a remote (``s3://``) lake: the reports are served by the Neurocyte page.
    """
    if spec.is_remote(spec.qc_dir(lake)):
        raise SpecError("static QC reports are written for a local lake only")
    out = reports_dir(lake)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "_attempts.json"
    shown: dict[str, str] = {}
    if manifest.is_file():
        try:
            shown = json.loads(manifest.read_text(encoding="utf-8"))
        except ValueError:
            shown = {}
    latest = con.execute(f"SELECT file_id, ingest_id FROM ({_LATEST})").fetchall()  # noqa: S608
    for file_id, ingest_id in latest:
        page = out / f"{spec.check_file_id(str(file_id))}.html"
        if shown.get(file_id) == str(ingest_id) and page.is_file():
            continue
        _write(page, file_report(con, file_id, lake=lake, index_href="index.html"))
        shown[file_id] = str(ingest_id)
    _write(manifest, json.dumps(shown, indent=0, sort_keys=True))
    index_page = out / "index.html"
    _write(index_page, index(con, page_suffix=".html"))
    return index_page


def publish_reports(*, lake: str | None = None) -> str:
    """Write the offline QC reports of a local lake from its published catalog; the
    index's path. An ``s3://`` lake's reports are served by the Neurocyte page
    (``/neurocyte/qc-report/``), which this says instead."""
    from transforms.lake.catalog import connect

    if spec.is_remote(spec.qc_dir(lake)):
        return "served by the Neurocyte page at /neurocyte/qc-report/ (an s3:// lake)"
    con = connect(lake=lake)
    try:
        return str(write_site(con, lake=lake))
    finally:
        con.close()


def _write(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
