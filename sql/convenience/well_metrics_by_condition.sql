-- well_metrics_by_condition: MEA well metrics summarised per lab x condition x timepoint
-- (mean, standard deviation and count of wells; wells without active electrodes excluded
-- from the activity means but counted in n_wells), in time order (timepoint_days: DIV14 ->
-- 14, so DIV7 < DIV14 < DIV21; timepoints without a day count after, by name).
CREATE OR REPLACE VIEW well_metrics_by_condition AS
SELECT lab, condition, timepoint, timepoint_days,
       count(*) AS n_wells,
       count(*) FILTER (WHERE n_active_electrodes > 0) AS n_active_wells,
       avg(weighted_mean_firing_rate_hz) FILTER (WHERE n_active_electrodes > 0) AS wmfr_hz_mean,
       stddev(weighted_mean_firing_rate_hz) FILTER (WHERE n_active_electrodes > 0) AS wmfr_hz_sd,
       avg(mean_firing_rate_hz) AS mfr_hz_mean,
       avg(n_active_electrodes) AS active_electrodes_mean,
       avg(nb_frequency_hz) FILTER (WHERE n_active_electrodes > 0) AS nb_frequency_hz_mean,
       avg(nb_percentage) FILTER (WHERE n_active_electrodes > 0) AS nb_percentage_mean,
       avg(sttc) AS sttc_mean,
       stddev(sttc) AS sttc_sd
FROM mea_well_metrics
GROUP BY lab, condition, timepoint, timepoint_days
ORDER BY lab, condition, timepoint_days NULLS LAST, timepoint;
