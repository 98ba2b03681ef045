"""Parameter sets per lab and protocol (``neurocyte.toml``): applied, recorded, checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import land, query
from tests.reliability import small_abf
from transforms import spec
from transforms.cli import main
from transforms.errors import ConfigError
from transforms.icephys.extract import IcephysParams
from transforms.pipeline import ingest_paths
from transforms.pipeline.paramset import load_parameter_set, parse_parameter_set

DUAL = "171116sh_0018.abf"  # protocol '0113 steps dual -100 to 300 step 25'
STEPS = "File_axon_5.abf"  # protocol 'step cclamp'
DUAL_PROTOCOL = "0113 steps dual -100 to 300 step 25"

LAB_SET = f"""
[icephys]
subthresh_min_amp_pa = -80   # an integer is a number
qc_profile = "neurocyte"

[icephys.protocols."{DUAL_PROTOCOL}"]
stim_window = "ipfx"
pre_noise_rms_mv_max = 0.5

[mea.metrics]
min_rate_spm = 10
"""


def test_protocol_sections_override_the_lab_wide_section() -> None:
    ps = parse_parameter_set(LAB_SET.encode(), label="labA/neurocyte.toml")
    dual = ps.icephys_params(DUAL_PROTOCOL)
    assert dual.stim_window == "ipfx" and dual.subthresh_min_amp_pa == -80.0
    assert dual.pre_noise_rms_mv_max == 0.5
    assert isinstance(dual.subthresh_min_amp_pa, float)
    other = ps.icephys_params("step cclamp")
    assert other.stim_window == IcephysParams().stim_window
    assert other.subthresh_min_amp_pa == -80.0 and other.pre_noise_rms_mv_max is None
    assert ps.icephys_params(None) == other
    assert ps.metric_params().min_rate_spm == 10.0
    assert ps.detection_params() == type(ps.detection_params())()
    assert ps.provenance(protocol=DUAL_PROTOCOL, modality="icephys")["sections"] == [
        "icephys",
        f'icephys.protocols."{DUAL_PROTOCOL}"',
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[icephy]\nqc_profile = 'ipfx'\n", "unknown key 'icephy' (did you mean 'icephys'?)"),
        (
            "[icephys]\nsubthresh_min_amp = -80\n",
            "[icephys]: unknown key 'subthresh_min_amp' (did you mean 'subthresh_min_amp_pa'?)",
        ),
        ("[icephys]\nsubthresh_min_amp_pa = '-80'\n", "subthresh_min_amp_pa must be a number"),
        ("[icephys]\nsubthresh_min_amp_pa = true\n", "subthresh_min_amp_pa must be a number"),
        ("[icephys]\nramp_min_changes = 2.5\n", "ramp_min_changes must be an integer"),
        ("[icephys]\nqc_gates_cell = 1\n", "qc_gates_cell must be true or false"),
        ("[icephys]\nqc_profile = 'strict'\n", "unknown sweep QC profile 'strict'"),
        ("[icephys]\nstim_window = 'last'\n", "[icephys]"),
        (
            "[icephys.protocol.'IC steps']\nstim_window = 'ipfx'\n",
            "unknown key 'protocol' (did you mean 'protocols'?)",
        ),
        ("[icephys]\nprotocols = 3\n", "must hold one table per protocol"),
        ("[icephys.protocols]\n'IC steps' = 'ipfx'\n", 'icephys.protocols."IC steps"] must be'),
        (
            "[icephys.protocols.'IC steps']\nfilter_khz = 'ten'\n",
            '[icephys.protocols."IC steps"] filter_khz must be a number',
        ),
        ("[protocols.'IC steps']\nstim_window = 'ipfx'\n", "unknown key 'protocols'"),
        ("[mea.detectoin]\nthreshold_k = 5\n", "unknown key 'detectoin'"),
        ("[mea.detection]\npolarity = 'up'\n", "polarity must be one of"),
        ("[mea.detection]\nthreshold_k = -1\n", "threshold_k must be positive"),
        ("[mea.metrics]\nburst_min_spikes = 1\n", "bursts need at least 2 spikes"),
        ("[icephys]\nqc_profile = \n", "not valid TOML"),
    ],
)
def test_a_typo_is_a_clear_error_naming_the_file_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_parameter_set(text.encode(), label="labA/neurocyte.toml")
    assert str(err.value).startswith("labA/neurocyte.toml")
    assert message in str(err.value)


def _params_json(lake: Path, table: str, name: str) -> dict:
    """The one params_json of a file's published rows in ``table``."""
    rows = query(
        lake,
        f"SELECT DISTINCT t.params_json FROM {table} t JOIN published p USING (file_id) "
        "WHERE p.file_name = ?",
        [name],
    )
    assert len(rows) == 1, rows
    return json.loads(rows[0][0])


def _windows(lake: Path, name: str) -> list[tuple]:
    return query(
        lake,
        "SELECT s.sweep_number, s.stim_start_s, s.stim_end_s FROM icephys_sweeps s "
        "JOIN published p USING (file_id) WHERE p.file_name = ? ORDER BY 1",
        [name],
    )


def test_the_labs_set_is_applied_per_protocol_and_recorded(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    land(landing, DUAL)
    land(landing, STEPS)
    other_lab = small_abf(landing / "labB" / "WT" / "P14" / "other.abf", seed=1)
    lab_set = landing / "labA" / spec.PARAMS_FILE_NAME
    lab_set.write_text("[icephys]\nsubthresh_min_amp_pa = -80\n")
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert summary.counts() == {"published": 3}
    dual = _params_json(lake, "icephys_recordings", DUAL)
    assert dual["subthresh_min_amp_pa"] == -80.0 and dual["stim_window"] == "first_epoch"
    assert dual["parameter_set"]["file"] == "labA/neurocyte.toml"
    assert dual["parameter_set"]["sections"] == ["icephys"]
    before = _windows(lake, DUAL)

    # a protocol section for the dual protocol: the lab's files re-publish (the set is
    # part of their metadata), the other lab's file stays a duplicate
    lab_set.write_text(LAB_SET)
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert {o.file_name: o.status for o in summary.outcomes} == {
        DUAL: "published",
        STEPS: "published",
        "other.abf": "duplicate",
    }
    dual = _params_json(lake, "icephys_sweeps", DUAL)
    assert dual["stim_window"] == "ipfx" and dual["pre_noise_rms_mv_max"] == 0.5
    assert dual["subthresh_min_amp_pa"] == -80.0
    assert dual["parameter_set"]["sections"] == [
        "icephys",
        f'icephys.protocols."{DUAL_PROTOCOL}"',
    ]
    steps = _params_json(lake, "icephys_sweeps", STEPS)
    assert steps["stim_window"] == "first_epoch" and steps["subthresh_min_amp_pa"] == -80.0
    assert steps["pre_noise_rms_mv_max"] == 0.3  # the profile's, not the protocol section's
    # IPFX's window spans the fixed -100 pA pulse and the step: the values applied changed
    after = _windows(lake, DUAL)
    assert len(after) == len(before) == 17
    assert [a[2] for a in after] != [b[2] for b in before]  # the window ends later
    labb = query(
        lake,
        "SELECT DISTINCT params_json FROM icephys_sweeps WHERE lab = 'labB'",
    )
    assert "parameter_set" not in json.loads(labb[0][0])
    assert other_lab.exists()


def test_a_typo_fails_the_labs_recordings_until_fixed(tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    land(landing, STEPS)
    small_abf(landing / "labB" / "WT" / "P14" / "other.abf", seed=1)
    lab_set = landing / "labA" / spec.PARAMS_FILE_NAME
    lab_set.write_text("[icephys]\nsubthresh_min_amp = -80\n")
    summary = ingest_paths([landing], lake=str(lake), landing=str(landing))
    by = {Path(o.source_path).parts[-4]: o for o in summary.outcomes}
    assert by["labB"].status == "published"
    assert by["labA"].status == "failed"
    assert "labA/neurocyte.toml: [icephys]: unknown key 'subthresh_min_amp'" in by["labA"].reason
    assert "'subthresh_min_amp_pa'" in by["labA"].reason
    logged = query(lake, "SELECT reason FROM ingest_log WHERE lab = 'labA'")
    assert "subthresh_min_amp" in logged[0][0]
    again = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert {o.status for o in again.outcomes} == {"duplicate", "not_retried"}
    lab_set.write_text("[icephys]\nsubthresh_min_amp_pa = -80\n")  # fixed: retried
    fixed = ingest_paths([landing], lake=str(lake), landing=str(landing))
    assert sorted(o.status for o in fixed.outcomes) == ["duplicate", "published"]
    applied = "SELECT lab, json_extract(params_json, '$.subthresh_min_amp_pa')::DOUBLE "
    assert query(lake, applied + "FROM icephys_recordings ORDER BY 1") == [
        ("labA", -80.0),
        ("labB", -100.0),
    ]


def test_cli_params_option_applies_a_set_to_every_file(tmp_path: Path, capsys) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    path = land(landing, STEPS)
    run_set = tmp_path / "run.toml"
    run_set.write_text('[icephys]\nqc_profile = "ipfx"\n')
    args = ["ingest", str(path), "--lake", str(lake), "--landing", str(landing)]
    assert main([*args, "--params", str(run_set)]) == 0
    assert "[ok ] published" in capsys.readouterr().out
    doc = _params_json(lake, "icephys_recordings", STEPS)
    assert doc["qc_profile"] == "ipfx" and doc["parameter_set"]["file"] == str(run_set)
    assert doc["pre_noise_rms_mv_max"] == 0.07  # the IPFX profile's threshold, applied
    # without --params the lab's defaults apply: other metadata, so re-published
    assert main(args) == 0
    assert "[ok ] published" in capsys.readouterr().out
    assert "parameter_set" not in _params_json(lake, "icephys_recordings", STEPS)
    # a --params file that does not exist fails the file, naming it; --strict exits 1
    assert main([*args, "--params", str(tmp_path / "nope.toml"), "--strict"]) == 1
    out = capsys.readouterr().out
    assert "[ERR] failed" in out and "nope.toml" in out
    assert main([*args, "--params", str(tmp_path / "nope.toml"), "--strict"]) == 1
    assert "[---] not_retried" in capsys.readouterr().out


def test_load_finds_the_labs_file_by_folder_or_explicit_lab(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    path = land(landing, STEPS)
    assert load_parameter_set(path, landing=str(landing)) is None
    (landing / "labA" / spec.PARAMS_FILE_NAME).write_text("[mea.metrics]\nmin_rate_spm = 7\n")
    found = load_parameter_set(path, landing=str(landing))
    assert found is not None and found.label == "labA/neurocyte.toml"
    assert found.metric_params().min_rate_spm == 7.0
    elsewhere = tmp_path / "cell.abf"
    elsewhere.write_bytes(path.read_bytes())
    assert load_parameter_set(elsewhere, landing=str(landing)) is None
    by_lab = load_parameter_set(elsewhere, landing=str(landing), lab="labA")
    assert by_lab is not None and by_lab.sha256 == found.sha256


def test_mea_detection_and_metric_parameters_apply_to_a_raw_plate(tmp_path: Path) -> None:
    from transforms.synth.plate import generate_plate

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    folder = landing / "labM" / "ctl" / "DIV14"
    plate = generate_plate(folder, n_wells=12, duration_s=2.0, snr=6.0, seed=11, write_spk=False)
    lab_set = landing / "labM" / spec.PARAMS_FILE_NAME
    lab_set.write_text("[mea.detection]\nthreshold_k = 4.5\n\n[mea.metrics]\nmin_rate_spm = 12\n")
    summary = ingest_paths([plate.raw_path], lake=str(lake), landing=str(landing))
    assert summary.counts() == {"published": 1}, summary.outcomes[0].reason
    doc = json.loads(query(lake, "SELECT DISTINCT params_json FROM mea_well_metrics")[0][0])
    assert doc["detection"]["threshold_k"] == 4.5 and doc["metrics"]["min_rate_spm"] == 12.0
    assert doc["parameter_set"]["sections"] == ["mea.detection", "mea.metrics"]
    detection = json.loads(
        query(lake, "SELECT DISTINCT detection_params_json FROM mea_recordings")[0][0]
    )
    assert detection["params"]["threshold_k"] == 4.5
    (low,) = query(lake, "SELECT count(*) FROM mea_spikes")[0]

    lab_set.write_text("[mea.detection]\nthreshold_k = 9.0\n")
    summary = ingest_paths([plate.raw_path], lake=str(lake), landing=str(landing))
    assert summary.counts() == {"published": 1}
    (high,) = query(lake, "SELECT count(*) FROM mea_spikes")[0]
    assert 0 < high < low  # a higher threshold finds a subset of the crossings


def test_a_lab_parameter_set_chooses_the_detection_profile(tmp_path: Path) -> None:
    """``[mea.detection] profile = "sensitive"`` takes that profile's detector; the
    other keys of the section replace fields of it."""
    from transforms.mea.detect import SENSITIVE
    from transforms.synth.plate import generate_plate

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    folder = landing / "labM" / "ctl" / "DIV14"
    plate = generate_plate(folder, n_wells=12, duration_s=2.0, snr=6.0, seed=12, write_spk=False)
    lab_set = landing / "labM" / spec.PARAMS_FILE_NAME
    lab_set.write_text("[mea.detection]\nprofile = 'sensitive'\nthreshold_k = 5.5\n")
    summary = ingest_paths([plate.raw_path], lake=str(lake), landing=str(landing))
    assert summary.counts() == {"published": 1}, summary.outcomes[0].reason
    detection = json.loads(
        query(lake, "SELECT DISTINCT detection_params_json FROM mea_recordings")[0][0]
    )
    assert detection["profile"] == "sensitive"
    assert detection["params"]["band_low_hz"] == SENSITIVE.band_low_hz
    assert detection["params"]["threshold_k"] == 5.5
