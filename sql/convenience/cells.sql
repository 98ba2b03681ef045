-- cells: one row per published patch-clamp cell and analysis (long_square, ramp,
-- short_square; see the analysis column): its metadata and its cell features, in time
-- order (timepoint_days: DIV14 -> 14, P21 -> 21; other timepoints after, by name).
CREATE OR REPLACE VIEW cells AS
SELECT r.lab, r.condition, r.timepoint, r.timepoint_days, r.cell_id, r.subject, r.species,
       r.sex, r.age, r.genotype, r.strain, r.file_name, r.recorded_at,
       r.clamp_mode, r.n_sweeps, r.sampling_rate_hz, c.* EXCLUDE (lab, condition, timepoint,
       timepoint_days, ingest_id, transform_version, params_json)
FROM icephys_recordings AS r
LEFT JOIN icephys_cell_features AS c USING (file_id)
ORDER BY r.lab, r.condition, r.timepoint_days NULLS LAST, r.timepoint, r.cell_id, c.analysis;
