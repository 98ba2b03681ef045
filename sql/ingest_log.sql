-- ingest_log: one row per file attempt (published, quarantined, failed, duplicate,
-- not_retried), with the error or QC reason, the transform version and the digest of
-- the metadata that applied (metadata_digest).
CREATE OR REPLACE VIEW ingest_log AS
SELECT * FROM {{ source }};
