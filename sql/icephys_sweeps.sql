-- icephys_sweeps: one row per sweep of every published patch-clamp recording:
-- stimulus, baseline, spike-train and subthreshold features, sweep QC.
CREATE OR REPLACE VIEW icephys_sweeps AS
SELECT t.*
FROM {{ source }} AS t
SEMI JOIN published AS p ON t.file_id = p.file_id AND t.ingest_id = p.ingest_id;
