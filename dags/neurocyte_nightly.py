"""neurocyte_nightly: re-ingest stale files, pick up missed ones, maintain the lake.

Runs at 02:00 UTC:

1. ``find_work``: files whose latest published rows come from an older
   transform version than the code's (``ingest_log.transform_version`` vs
   ``spec.TRANSFORM_VERSION``; re-read from ``ingest_log.source_path``, or from the
   lake's raw archive of a plate whose original left the landing zone), plus
   any settled landing file with no attempt yet (a missed sensor interval);
   split into batches of ``batch_size``;
2. ``extract`` / ``gate_and_commit`` per batch (the same bodies as the ingest DAG);
3. ``maintain``: compact (or z-order by ``file_id``) every table's small files,
   checkpoint, vacuum with a retention (``dry_run`` param, default off here);
4. ``publish``: rebuild the catalog views over the new snapshots and QC docs;
5. ``archive_raw``: compress every published raw plate (``.raw``, NWB
   ``ElectricalSeries``) without an archive losslessly into
   ``<lake>/archive/raw/<file_id>.zarr``, each verified against its source
   (``archive_raw`` param; ``delete_source`` removes verified originals from the
   landing zone, default off). A plate that cannot be archived is logged, the
   others go on.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from neurocyte_tasks.alerts import NeurocyteAlertNotifier
from neurocyte_tasks.ops import DEFAULT_ARGS


@dag(
    dag_id="neurocyte_nightly",
    description="Re-ingest stale files, pick up missed ones, compact/vacuum, republish",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "on_failure_callback": NeurocyteAlertNotifier()},
    params={
        "batch_size": Param(25, type="integer", minimum=1),
        "settle_s": Param(300, type="number", description="landing files younger are left"),
        "mode": Param("zorder", enum=["compact", "zorder"]),
        "retention_hours": Param(168, type="integer", minimum=168),
        "dry_run": Param(False, type="boolean", description="maintenance reports only"),
        "grace_hours": Param(
            24, type="number", minimum=1, description="leftovers younger than this are kept"
        ),
        "archive_raw": Param(True, type="boolean", description="archive published raw plates"),
        "delete_source": Param(
            False, type="boolean", description="delete originals once archived and verified"
        ),
    },
    tags=["neurocyte", "maintenance"],
    doc_md=__doc__,
)
def neurocyte_nightly() -> None:
    @task
    def find_work() -> list[list[dict[str, Any]]]:
        """Stale files (older transform version) and missed landing files, in batches."""
        from neurocyte_tasks.ops import aws_env, file_log, log

        from transforms.errors import LakeError
        from transforms.lake.maintenance import stale_files
        from transforms.pipeline.discover import batches, new_files
        from transforms.serve.archive import archived_source

        def archive_of(file_id: str) -> Any:
            """The lake's raw archive of a file whose original is gone (local lakes)."""
            try:
                return archived_source(file_id)
            except LakeError:
                return None

        params = get_current_context()["params"]
        with aws_env():
            stale = stale_files()
            missed = new_files(settle_s=float(params["settle_s"]))
        work: dict[str, dict[str, Any]] = {}
        for s in stale:
            path = s.path
            if not s.exists:
                archived = archive_of(s.file_id)
                if archived is None:
                    file_log(
                        40,
                        s.file_id,
                        s.file_name,
                        "stale (v%s) but gone: %s",
                        s.transform_version,
                        s.path,
                    )
                    continue
                path = str(archived)
                file_log(20, s.file_id, s.file_name, "original gone -> its raw archive %s", path)
            file_log(20, s.file_id, s.file_name, "stale: v%s -> re-ingest", s.transform_version)
            work[s.file_id] = {"path": path, "file_name": s.file_name, "file_id": s.file_id}
        for c in missed:
            file_log(20, c.file_id, c.file_name, "missed by the sensor -> ingest")
            work.setdefault(c.file_id, c.as_dict())
        log.info("nightly: %d stale, %d missed, %d to ingest", len(stale), len(missed), len(work))
        return batches(list(work.values()), size=int(params["batch_size"]))

    @task(map_index_template="{{ batch_label }}")
    def extract(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from neurocyte_tasks.ops import batch_label, ingest_batch_extract

        get_current_context()["batch_label"] = batch_label(batch)  # type: ignore[typeddict-unknown-key]
        return ingest_batch_extract(batch)

    @task(map_index_template="{{ batch_label }}")
    def gate_and_commit(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from neurocyte_tasks.ops import batch_label, ingest_batch_commit

        get_current_context()["batch_label"] = batch_label(outcomes)  # type: ignore[typeddict-unknown-key]
        return ingest_batch_commit(outcomes)

    @task(trigger_rule="none_failed")
    def maintain(committed: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Sweep failed attempts' leftovers; compact / z-order, checkpoint, vacuum."""
        from neurocyte_tasks.ops import aws_env, count_statuses, log

        from transforms.lake.maintenance import maintain as run_maintenance
        from transforms.lake.maintenance import sweep

        params = get_current_context()["params"]
        log.info("re-ingest outcomes %s", count_statuses(list(committed or [])))
        with aws_env():
            swept = sweep(grace_hours=float(params["grace_hours"]), dry_run=bool(params["dry_run"]))
            reports = run_maintenance(
                mode=params["mode"],
                retention_hours=int(params["retention_hours"]),
                dry_run=bool(params["dry_run"]),
            )
        log.info(
            "sweep: orphan rows %s of %d attempts, %d staging folders, %d catalog temp files, "
            "%d old quarantine copies",
            swept.orphan_rows,
            len(swept.orphan_attempts),
            len(swept.staging_dirs),
            len(swept.catalog_temp_files),
            len(swept.quarantine_copies),
        )
        for r in reports:
            log.info(
                "maintain %s: files %d -> %d, vacuumed %d",
                r.table,
                r.files_before,
                r.files_after,
                r.vacuumed,
            )
        return [r.as_dict() for r in reports]

    @task(trigger_rule="none_failed")
    def publish(reports: list[dict[str, Any]]) -> dict[str, Any]:
        """Rebuild the catalog views (new snapshots after compaction) and QC docs."""
        from neurocyte_tasks.ops import publish_catalog

        return publish_catalog()

    @task(trigger_rule="none_failed")
    def archive_raw(published: dict[str, Any]) -> dict[str, int]:
        """Archive published raw plates (lossless, verified); failures are logged."""
        from neurocyte_tasks.ops import file_log, log

        from transforms import spec
        from transforms.lake import storage
        from transforms.serve.archive import archive_published

        params = get_current_context()["params"]
        if not params["archive_raw"] or storage.is_s3(spec.lake_root()):
            log.info("archive_raw: off (param) or an s3:// lake (archives are local only)")
            return {}
        outcomes = archive_published(delete_source=bool(params["delete_source"]))
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
            level = 40 if o.status == "failed" else 20
            file_log(level, o.file_id, o.file_name, "archive: %s %s", o.status, o.reason)
        log.info("archive_raw: %s", counts)
        return counts

    planned = find_work()
    committed = gate_and_commit.expand(outcomes=extract.expand(batch=planned))
    archive_raw(publish(maintain(committed)))


neurocyte_nightly()
