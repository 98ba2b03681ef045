"""Publish a quarantined attempt after a curator's review ("accept quarantined").

A quarantined file's staged rows are kept in ``<lake>/quarantine/<file_id>/<ingest_id>/``
(one Parquet file per table, as the gate saw them). Accepting it follows the commit
protocol of :mod:`transforms.pipeline.commit` without the gate: the rows are appended
to every data table under a new attempt's ``ingest_id``, then one ``published`` row in
``ingest_log`` (its reason naming the curator's acceptance and the failures it
overrides) is the commit point, then rows of superseded attempts are pruned. The
failed expectations stay on record in the quarantined log row and in ``curation_log``.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from transforms import spec
from transforms.errors import LakeError, SpecError
from transforms.lake import delta as lakeio
from transforms.lake import storage
from transforms.pipeline.outcome import Outcome, record


def publish_quarantined(
    file_id: str, *, curator: str, why: str, lake: str | None = None
) -> Outcome:
    """Publish the latest attempt of ``file_id``, which must be quarantined.

    Returns
    -------
    Outcome
        The published attempt (a new ``ingest_id``; the quarantined attempt stays logged).

    Raises
    ------
    SpecError
        If the file's latest attempt is not quarantined.
    LakeError
        If its quarantined rows are no longer kept, or a commit fails.
    """
    spec.check_file_id(file_id)
    latest = lakeio.latest_attempts(lake=lake)
    rows = latest.filter(pc.equal(latest["file_id"], file_id)).to_pylist()
    if not rows:
        raise SpecError(f"no ingested file has file_id {file_id}")
    a = rows[0]
    if a["status"] != "quarantined":
        raise SpecError(f"{a['file_name']} is {a['status']}, not quarantined")
    counts: dict[str, int] = json.loads(a["rows_json"] or "{}")
    kept = storage.join(spec.quarantine_dir(file_id, lake), a["ingest_id"])
    tables: dict[str, pa.Table] = {}
    for name in counts:
        if name not in spec.DATA_TABLES:
            continue
        uri = storage.join(kept, f"{name}.parquet")
        if not storage.exists(uri):
            raise LakeError(f"{a['file_name']}: its quarantined rows of {name} are not kept")
        tables[name] = storage.read_parquet(uri)
    if not tables:
        raise LakeError(f"{a['file_name']}: no quarantined rows are kept")
    # A new attempt: the rows under a fresh ingest_id (the quarantined attempt's id
    # stays with its quarantined log row, which the prune would count as superseded).
    ingest_id = uuid.uuid4().hex
    for name, t in tables.items():
        col = pa.array([ingest_id] * t.num_rows, pa.string())
        t = t.set_column(t.schema.get_field_index("ingest_id"), "ingest_id", col)
        lakeio.append_rows(name, t, lake=lake, batch_id=a["batch_id"])
    started = a["started_at"]
    outcome = Outcome(
        source_path=a["source_path"],
        file_name=a["file_name"],
        file_id=file_id,
        ingest_id=ingest_id,
        status="published",
        reason=f"accepted after review by {curator}: {why} (QC had failed: {a['reason']})",
        started_at=started.isoformat() if isinstance(started, datetime) else str(started),
        source_format=a["source_format"] or "",
        partition={k: a[k] for k in spec.PARTITION_COLUMNS if a.get(k)},
        rows=counts,
        batch_id=a["batch_id"] or "",
        qc_pages=json.loads(a["qc_report"] or "{}"),
    )
    record(outcome, lake=lake)  # the commit point
    for name in tables:
        lakeio.prune_superseded_many(name, keep={file_id: ingest_id}, lake=lake)
    return outcome
