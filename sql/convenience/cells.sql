-- cells: one row per published patch-clamp cell: its metadata and its cell features.
CREATE OR REPLACE VIEW cells AS
SELECT r.lab, r.condition, r.timepoint, r.cell_id, r.subject, r.file_name, r.recorded_at,
       r.clamp_mode, r.n_sweeps, r.sampling_rate_hz, c.* EXCLUDE (lab, condition, timepoint,
       ingest_id, transform_version, params_json)
FROM icephys_recordings AS r
LEFT JOIN icephys_cell_features AS c USING (file_id);
