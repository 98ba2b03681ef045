-- mea_vendor_metrics: see the README's tables section for every column, its unit and definition.
CREATE OR REPLACE VIEW mea_vendor_metrics AS
SELECT t.*
FROM {{ source }} AS t
SEMI JOIN published AS p ON t.file_id = p.file_id AND t.ingest_id = p.ingest_id;
