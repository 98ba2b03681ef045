-- curation_log: every curator action, append-only (README, "The Neurocyte page"): who
-- (curator, curator_roles), when (acted_at, log_seq), what (action on target_kind file_id
-- [well | sweep_number]) and why (reason).
CREATE OR REPLACE VIEW curation_log AS
SELECT t.*
FROM {{ source }} AS t;
