-- qc_summary: the latest attempt of every source file, counted per lab, condition,
-- timepoint and status (published, quarantined, failed, duplicate). A not_retried row
-- (an unchanged failed file seen again) is not an attempt: the failure it repeats counts.
CREATE OR REPLACE VIEW qc_summary AS
WITH latest AS (
    SELECT * FROM ingest_log
    WHERE status <> 'not_retried'
    QUALIFY row_number() OVER (PARTITION BY file_id, source_path
                               ORDER BY coalesce(log_seq, -1) DESC, finished_at DESC,
                                        ingest_id DESC) = 1
)
SELECT coalesce(lab, '') AS lab, coalesce(condition, 'per well') AS condition,
       coalesce(timepoint, '') AS timepoint, status, count(*) AS files
FROM latest
GROUP BY ALL
ORDER BY ALL;
