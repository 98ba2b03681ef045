-- excluded: every recording, well or sweep whose latest exclude / restore action in
-- curation_log is an exclusion, with who excluded it, when and why. The data views
-- leave these rows out (ANTI JOIN excluded); the rows themselves stay in the lake.
CREATE OR REPLACE VIEW excluded AS
SELECT target_kind, file_id, well, sweep_number, reason, curator, acted_at AS excluded_at, action_id
FROM curation_log
WHERE action IN ('exclude', 'restore')
QUALIFY row_number() OVER (
    PARTITION BY target_kind, file_id, coalesce(well, ''), coalesce(sweep_number, -1)
    ORDER BY log_seq DESC, acted_at DESC, action_id DESC
) = 1 AND action = 'exclude';
