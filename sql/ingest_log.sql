-- ingest_log: one row per file attempt (published, quarantined, failed, duplicate),
-- with the error or QC reason and the transform version.
CREATE OR REPLACE VIEW ingest_log AS
SELECT * FROM {{ source }};
