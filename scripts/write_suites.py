"""Regenerate expectations/*.json from this single readable definition.

The JSON files are the source of truth the QC gate loads; this script is how
they are written, so a reviewer reads one Python file instead of ten JSON ones.
Run: ``uv run python scripts/write_suites.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe

OUT = Path(__file__).resolve().parents[1] / "expectations"
HEX64 = r"^[0-9a-f]{64}$"
PART = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$"
WELL = r"^[A-P][0-9]{1,2}$"
ELECTRODE = r"^[A-P][0-9]{1,2}_[0-9a-b][0-9]$"
CC = {"row_condition": 'clamp_mode=="current_clamp"', "condition_parser": "pandas"}


def provenance() -> list:
    out = [
        gxe.ExpectColumnValuesToNotBeNull(column=c)
        for c in (
            "file_id",
            "ingest_id",
            "transform_version",
            "params_json",
            "lab",
            "condition",
            "timepoint",
        )
    ]
    out.append(gxe.ExpectColumnValuesToMatchRegex(column="file_id", regex=HEX64))
    out += [
        gxe.ExpectColumnValuesToMatchRegex(column=c, regex=PART)
        for c in ("lab", "condition", "timepoint")
    ]
    # spec.timepoint_days: DIV14 -> 14, P21 -> 21, else NULL
    out.append(between("timepoint_days", 0, None))
    return out


def between(column: str, lo: float | None, hi: float | None, **kw) -> object:
    return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=lo, max_value=hi, **kw)


SUITES = {
    # Suites validate a batch of many files at once: per-file rules are written
    # as row-level expectations (uniqueness by file_id), so every failure can be
    # attributed to the file whose rows broke it.
    "icephys_recordings": [
        gxe.ExpectColumnValuesToBeUnique(column="file_id"),
        gxe.ExpectColumnValuesToBeBetween(
            column="sampling_rate_hz", min_value=0, strict_min=True, max_value=1_000_000
        ),
        between("n_sweeps", 1, None),
        gxe.ExpectColumnValuesToBeInSet(
            column="clamp_mode", value_set=["current_clamp", "voltage_clamp", "unknown"]
        ),
        gxe.ExpectColumnValuesToBeInSet(column="source_format", value_set=["abf1", "abf2", "nwb"]),
        gxe.ExpectColumnValuesToBeBetween(
            column="sweep_duration_s", min_value=0, strict_min=True, max_value=86400
        ),
    ],
    "icephys_sweeps": [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="sweep_number"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["file_id", "sweep_number"]),
        gxe.ExpectColumnValuesToBeBetween(
            column="sampling_rate_hz", min_value=0, strict_min=True, max_value=1_000_000
        ),
        between("spike_count", 0, None),
        between("avg_rate_hz", 0, 1000),
        gxe.ExpectColumnValuesToBeBetween(
            column="v_baseline_mv",
            min_value=-120,
            max_value=0,
            **CC,
            meta={
                "why": "a resting or held Vm outside -120..0 mV is a dead cell, a lost seal "
                "or a wrong gain/unit"
            },
        ),
        between("stim_amp_pa", -5000, 5000, **CC),
        between("stim_end_s", 0, None),
    ],
    "icephys_spikes": [
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["file_id", "sweep_number", "spike_index"]),
        between("threshold_v_mv", -100, 20),
        between("peak_v_mv", -60, 100),
        between("width_ms", 0, 20),
        between("upstroke_mv_per_ms", 0, 2000),
    ],
    "icephys_cell_features": [
        # one row per file and analysis (long_square, ramp, short_square)
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["file_id", "analysis"]),
        gxe.ExpectColumnValuesToBeInSet(
            column="analysis", value_set=["long_square", "ramp", "short_square"]
        ),
        between("rheobase_pa", -100, 5000),
        between("input_resistance_mohm", 0, 5000),
        between("tau_ms", 0, 500),
        between("v_rest_mv", -120, 0),
        # negative slopes are real (depolarisation block), absurd magnitudes are not
        between("fi_slope_hz_per_pa", -10, 10),
    ],
    "mea_recordings": [
        gxe.ExpectColumnValuesToMatchRegex(column="well", regex=WELL),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["file_id", "well"]),
        gxe.ExpectColumnValuesToBeBetween(
            column="duration_s", min_value=0, strict_min=True, max_value=7 * 86400
        ),
        between("n_spikes", 0, None),
        between("n_electrodes", 1, 64),
        # header metadata (AxIS settings): a threshold in multiples of the noise sigma
        between("detector_threshold", 0, 100, strict_min=True),
        between("sampling_rate_hz", 0, 1_000_000, strict_min=True),
        gxe.ExpectColumnValuesToNotBeInSet(column="voltage_scale_uv_per_count", value_set=[0.0]),
    ],
    "mea_spikes": [
        gxe.ExpectColumnValuesToNotBeNull(column="time_s"),
        between("time_s", 0, None),
        gxe.ExpectColumnValuesToMatchRegex(column="electrode", regex=ELECTRODE),
        gxe.ExpectColumnValuesToMatchRegex(column="well", regex=WELL),
    ],
    "mea_electrode_metrics": [
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["file_id", "electrode"]),
        between("mean_firing_rate_hz", 0, 1000),
        between("burst_percentage", 0, 100),
        between("spike_count", 0, None),
    ],
    "mea_well_metrics": [
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["file_id", "well"]),
        between("mean_firing_rate_hz", 0, 1000),
        between("weighted_mean_firing_rate_hz", 0, 1000),
        between("n_active_electrodes", 0, 64),
        between("nb_percentage", 0, 100),
        between("sttc", -1, 1),
    ],
    "mea_bursts": [
        between("duration_s", 0, None),
        between("n_spikes", 2, None),
    ],
    "mea_network_bursts": [
        between("duration_s", 0, None),
        between("n_electrodes", 1, 64),
    ],
}


def main() -> None:
    for name, expectations in SUITES.items():
        suite = gx.ExpectationSuite(name=name, expectations=[*provenance(), *expectations])
        doc = suite.to_json_dict()
        doc.pop("id", None)
        (OUT / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"{name}: {len(doc['expectations'])} expectations")


if __name__ == "__main__":
    main()
