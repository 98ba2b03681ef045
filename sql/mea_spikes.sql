-- mea_spikes: see the README's tables section for every column, its unit and definition.
CREATE OR REPLACE VIEW mea_spikes AS
SELECT t.*
FROM {{ source }} AS t
SEMI JOIN published AS p ON t.file_id = p.file_id AND t.ingest_id = p.ingest_id
-- curation: rows of excluded recordings and wells (see the excluded view) are left out
ANTI JOIN excluded AS x ON x.file_id = t.file_id
    AND (x.target_kind = 'recording' OR (x.target_kind = 'well' AND x.well = t.well));
