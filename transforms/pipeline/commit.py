"""The gate and the commit point: validate staged files together, commit the passing ones.

The commit protocol (see :mod:`transforms.lake.delta`): append every table's rows of
the batch (one Delta commit per table), then one ``ingest_log`` commit publishes them
(the commit point), then the rows of superseded attempts are deleted. Files whose rows
break an expectation are quarantined with the failed expectations as their reason.

The parts of a split plate (outcomes with ``part`` set, sharing an ``ingest_id``)
are merged first into one outcome per file; a file with a part missing or not staged
is ``failed`` and nothing of it is committed.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from transforms import spec
from transforms.errors import NeurocyteError, ResourceLimit
from transforms.lake import delta as lakeio
from transforms.lake import storage
from transforms.pipeline import gate, qc
from transforms.pipeline.outcome import (
    Outcome,
    is_out_of_memory,
    now_utc,
    record,
    record_failure,
    resource_reason,
)

log = logging.getLogger(__name__)


def _as_outcome(o: Outcome | dict[str, Any]) -> Outcome:
    return Outcome(**o) if isinstance(o, dict) else o


#: Where a staged file's rows are: (staging dir, rows per table) of each of its parts.
_Sources = dict[str, list[tuple[str, dict[str, int]]]]


def _merge_file(parts: list[Outcome], *, lake: str | None) -> Outcome:
    """The outcome of a split file from its parts' outcomes (``staged`` if all are).

    A missing, failed or inconsistent part fails the whole file (recorded here
    with the reason, staging removed): nothing of it is published.
    """
    first = parts[0]
    n = int(first.n_parts or 0)
    by_part: dict[int, Outcome] = {}
    for p in parts:
        if p.part is not None:
            by_part.setdefault(p.part, p)  # a retried extract may report a part twice
    ids = [
        p.file_id for p in by_part.values() if p.file_id and p.file_id != spec.UNREADABLE_FILE_ID
    ]
    whole = Outcome(
        source_path=first.source_path,
        file_name=first.file_name,
        file_id=ids[0] if ids else first.file_id or spec.UNREADABLE_FILE_ID,
        ingest_id=first.ingest_id,
        status="staged",
        started_at=min(p.started_at for p in parts),
        source_format=next((p.source_format for p in parts if p.source_format), ""),
        partition=next((p.partition for p in parts if p.partition), {}),
        staging=spec.staging_dir(first.ingest_id, lake),
        n_parts=n,
    )
    digests = {p.metadata_digest for p in by_part.values()}
    # parts that saw different metadata (edited meanwhile) leave it unknown: tried again
    whole.metadata_digest = digests.pop() if len(digests) == 1 else ""
    problems: list[str] = []
    missing = [k for k in range(n) if k not in by_part]
    if missing:
        listed = ", ".join(str(k + 1) for k in missing)
        problems.append(f"well group {listed} of {n} missing (never staged)")
    if len(set(ids)) > 1:
        problems.append("its parts read different content (the file changed meanwhile)")
    others = [p for _, p in sorted(by_part.items()) if p.status != "staged"]
    verdicts = {p.status for p in others}
    if (
        not missing
        and len(others) == n
        and len(verdicts) == 1
        and verdicts
        <= {
            "duplicate",
            "not_retried",
        }
    ):
        whole.status, whole.reason = others[0].status, others[0].reason
    else:
        for p in others:
            problems.append(f"well group {int(p.part or 0) + 1} of {n} {p.status}: {p.reason}")
        if problems:
            whole.status = "failed"
            if missing or len(set(ids)) > 1:  # a lost worker, a file changing: not the file's
                whole.metadata_digest = ""
            whole.reason = f"{first.file_name}: split plate not committed: " + "; ".join(problems)
    if whole.status != "staged":
        storage.remove_tree(whole.staging)
        whole.staging = ""
        record_failure(whole, lake=lake)
        return whole
    for _, p in sorted(by_part.items()):
        for name, count in p.rows.items():
            whole.rows[name] = whole.rows.get(name, 0) + count
    return whole


def _merge_parts(outs: list[Outcome], *, lake: str | None) -> tuple[list[Outcome], _Sources]:
    """One outcome per file, the parts of a split file merged in its first part's place."""
    groups: dict[str, list[Outcome]] = {}
    order: list[Outcome | str] = []
    for o in outs:
        if o.part is None:
            order.append(o)
        else:
            if o.ingest_id not in groups:
                order.append(o.ingest_id)
            groups.setdefault(o.ingest_id, []).append(o)
    merged: list[Outcome] = []
    sources: _Sources = {}
    for item in order:
        if isinstance(item, Outcome):
            merged.append(item)
            sources[item.ingest_id] = [(item.staging, item.rows)]
            continue
        parts = sorted(groups[item], key=lambda p: int(p.part or 0))
        whole = _merge_file(parts, lake=lake)
        merged.append(whole)
        sources[item] = [(p.staging, p.rows) for p in parts if p.status == "staged"]
    return merged, sources


#: Columns holding one value per file: read back as shared blocks, not a copy per row.
_CONSTANT_COLUMNS = ("file_id", "ingest_id", "transform_version", "params_json")
#: Rows of a table held at once by the gate and the append. A batch's rows of a table
#: beyond this are read from staging, validated (one GX run per slice) and appended
#: (one Delta commit per slice) slice by slice, so a 10 M-spike plate never has all
#: its rows in memory: GX's pandas copy stays a few hundred MB, and delta-rs, which
#: buffers what it is given faster than it writes it, at most a slice.
SLICE_ROWS = 1 << 20


def _compact(table: pa.Table) -> pa.Table:
    """Dictionary-read constant columns as :func:`constant_column` blocks (no per-row copy)."""
    from transforms.pipeline.decode_mea import constant_column

    for name in _CONSTANT_COLUMNS:
        if name not in table.column_names:
            continue
        i = table.schema.get_field_index(name)
        column = table.column(i)
        if not pa.types.is_dictionary(column.type):
            continue
        values = [c.dictionary for c in column.chunks if len(c)]
        one = {v for d in values for v in d.to_pylist()}
        if len(one) == 1 and column.null_count == 0:
            plain = constant_column(one.pop(), table.num_rows)
        else:
            plain = pc.cast(column, pa.string())
        table = table.set_column(i, pa.field(name, pa.string(), nullable=True), plain)
    return table


def _read_staged(name: str, where: list[tuple[str, dict[str, int]]]) -> pa.Table:
    """One table's staged rows of one file (its parts' rows merged)."""
    tables = [
        _compact(
            storage.read_parquet(
                storage.join(d, f"{name}.parquet"), read_dictionary=_CONSTANT_COLUMNS
            )
        )
        for d, rows in where
        if name in rows
    ]
    if len(where) == 1:
        return tables[0]
    from transforms.pipeline.decode_mea import merge_part_tables

    return merge_part_tables(name, tables)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns, in its order: cast, or all null if absent."""
    columns = [
        (table[f.name] if table[f.name].type == f.type else pc.cast(table[f.name], f.type))
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


#: A file's staged rows: (its outcome, where its parts' rows are).
_Staged = tuple[Outcome, list[tuple[str, dict[str, int]]]]


def _pieces(name: str, files: Sequence[_Staged]) -> Iterator[pa.Table]:
    """The files' staged rows of one table, read in pieces of at most :data:`SLICE_ROWS`.

    A file with no more rows than that (and every file's ``mea_recordings``, one row
    per well, whose parts are merged by value) is one piece; a bigger one is read
    batch by batch, its parts in order, each piece cast to the parts' common schema
    (:func:`merge_part_tables` concatenates such parts the same way).
    """
    for o, where in files:
        if name not in o.rows:
            continue
        if o.rows[name] <= SLICE_ROWS or name == spec.MEA_RECORDINGS:
            yield _read_staged(name, where)
            continue
        uris = [storage.join(d, f"{name}.parquet") for d, rows in where if name in rows]
        common = (
            pa.unify_schemas(
                [_compact_schema(storage.read_parquet_schema(u)) for u in uris],
                promote_options="permissive",
            )
            if len(uris) > 1
            else None
        )
        for uri in uris:
            for batch in storage.iter_parquet(
                uri, batch_rows=SLICE_ROWS, read_dictionary=_CONSTANT_COLUMNS
            ):
                piece = _compact(pa.Table.from_batches([batch]))
                del batch
                yield piece if common is None else _conform(piece, common)


def _compact_schema(schema: pa.Schema) -> pa.Schema:
    """The schema :func:`_compact` gives a table read with ``schema``."""
    for name in _CONSTANT_COLUMNS:
        i = schema.get_field_index(name)
        if i >= 0:
            schema = schema.set(i, pa.field(name, pa.string(), nullable=True))
    return schema


def _slices(pieces: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """Pieces joined into tables of at most :data:`SLICE_ROWS` rows (a bigger piece alone).

    Rows of several files share a slice, so a batch of small files is still one
    GX run and one Delta commit per table. The caller drops each slice before
    asking for the next: only one is ever held.
    """
    held: list[pa.Table] = []
    n = 0
    for piece in pieces:
        if held and n + piece.num_rows > SLICE_ROWS:
            out = pa.concat_tables(held, promote_options="permissive")
            held, n = [], 0
            yield out
            del out
        held.append(piece)
        n += piece.num_rows
        del piece
    if held:
        out = pa.concat_tables(held, promote_options="permissive")
        held.clear()
        yield out


def _gate(name: str, files: Sequence[_Staged]) -> qc.QCResult:
    """:func:`gate.validate` of the files' rows of ``name``, slice by slice, merged.

    Every expectation of a table with more rows than a slice is a row-level one
    (spikes), so the slices' verdicts together are the verdict on the whole.
    """
    results: list[qc.QCResult] = []
    for rows in _slices(_pieces(name, files)):
        results.append(gate.validate(name, rows))
        del rows
    if len(results) == 1:
        return results[0]
    by_file: dict[str, list[str]] = {}
    for r in results:
        for fid, lines in r.by_file.items():
            mine = by_file.setdefault(fid, [])
            mine.extend(line for line in lines if line not in mine)
    return qc.QCResult(
        table=name,
        success=all(r.success for r in results),
        failures=tuple(dict.fromkeys(f for r in results for f in r.failures)),
        by_file=by_file,
        unattributed=tuple(dict.fromkeys(u for r in results for u in r.unattributed)),
        result=next((r.result for r in results if not r.success), results[0].result),
    )


def commit_batch(
    outcomes: Sequence[Outcome | dict[str, Any]], *, lake: str | None = None
) -> list[Outcome]:
    """Validate staged files together, then commit the passing ones at once.

    Each table's rows of the whole batch are validated in one GX run (one per
    slice of :data:`SLICE_ROWS` rows: tables are read back from staging one at a
    time, slice by slice); failures are attributed to files through their
    ``file_id``. Files with a failure are moved to ``<lake>/quarantine/<file_id>/``
    and logged ``quarantined`` with the failed expectations; nothing of them
    reaches the data tables. The others are appended with one commit per table
    (per slice); one ``ingest_log`` commit then publishes all of them (the commit
    point), and one delete per table removes the rows of their superseded attempts.

    The parts of a split plate (outcomes with ``part`` set, sharing an
    ``ingest_id``) are merged first into one outcome per file, returned in
    place of its parts; a file with a part missing or not staged is
    ``failed`` with the reason and nothing of it is committed.
    """
    outs, sources = _merge_parts([_as_outcome(o) for o in outcomes], lake=lake)
    staged: list[Outcome] = []
    seen: dict[str, Outcome] = {}
    for o in outs:
        if o.status != "staged":
            continue
        if o.file_id in seen:  # the same bytes twice in one batch: keep the first
            o.status, o.reason = "duplicate", f"same content as {seen[o.file_id].file_name}"
            storage.remove_tree(o.staging)
            o.staging = ""
            record_failure(o, lake=lake)
            continue
        seen[o.file_id] = o
        staged.append(o)
    if not staged:
        return outs
    batch_id = uuid.uuid4().hex
    run_time = now_utc().replace(microsecond=0).isoformat()
    local = not spec.is_remote(spec.lake_root(lake))
    try:
        # One table at a time, re-read from staging slice by slice: never a table of
        # the whole batch in memory (a 10 M-spike plate would be gigabytes).
        names = list(dict.fromkeys(n for o in staged for n in o.rows))
        files: list[_Staged] = [(o, sources[o.ingest_id]) for o in staged]
        failures: dict[str, list[str]] = {}
        pages: dict[str, str] = {}
        for name in names:
            result = _gate(name, files)
            if local:
                qc.save_result(result, batch_id=batch_id, run_time=run_time, lake=lake)
                page = qc.docs_page(name, batch_id=batch_id, run_time=run_time, lake=lake)
                pages[name] = str(page.relative_to(qc.docs_dir(lake)))
            for fid, lines in result.by_file.items():
                failures.setdefault(fid, []).extend(f"{name}: {line}" for line in lines)
            if result.unattributed:
                # A table-level expectation failed: find the culprits file by file.
                for one in files:
                    if name not in one[0].rows:
                        continue
                    alone = _gate(name, [one])
                    if not alone.success:
                        failures.setdefault(one[0].file_id, []).append(alone.reason)
            del result
        for o in staged:
            o.batch_id = batch_id
            o.qc_pages = {n: p for n, p in pages.items() if n in o.rows}
        bad = [o for o in staged if o.file_id in failures]
        good = [o for o in staged if o.file_id not in failures]
        for o in bad:
            quarantine = storage.join(spec.quarantine_dir(o.file_id, lake), o.ingest_id)
            storage.move_tree(o.staging, quarantine)
            o.status, o.staging = "quarantined", quarantine
            o.reason = " | ".join(dict.fromkeys(failures[o.file_id]))
        passing = [(o, sources[o.ingest_id]) for o in good]
        for name in names:
            # the good files' rows, re-read from staging: one commit per slice (one
            # per table unless the batch has more rows of it than a slice); rows
            # appended stay invisible until the ingest_log commit below publishes them
            for rows in _slices(_pieces(name, passing)):
                lakeio.append_rows(name, rows, lake=lake, batch_id=batch_id)
                del rows
        for o in good:
            o.status = "published"
        try:
            record([*good, *bad], lake=lake)  # the commit point of every good file
        except BaseException:
            # Nothing was logged, so nothing is published (the appended rows stay
            # invisible: no view shows rows without their published log row).
            for o in (*good, *bad):
                o.status = "staged"
            raise
        keep = {o.file_id: o.ingest_id for o in good}
        for name in names:
            lakeio.prune_superseded_many(name, keep=keep, lake=lake)
        for o in good:
            storage.remove_tree(o.staging)
            o.staging = ""
        return outs
    except ResourceLimit as exc:
        reason = f"resource: {exc}"
    except NeurocyteError as exc:
        reason = str(exc)
    except Exception as exc:
        if is_out_of_memory(exc):  # the gate's budget, not the data: never a QC verdict
            reason = resource_reason(f"batch {batch_id}")
        else:
            log.error("unexpected error committing batch %s\n%s", batch_id, traceback.format_exc())
            reason = f"internal error: {type(exc).__name__}: {exc}"
    pending = [o for o in staged if o.status == "staged"]
    for o in pending:
        # the gate or the lake failed, not the file: logged without a metadata digest,
        # so the next run tries it again whatever changed
        o.status, o.reason, o.metadata_digest = "failed", reason, ""
    record_failure(pending, lake=lake)
    return outs


def commit_staged(outcome: Outcome | dict[str, Any], *, lake: str | None = None) -> Outcome:
    """Validate and commit one staged file (a batch of one)."""
    return commit_batch([outcome], lake=lake)[0]
