"""Delta Lake I/O: append a file's rows, record attempts, prune superseded rows.

The commit protocol that keeps readers consistent without multi-table
transactions:

1. the data rows of one ingest attempt are appended to each data table,
   tagged with a fresh ``ingest_id``;
2. one ``published`` row in ``ingest_log`` names that ``ingest_id`` — this is
   the commit point;
3. rows of the same ``file_id`` with any other ``ingest_id`` are deleted.

The catalog's views only show rows whose ``(file_id, ingest_id)`` is the
latest published attempt, so a crash between any two steps never exposes a
partial or duplicated file, and a re-run converges (step 3 also sweeps rows
left by crashed attempts).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from transforms import spec
from transforms.errors import LakeError, SpecError

if TYPE_CHECKING:
    from deltalake import CommitProperties

T = TypeVar("T")


INGEST_LOG_SCHEMA = pa.schema(
    [
        pa.field("file_id", pa.string(), nullable=False),
        pa.field("ingest_id", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("file_name", pa.string(), nullable=False),
        pa.field("source_format", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("lab", pa.string()),
        pa.field("condition", pa.string()),
        pa.field("timepoint", pa.string()),
        pa.field("transform_version", pa.string(), nullable=False),
        pa.field("rows_json", pa.string()),
        pa.field("batch_id", pa.string()),
        pa.field("qc_report", pa.string()),
        pa.field("started_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
        # The order of attempts, by the log itself (see next_log_seq): never a clock.
        pa.field("log_seq", pa.int64()),
        # SHA-256 of the metadata that applied to the attempt (sidecar, plate map,
        # partition, parameter set; transforms.pipeline.identity). NULL: unknown (logged
        # before the column existed, or a failure caused outside the file).
        pa.field("metadata_digest", pa.string()),
    ]
)

#: How attempts of one file are ordered, latest first: by log sequence (rows logged
#: before log_seq existed count as older), then, for those, by time; ties by id.
ATTEMPT_ORDER: Final = "coalesce(log_seq, -1) DESC, finished_at DESC, ingest_id DESC"


def storage_options(lake: str | None = None) -> dict[str, str] | None:
    """deltalake storage options for an object-store lake, from the environment.

    Credentials are never part of the code or of a URI: they come from the
    standard ``AWS_*`` variables (an Airflow task exports its ``aws``
    connection into them for the duration of the call).

    Safe concurrent commits: S3 has no atomic rename, so delta-rs must either
    put the next ``_delta_log`` entry conditionally (``If-None-Match``; MinIO,
    R2, current AWS S3 and moto's server honour it) or take a DynamoDB lock.
    The default is ``AWS_CONDITIONAL_PUT=etag``; set ``AWS_S3_LOCKING_PROVIDER
    =dynamodb`` (and ``DELTA_DYNAMO_TABLE_NAME``) in the environment to use
    the lock instead. Unsafe renames are never enabled here.

    Returns
    -------
    dict or None
        ``None`` for a local lake.
    """
    root = spec.lake_root(lake)
    if not spec.is_remote(root):
        return None
    keys = (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ALLOW_HTTP",
        "AWS_CONDITIONAL_PUT",
        "AWS_S3_LOCKING_PROVIDER",
        "DELTA_DYNAMO_TABLE_NAME",
    )
    opts = {k: os.environ[k] for k in keys if os.environ.get(k)}
    opts.setdefault("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    if opts.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        opts["AWS_ALLOW_HTTP"] = "true"
    if opts.get("AWS_S3_LOCKING_PROVIDER") != "dynamodb":
        opts.setdefault("AWS_CONDITIONAL_PUT", "etag")
    return opts


#: delta-rs's own retries of a commit that lost the race for the next log version
#: (it re-checks the winner for conflicts and re-commits; no data is rewritten).
MAX_COMMIT_RETRIES: Final = 15
#: Re-runs of an operation whose commit truly conflicted (two prunes rewriting the same
#: data file): only a fresh snapshot can resolve those, no commit retry can.
CONFLICT_RERUNS: Final = 6


def commit_properties(
    *, operation: str, batch_id: str | None = None, ingest_ids: Iterable[str] = ()
) -> CommitProperties:
    """delta-rs commit properties of a Neurocyte commit: retries and Delta-log metadata.

    The custom metadata (``neurocyte.operation``, ``neurocyte.batch_id``,
    ``neurocyte.ingest_ids``) lands in the table's ``_delta_log`` commit info, so
    ``DeltaTable.history()`` says which batch and attempts wrote each version.
    """
    from deltalake import CommitProperties

    meta: dict[str, str] = {"neurocyte.operation": operation}
    if batch_id:
        meta["neurocyte.batch_id"] = spec.check_id("batch_id", batch_id)
    ids = sorted({spec.check_id("ingest_id", i) for i in ingest_ids})
    if ids:
        meta["neurocyte.ingest_ids"] = ",".join(ids)
    return CommitProperties(max_commit_retries=MAX_COMMIT_RETRIES, custom_metadata=meta)


def rerun_on_conflict(fn: Callable[[], T], *, what: str) -> T:
    """Run a Delta operation, re-running it from a fresh snapshot on a true conflict.

    Version races are retried inside delta-rs (:func:`commit_properties`); what
    reaches here is a logical conflict: a concurrent delete rewrote a data file this
    delete also rewrites, or a concurrent writer created the table or changed its
    schema.

    Raises
    ------
    LakeError
        If the operation still conflicts after :data:`CONFLICT_RERUNS` runs, or
        fails on I/O (a full disk, an unreachable object store).
    """
    from deltalake.exceptions import CommitFailedError, DeltaError

    delay = 0.05
    for attempt in range(1, CONFLICT_RERUNS + 1):
        try:
            return fn()
        except CommitFailedError as exc:
            if attempt == CONFLICT_RERUNS:
                raise LakeError(f"{what}: commit conflicted {attempt} times: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        except (DeltaError, OSError) as exc:  # I/O: a full disk, a lost object store
            raise LakeError(f"{what}: {type(exc).__name__}: {exc}") from exc
    raise LakeError(f"{what}: not attempted")


def table_exists(table: str, *, lake: str | None = None) -> bool:
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(
        spec.table_uri(table, lake), storage_options=storage_options(lake)
    )


def append_rows(
    table: str,
    rows: pa.Table,
    *,
    lake: str | None = None,
    partitioned: bool = True,
    batch_id: str | None = None,
) -> None:
    """Append ``rows`` to a Delta table in one commit, creating it if needed.

    New columns are merged into the table schema, so a later transform
    version can add features without rewriting history. The commit's Delta-log
    metadata names ``batch_id`` and the rows' ingest_ids (:func:`commit_properties`).
    """
    from deltalake import write_deltalake

    if rows.num_rows == 0:
        return
    if partitioned:
        for col in spec.PARTITION_COLUMNS:
            if col not in rows.column_names:
                raise SpecError(f"{table}: rows lack partition column {col!r}")
            for value in pc.unique(rows[col]).to_pylist():
                spec.validate_partition_value(col, value, source=table)
    uri = spec.table_uri(table, lake)
    props = commit_properties(
        operation=f"append {table}",
        batch_id=batch_id,
        ingest_ids=pc.unique(rows["ingest_id"]).to_pylist()
        if "ingest_id" in rows.column_names
        else (),
    )

    def commit() -> None:
        write_deltalake(
            uri,
            rows,
            mode="append",
            partition_by=list(spec.PARTITION_COLUMNS) if partitioned else None,
            schema_mode="merge",
            storage_options=storage_options(lake),
            commit_properties=props,
        )

    # Concurrent appends only race for the log version (delta-rs retries those), but
    # one that creates the table or merges a new column into its schema changes the
    # metadata, which delta-rs reports as a conflict: re-run it on the new snapshot.
    rerun_on_conflict(commit, what=f"append to {table}")


def next_log_seq(*, lake: str | None = None) -> int:
    """1 + the largest ``log_seq`` in ``ingest_log`` now (1 for an empty log).

    The sequence orders attempts without trusting any worker's clock: an attempt
    logged after another was visible gets a larger number, so a re-ingest on a
    worker whose clock runs behind is still the latest. Two writers that log at
    once without seeing each other may share a number; ``ingest_id`` then decides,
    the same way for every reader.
    """
    log = read_table(spec.INGEST_LOG, lake=lake)
    if log is None or "log_seq" not in log.column_names or log.num_rows == 0:
        return 1
    top = pc.max(log["log_seq"]).as_py()
    return 1 if top is None else int(top) + 1


def append_log(entries: pa.Table, *, lake: str | None = None) -> None:
    """Append attempts to ``ingest_log`` (not partitioned: it is small), with their
    ``log_seq`` (:func:`next_log_seq`)."""
    unknown = set(pc.unique(entries["status"]).to_pylist()) - set(spec.INGEST_STATUSES)
    if unknown:
        raise SpecError(f"unknown ingest status {sorted(unknown)}")
    seq = pa.array([next_log_seq(lake=lake)] * entries.num_rows, pa.int64())
    if "log_seq" in entries.column_names:
        entries = entries.set_column(entries.schema.get_field_index("log_seq"), "log_seq", seq)
    else:
        entries = entries.append_column("log_seq", seq)
    batches = (
        {b for b in entries["batch_id"].to_pylist() if b}
        if "batch_id" in entries.column_names
        else set()
    )
    append_rows(
        spec.INGEST_LOG,
        entries.cast(INGEST_LOG_SCHEMA),
        lake=lake,
        partitioned=False,
        batch_id=batches.pop() if len(batches) == 1 else None,
    )


def prune_superseded(
    table: str,
    *,
    file_id: str,
    keep_ingest_id: str | None,
    lake: str | None = None,
) -> int:
    """Delete rows of ``file_id`` whose ``ingest_id`` is not ``keep_ingest_id``.

    With ``keep_ingest_id=None`` every row of the file is deleted. Returns
    the number of rows deleted. The predicate is built only from validated
    hex identifiers.
    """
    from deltalake import DeltaTable

    if not table_exists(table, lake=lake):
        return 0
    spec.check_id("file_id", file_id)
    predicate = f"file_id = '{file_id}'"
    if keep_ingest_id is not None:
        predicate += f" AND ingest_id != '{spec.check_id('ingest_id', keep_ingest_id)}'"

    props = commit_properties(operation=f"prune {table}")

    def commit() -> int:
        dt = DeltaTable(spec.table_uri(table, lake), storage_options=storage_options(lake))
        metrics = dt.delete(predicate, commit_properties=props)
        return int(metrics.get("num_deleted_rows", 0) or 0)

    return rerun_on_conflict(commit, what=f"prune {table}")


def read_table(
    table: str,
    *,
    lake: str | None = None,
    columns: list[str] | None = None,
) -> pa.Table | None:
    """The current snapshot of a table, or ``None`` if it does not exist yet."""
    from deltalake import DeltaTable

    if not table_exists(table, lake=lake):
        return None
    dt = DeltaTable(spec.table_uri(table, lake), storage_options=storage_options(lake))
    return dt.to_pyarrow_table(columns=columns)


def table_version(table: str, *, lake: str | None = None) -> int:
    """The table's latest Delta version (-1 if it does not exist yet)."""
    from deltalake import DeltaTable

    if not table_exists(table, lake=lake):
        return -1
    return int(
        DeltaTable(spec.table_uri(table, lake), storage_options=storage_options(lake)).version()
    )


def table_columns(table: str, *, lake: str | None = None) -> list[str]:
    """Column names of the table's current Delta schema (empty if no table yet)."""
    from deltalake import DeltaTable

    if not table_exists(table, lake=lake):
        return []
    dt = DeltaTable(spec.table_uri(table, lake), storage_options=storage_options(lake))
    return [f.name for f in dt.schema().fields]


def snapshot_files(table: str, *, lake: str | None = None) -> tuple[int, list[str]]:
    """Version and data-file URIs of the table's current snapshot."""
    from deltalake import DeltaTable

    dt = DeltaTable(spec.table_uri(table, lake), storage_options=storage_options(lake))
    return dt.version(), list(dt.file_uris())


def latest_attempts(*, lake: str | None = None) -> pa.Table:
    """The latest ``ingest_log`` row per file_id (empty table if no log yet)."""
    log = read_table(spec.INGEST_LOG, lake=lake)
    if log is None or log.num_rows == 0:
        return INGEST_LOG_SCHEMA.empty_table()
    import duckdb

    con = duckdb.connect()
    con.register("log", _with_seq(log))
    return con.sql(
        "SELECT * FROM log QUALIFY row_number() OVER "  # noqa: S608  (a constant)
        f"(PARTITION BY file_id ORDER BY {ATTEMPT_ORDER}) = 1"
    ).to_arrow_table()


def published_ingests(*, lake: str | None = None) -> dict[str, tuple[str, str]]:
    """file_id -> (ingest_id, transform_version) of its latest *published* attempt."""
    log = read_table(
        spec.INGEST_LOG,
        lake=lake,
    )
    if log is None or log.num_rows == 0:
        return {}
    import duckdb

    con = duckdb.connect()
    con.register("log", _with_seq(log))
    rows = con.sql(
        "SELECT file_id, ingest_id, transform_version FROM log WHERE status = 'published' "  # noqa: S608
        f"QUALIFY row_number() OVER (PARTITION BY file_id ORDER BY {ATTEMPT_ORDER}) = 1"
    ).fetchall()
    return {f: (i, v) for f, i, v in rows}


def _with_seq(log: pa.Table) -> pa.Table:
    """``log`` with a ``log_seq`` column (all null for a log written before it existed)."""
    if "log_seq" in log.column_names:
        return log
    return log.append_column("log_seq", pa.nulls(log.num_rows, pa.int64()))


def count_rows(
    table: str, *, lake: str | None = None, file_ids: Iterable[str] | None = None
) -> int:
    """Physical row count (all ingest attempts), optionally for some files."""
    data = read_table(table, lake=lake, columns=["file_id"])
    if data is None:
        return 0
    if file_ids is None:
        return data.num_rows
    return int(pc.sum(pc.is_in(data["file_id"], pa.array(list(file_ids)))).as_py() or 0)


Mode = Literal["error", "overwrite"]


def superseded_attempts(file_ids: Iterable[str], *, lake: str | None = None) -> list[str]:
    """Logged attempts of these files older than each file's latest published attempt.

    Only attempts present in ``ingest_log`` qualify: an attempt that appended
    rows but has not logged yet may be another writer's commit in flight, and
    deleting its rows would lose the version it is about to publish. (Rows of
    attempts that crashed before logging stay invisible to the views; a later
    ingest of the same file or maintenance removes them.)
    """
    wanted = {spec.check_id("file_id", f) for f in file_ids}
    log = read_table(spec.INGEST_LOG, lake=lake)
    if log is None or not wanted:
        return []
    import duckdb

    con = duckdb.connect()
    con.register("log", _with_seq(log))
    con.register("wanted", pa.table({"file_id": pa.array(sorted(wanted), pa.string())}))
    rows = con.sql(
        f"""
        WITH ranked AS (
            SELECT file_id, ingest_id, status,
                   row_number() OVER (PARTITION BY file_id ORDER BY {ATTEMPT_ORDER}) AS pos
            FROM log WHERE file_id IN (SELECT file_id FROM wanted)
        ),
        latest AS (
            SELECT file_id, min(pos) AS pos FROM ranked WHERE status = 'published'
            GROUP BY file_id
        )
        SELECT DISTINCT r.ingest_id FROM ranked AS r JOIN latest AS p USING (file_id)
        WHERE r.pos > p.pos
        """  # noqa: S608  (a constant)
    ).fetchall()
    return sorted(r[0] for r in rows)


def local_path(uri: str) -> str:
    """A ``file://`` URI as a plain path; other URIs unchanged."""
    return uri[len("file://") :] if uri.startswith("file://") else uri


def delete_attempts(table: str, *, ingest_ids: Iterable[str], lake: str | None = None) -> int:
    """One commit deleting every row of the given attempts; the number of rows deleted.

    The predicate is built only from validated hex identifiers.
    """
    from deltalake import DeltaTable

    ids = sorted({spec.check_id("ingest_id", i) for i in ingest_ids})
    if not ids or not table_exists(table, lake=lake):
        return 0
    predicate = "ingest_id IN (" + ", ".join(f"'{i}'" for i in ids) + ")"
    props = commit_properties(operation=f"sweep {table}", ingest_ids=ids)

    def commit() -> int:
        dt = DeltaTable(spec.table_uri(table, lake), storage_options=storage_options(lake))
        metrics = dt.delete(predicate, commit_properties=props)
        return int(metrics.get("num_deleted_rows", 0) or 0)

    return rerun_on_conflict(commit, what=f"sweep {table}")


def prune_superseded_many(
    table: str,
    *,
    keep: dict[str, str],
    lake: str | None = None,
) -> int:
    """One commit deleting the rows of superseded attempts of the files in ``keep``.

    ``keep`` names the files just committed (file_id -> this writer's
    ingest_id). What is deleted is decided from ``ingest_log`` at prune time
    (:func:`superseded_attempts`), not from ``keep``'s ingest_ids: when two
    writers replace one file concurrently, the one that committed first must
    not delete the later, published attempt. The predicate is built only from
    validated hex identifiers.
    """
    from deltalake import DeltaTable

    if not keep or not table_exists(table, lake=lake):
        return 0
    old = superseded_attempts(keep, lake=lake)
    if not old:
        return 0
    files = ", ".join(f"'{spec.check_id('file_id', f)}'" for f in keep)
    ingests = ", ".join(f"'{spec.check_id('ingest_id', i)}'" for i in old)
    predicate = f"file_id IN ({files}) AND ingest_id IN ({ingests})"

    props = commit_properties(operation=f"prune {table}")

    def commit() -> int:
        dt = DeltaTable(spec.table_uri(table, lake), storage_options=storage_options(lake))
        metrics = dt.delete(predicate, commit_properties=props)
        return int(metrics.get("num_deleted_rows", 0) or 0)

    return rerun_on_conflict(commit, what=f"prune {table}")
