-- icephys_recordings: one row per published patch-clamp recording (ABF or NWB file).
CREATE OR REPLACE VIEW icephys_recordings AS
SELECT t.*
FROM {{ source }} AS t
SEMI JOIN published AS p ON t.file_id = p.file_id AND t.ingest_id = p.ingest_id
-- curation: rows of recordings a curator excluded (see the excluded view) are left out
ANTI JOIN excluded AS x ON x.file_id = t.file_id AND x.target_kind = 'recording';
