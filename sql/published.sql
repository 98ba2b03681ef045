-- published: the latest published ingest attempt of every source file.
-- Every data view joins on (file_id, ingest_id) with it, so rows of attempts
-- that crashed, were superseded or failed QC are never visible.
CREATE OR REPLACE VIEW published AS
SELECT file_id, ingest_id, transform_version, source_path, file_name, finished_at AS published_at
FROM {{ source }}
WHERE status = 'published'
-- Latest by log sequence (the order attempts were logged in, never a worker's clock);
-- rows logged before log_seq existed count as older, ordered by time among themselves.
QUALIFY row_number() OVER (
    PARTITION BY file_id ORDER BY coalesce(log_seq, -1) DESC, finished_at DESC, ingest_id DESC
) = 1;
