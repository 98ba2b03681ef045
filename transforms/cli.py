"""The ``neurocyte`` command: the same functions the DAGs run, without a scheduler."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from transforms import spec
from transforms.errors import NeurocyteError

if TYPE_CHECKING:
    from transforms.pipeline import Outcome


def _lake_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lake", help=f"lake root URI (default ${spec.ENV_LAKE} or {spec.DEFAULT_LAKE})"
    )


def _print_outcome(outcome) -> None:
    """One line per file; name and reason escaped (a name may hold a newline)."""
    from transforms.untrusted import escape

    mark = {
        "published": "ok ",
        "duplicate": "dup",
        "not_retried": "---",
        "quarantined": "QC!",
        "failed": "ERR",
    }
    line = f"[{mark.get(outcome.status, '?')}] {outcome.status:<11} {escape(outcome.file_name)}"
    if outcome.reason:
        line += f"  -- {escape(outcome.reason)}"
    print(line, flush=True)


class Progress:
    """Per-file outcome lines, plus a rich progress bar on stderr when it is a terminal."""

    def __init__(self, total: int, *, stream: TextIO = sys.stderr) -> None:
        self.total, self.done = total, 0
        self.counts: dict[str, int] = {}
        self._bar: Any = None
        if bool(getattr(stream, "isatty", lambda: False)()) and total > 1:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("ingest"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("files"),
                TimeRemainingColumn(),
                console=Console(file=stream),
                transient=True,
            )
            self._task = self._bar.add_task("ingest", total=total)
            self._bar.start()

    def __call__(self, outcome: Outcome) -> None:
        self.done += 1
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        _print_outcome(outcome)
        if self._bar is not None:
            self._bar.advance(self._task)
            if self.done >= self.total:
                self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def cmd_ingest(args: argparse.Namespace) -> int:
    from transforms.pipeline import expand_paths, ingest_paths

    files = expand_paths(args.paths)
    progress = Progress(len(files))
    started = time.monotonic()
    try:
        summary = ingest_paths(
            files,
            lake=args.lake,
            landing=args.landing,
            lab=args.lab,
            condition=args.condition,
            timepoint=args.timepoint,
            plate_map=args.plate_map,
            params_file=args.params,
            force=args.force,
            publish=not args.no_publish,
            on_outcome=progress,
        )
    finally:
        progress.close()
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts().items())) or "no files"
    print(f"summary: {counts} in {time.monotonic() - started:.1f} s")
    if summary.catalog:
        print(f"catalog: {summary.catalog}")
        print(f"QC reports: {qc_reports(args.lake)}")
    failed = any(o.status in ("failed", "not_retried") for o in summary.outcomes)
    return 1 if failed and args.strict else 0


def qc_reports(lake: str | None) -> str:
    """Write the offline QC reports (``<lake>/qc/reports/index.html``, which opens from
    disk with no network, unlike GX's Data Docs); the path printed."""
    from transforms.serve import qc_report

    return qc_report.publish_reports(lake=lake)


def cmd_publish(args: argparse.Namespace) -> int:
    from transforms.lake.catalog import publish
    from transforms.pipeline import gate

    result = publish(lake=args.lake)
    gate.build_data_docs(lake=args.lake)
    print(f"catalog: {result.catalog}")
    for name, version in result.versions.items():
        print(f"  {name:<22} delta version {version:>4}  files {result.files[name]}")
    print(f"QC reports: {qc_reports(args.lake)}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from transforms.lake.maintenance import sweep

    report = sweep(lake=args.lake, grace_hours=args.grace_hours, dry_run=not args.apply)
    verb = "would remove" if report.dry_run else "removed"
    rows = sum(report.orphan_rows.values())
    print(
        f"{verb}: {rows} orphan rows of {len(report.orphan_attempts)} attempts {report.orphan_rows}"
    )
    for label, items in (
        ("staging folders", report.staging_dirs),
        ("catalog temp files", report.catalog_temp_files),
        ("old quarantine copies", report.quarantine_copies),
    ):
        print(f"{verb}: {len(items)} {label}")
        for item in items:
            print(f"  {item}")
    if report.dry_run:
        print("(dry run: pass --apply to remove)")
    return 0


def cmd_qc_worker(args: argparse.Namespace) -> int:
    from transforms.pipeline import gate

    if args.action == "stop":
        pid = gate.stop()
        print(f"QC worker {pid} stopping" if pid else "no QC worker running")
        return 0
    pid = gate.ping(start=args.action == "start")
    where = gate.socket_path()
    print(f"QC worker {pid} at {where}" if pid else f"no QC worker running (would be {where})")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from transforms.lake.catalog import check_read_only, connect

    con = connect(lake=args.lake, read_only=True)
    if args.interactive:
        return _interactive(con)
    if not args.query:
        raise NeurocyteError("give a query, or --interactive")
    check_read_only(con, args.query)
    rel = con.sql(args.query)
    if rel is None:
        return 0
    _emit(rel, args.format, limit=args.max_rows)
    return 0


def _emit(rel, fmt: str, *, limit: int) -> None:
    import csv

    if fmt == "table":
        rel.show(max_rows=limit, max_width=10_000)
        return
    columns = rel.columns
    rows = rel.fetchall()
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        print(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str, indent=1))


def _interactive(con) -> int:
    import duckdb

    from transforms.lake.catalog import check_read_only

    print("neurocyte SQL (read-only catalog). End statements with ';'. Ctrl-D to quit.")
    views = con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    print("views: " + ", ".join(r[0] for r in views))
    buf = ""
    while True:
        try:
            line = input("neurocyte> " if not buf else "      ...> ")
        except EOFError:
            print()
            return 0
        buf += line + "\n"
        if not buf.strip().endswith(";"):
            continue
        try:
            check_read_only(con, buf)
            rel = con.sql(buf)
            if rel is not None:
                rel.show(max_rows=100)
        except (duckdb.Error, NeurocyteError) as exc:
            print(f"error: {exc}")
        buf = ""


def cmd_raw(args: argparse.Namespace) -> int:
    from transforms.serve.raw import fetch_snippet

    started = time.monotonic()
    snippet = fetch_snippet(
        args.file_id,
        lake=args.lake,
        well=args.well,
        electrodes=args.electrode,
        sweep=args.sweep,
        start_s=args.start,
        stop_s=args.stop,
    )
    out = snippet.save(args.out)
    print(f"wrote {out} in {time.monotonic() - started:.2f} s")
    return 0


def cmd_export_nwb(args: argparse.Namespace) -> int:
    from transforms.serve.export import export_nwb_any

    meta = {}
    for item in args.meta or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise NeurocyteError(f"--meta takes KEY=VALUE, got {item!r}")
        meta[key] = value
    out = export_nwb_any(args.file_id, args.out, lake=args.lake, metadata=meta, raw=args.raw)
    print(f"wrote {out}")
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    from transforms.serve.archive import ArchiveOutcome, archive_published, archive_recording

    if bool(args.file_id) == bool(args.all):
        raise NeurocyteError("give FILE_IDs to archive, or --all")
    outcomes: list[ArchiveOutcome] = []
    if args.all:
        outcomes = archive_published(
            lake=args.lake, workers=args.workers, delete_source=args.delete_source
        )
    for file_id in args.file_id or ():
        outcomes.append(
            archive_recording(
                file_id,
                lake=args.lake,
                force=args.force,
                workers=args.workers,
                delete_source=args.delete_source,
            )
        )
    for o in outcomes:
        line = f"{o.status:<8} {o.file_name} {o.file_id[:12]}"
        if o.ratio is not None and o.seconds is not None:
            line += f"  ratio {o.ratio:.2f} in {o.seconds:.1f} s -> {o.path}"
        elif o.path is not None:
            line += f"  {o.path}"
        if o.source_deleted:
            line += "  (original deleted)"
        if o.reason:
            line += f"  -- {o.reason}"
        print(line, flush=True)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def cmd_release(args: argparse.Namespace) -> int:
    from transforms.serve.release import make_release, reproduce_release

    if args.reproduce:
        got = reproduce_release(args.name, lake=args.lake)
        print(f"release {args.name} reproduces: {len(got)} table files, checksums match")
        return 0
    if not args.where:
        raise NeurocyteError("give --where EXPRESSION (or --reproduce)")
    rel = make_release(args.name, where=args.where, lake=args.lake)
    m = rel.manifest
    print(f"release {m['name']}: {len(m['file_ids'])} recordings, rows {m['rows']} -> {rel.path}")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from transforms.synth.demo import generate_demo

    landing = spec.landing_root(args.landing)
    cells = generate_demo(landing, cells_per_group=args.cells_per_group, seed=args.seed)
    for cell in cells:
        print(cell.path)
    print(f"{len(cells)} files written under {landing}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate demo data and ingest it without Airflow (``make demo`` uses the DAG)."""
    from transforms.pipeline import ingest_paths
    from transforms.synth.demo import generate_demo

    landing = spec.landing_root(args.landing)
    generate_demo(landing, cells_per_group=args.cells_per_group, seed=args.seed)
    summary = ingest_paths([landing], lake=args.lake, landing=landing, on_outcome=_print_outcome)
    print(f"catalog: {summary.catalog}\nQC reports: {qc_reports(args.lake)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurocyte", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="ingest files or folders into the lake")
    p.add_argument("paths", nargs="+", help="files, or folders to search for recordings")
    p.add_argument("--lab")
    p.add_argument("--condition")
    p.add_argument("--timepoint")
    p.add_argument("--landing", help=f"landing zone (default ${spec.ENV_LANDING} or ./landing)")
    p.add_argument(
        "--plate-map",
        help="plate map CSV for MEA recordings (AxIS experiment log or well,condition[,timepoint])",
    )
    p.add_argument(
        "--params",
        help=f"parameter set (TOML) for every file, instead of each lab's "
        f"<landing>/<lab>/{spec.PARAMS_FILE_NAME}",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="re-ingest files whose content and metadata are unchanged since their last attempt",
    )
    p.add_argument("--no-publish", action="store_true", help="skip rebuilding the catalog")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if any file failed (or was not retried after failing)",
    )
    _lake_arg(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("publish", help="rebuild the DuckDB catalog and the offline QC reports")
    _lake_arg(p)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser(
        "sweep", help="remove what failed attempts left (orphan rows, staging, temp files)"
    )
    p.add_argument("--grace-hours", type=float, default=24.0, help="keep anything younger")
    p.add_argument("--apply", action="store_true", help="remove (default: only report)")
    _lake_arg(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser(
        "qc-worker", help="the long-lived QC worker (GX loaded once): status, start or stop"
    )
    p.add_argument("action", choices=("status", "start", "stop"), nargs="?", default="status")
    p.set_defaults(func=cmd_qc_worker)

    p = sub.add_parser("sql", help="query the published catalog (read-only)")
    p.add_argument("query", nargs="?")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--max-rows", type=int, default=40)
    p.add_argument("--interactive", "-i", action="store_true")
    _lake_arg(p)
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("raw", help="a time window of a recording's raw data, without copying it")
    p.add_argument("file_id")
    p.add_argument("--well", action="append", help="MEA well (repeatable)")
    p.add_argument("--electrode", action="append", help="MEA electrode, e.g. B2_11 (repeatable)")
    p.add_argument("--sweep", type=int, help="patch-clamp sweep number")
    p.add_argument("--start", type=float, required=True, help="window start (s)")
    p.add_argument("--stop", type=float, required=True, help="window end (s)")
    p.add_argument("--out", required=True, help="output .npy or .nwb")
    _lake_arg(p)
    p.set_defaults(func=cmd_raw)

    p = sub.add_parser(
        "export-nwb", help="write a published recording (patch clamp or MEA plate) as NWB"
    )
    p.add_argument("file_id", help="file_id (or a unique prefix of at least 8 hex digits)")
    p.add_argument("out", help="output .nwb path")
    p.add_argument(
        "--meta",
        action="append",
        help="MEA plate: KEY=VALUE session/subject detail (subject, species, sex, age, ...)",
    )
    p.add_argument("--raw", action="store_true", help="MEA plate: include the raw voltage")
    _lake_arg(p)
    p.set_defaults(func=cmd_export_nwb)

    p = sub.add_parser(
        "archive", help="compress published raw plates losslessly into the lake (verified)"
    )
    p.add_argument("file_id", nargs="*", help="recordings to archive (their full file_id)")
    p.add_argument("--all", action="store_true", help="every published plate without one")
    p.add_argument("--force", action="store_true", help="write again over a complete archive")
    p.add_argument("--workers", type=int, default=2, help="compression threads")
    p.add_argument(
        "--delete-source",
        action="store_true",
        help="delete the original from the landing zone once its archive is verified",
    )
    _lake_arg(p)
    p.set_defaults(func=cmd_archive)

    p = sub.add_parser(
        "release", help="freeze a curated selection: Parquet, catalog, manifest (reproducible)"
    )
    p.add_argument("name", help="release name (letters, digits, '.', '_', '-')")
    p.add_argument("--where", help="DuckDB expression over lab, condition, timepoint, ...")
    p.add_argument(
        "--reproduce", action="store_true", help="rebuild from the recorded versions and check"
    )
    _lake_arg(p)
    p.set_defaults(func=cmd_release)

    for name, func, text in (
        ("demo-data", cmd_demo_data, "write simulated ABF recordings into the landing zone"),
        ("demo", cmd_demo, "demo data + ingest without Airflow"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--landing")
        p.add_argument("--cells-per-group", type=int, default=2)
        p.add_argument("--seed", type=int, default=7)
        _lake_arg(p)
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return int(args.func(args))
    except NeurocyteError as exc:
        from transforms.untrusted import escape

        print(f"neurocyte: error: {escape(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
