-- mea_metric_parity: each Axion Neural Metric Tool value (mea_vendor_metrics, well level)
-- beside Neurocyte's value of the same metric (mea_well_metrics) for a plate whose spikes
-- the lake also holds. A vendor export matches a recording by plate serial and start time
-- (NMT's Original File Time = the recording's recorded_at, to the second: exports print
-- whole seconds, a .raw header may hold milliseconds), and by recording name where
-- both state one. rel_diff = (neurocyte - vendor) / |vendor| (0 when both are equal,
-- NULL when the vendor value is 0 and Neurocyte's is not, or either is NULL).
-- Only metrics with one definition on both sides are listed (see the README).
CREATE OR REPLACE VIEW mea_metric_parity AS
WITH metric_map(metric, neurocyte_column) AS (
    VALUES ('Number of Spikes', 'spike_count'),
           ('Mean Firing Rate', 'mean_firing_rate_hz'),
           ('Weighted Mean Firing Rate', 'weighted_mean_firing_rate_hz'),
           ('Number of Active Electrodes', 'n_active_electrodes'),
           ('Number of Network Bursts', 'nb_count'),
           ('Network Burst Frequency', 'nb_frequency_hz'),
           ('Network Burst Duration - Avg', 'nb_mean_duration_s'),
           ('Network Burst Percentage', 'nb_percentage'),
           ('Network IBI Coefficient of Variation', 'nb_ibi_cv'),
           ('Area Under Normalized Cross-Correlation', 'sync_xcorr_area')
),
recordings AS (
    SELECT file_id, well, plate_sn, recorded_at,
           json_extract_string(settings_json, '$.recording_name') AS recording_name
    FROM mea_recordings
    WHERE plate_sn IS NOT NULL AND recorded_at IS NOT NULL
),
paired AS (
    SELECT v.lab, v.condition, v.timepoint, v.timepoint_days, v.plate_sn, v.recorded_at,
           v.recording_name, v.well, v.metric, v.metric_label, v.unit,
           m.neurocyte_column, v.value AS vendor_value,
           CASE m.neurocyte_column
               WHEN 'spike_count' THEN w.spike_count::DOUBLE
               WHEN 'mean_firing_rate_hz' THEN w.mean_firing_rate_hz
               WHEN 'weighted_mean_firing_rate_hz' THEN w.weighted_mean_firing_rate_hz
               WHEN 'n_active_electrodes' THEN w.n_active_electrodes::DOUBLE
               WHEN 'nb_count' THEN w.nb_count::DOUBLE
               WHEN 'nb_frequency_hz' THEN w.nb_frequency_hz
               WHEN 'nb_mean_duration_s' THEN w.nb_mean_duration_s
               WHEN 'nb_percentage' THEN w.nb_percentage
               WHEN 'nb_ibi_cv' THEN w.nb_ibi_cv
               WHEN 'sync_xcorr_area' THEN w.sync_xcorr_area
           END AS neurocyte_value,
           v.file_id AS vendor_file_id, r.file_id AS neurocyte_file_id
    FROM mea_vendor_metrics AS v
    JOIN metric_map AS m USING (metric)
    JOIN recordings AS r
      ON r.plate_sn = v.plate_sn AND r.well = v.well
     AND date_trunc('second', r.recorded_at) = date_trunc('second', v.recorded_at)
     AND (r.recording_name IS NULL OR v.recording_name IS NULL
          OR r.recording_name = v.recording_name)
    JOIN mea_well_metrics AS w ON w.file_id = r.file_id AND w.well = r.well
    WHERE v.level = 'well'
)
SELECT *,
       neurocyte_value - vendor_value AS abs_diff,
       CASE WHEN neurocyte_value = vendor_value THEN 0.0
            WHEN vendor_value = 0 THEN NULL
            ELSE (neurocyte_value - vendor_value) / abs(vendor_value)
       END AS rel_diff
FROM paired
ORDER BY plate_sn, recorded_at, well, metric;
