"""MEA plates end to end: spike lists, .raw/.spk/NWB plates and plate maps -> lake -> views."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import MEA_DIR
from tests.helpers import query
from transforms.pipeline import ingest_paths

SPIKE_LIST = MEA_DIR / "exampleRecording_1012016_plate1_DIV3_spike_list.csv.gz"
EXP_LOG = MEA_DIR / "exampleRecording_1012016_plate1_expLog.csv"


def _treatments() -> dict[str, str]:
    """Well -> treatment read independently from the CR-terminated experiment log."""
    text = EXP_LOG.read_bytes().decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    rows = list(csv.DictReader(text.splitlines()))
    return {r["Well"]: (r["Treatment"].strip() or "unassigned") for r in rows}


def test_spike_list_with_plate_map_beside_it(tmp_path: Path) -> None:
    folder = tmp_path / "landing" / "labM" / "untreated" / "DIV3"
    folder.mkdir(parents=True)
    shutil.copyfile(SPIKE_LIST, folder / SPIKE_LIST.name)
    shutil.copyfile(EXP_LOG, folder / EXP_LOG.name)  # picked up beside the recording
    lake = tmp_path / "lake"
    summary = ingest_paths(
        [tmp_path / "landing"], lake=str(lake), landing=str(tmp_path / "landing")
    )
    assert summary.counts() == {"published": 1}

    wells = dict(query(lake, "SELECT well, condition FROM mea_well_metrics"))
    treatments = _treatments()
    assert len(wells) == 48
    assert wells == {w: treatments[w] for w in wells}
    by_cond = dict(
        query(
            lake,
            "SELECT condition, count(*) FROM mea_well_metrics WHERE timepoint = 'DIV3' "
            "GROUP BY condition",
        )
    )
    assert by_cond == {"treatX": 8, "treatY": 8, "untreated": 8, "unassigned": 24}

    # the truncated export is flagged and rates use the covered duration
    rec = query(
        lake, "SELECT DISTINCT duration_s, declared_duration_s, reader_qc_flags FROM mea_recordings"
    )
    assert len(rec) == 1
    duration, declared, flags = rec[0]
    assert declared == pytest.approx(1082.0) and "truncated" in flags
    with gzip.open(SPIKE_LIST, "rt") as fh:
        times = [float(r[2]) for r in csv.reader(fh) if len(r) > 4 and _is_float(r[2])]
    assert duration == pytest.approx(max(times), abs=1e-6)
    (n_spikes,) = query(lake, "SELECT count(*) FROM mea_spikes")[0]
    assert n_spikes == len(times)
    # well-level rate = electrode spikes / duration, averaged over the well's electrodes
    (mfr, count) = query(
        lake, "SELECT mean_firing_rate_hz, spike_count FROM mea_well_metrics WHERE well = 'D2'"
    )[0]
    assert mfr == pytest.approx(count / duration / 16)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_plate_map_with_wells_the_plate_lacks_fails_clearly(tmp_path: Path) -> None:
    bad_map = tmp_path / "map.csv"
    bad_map.write_text("well,condition,timepoint\nA1,WT,DIV7\nH12,KO,DIV7\n")
    summary = ingest_paths([SPIKE_LIST], lake=str(tmp_path / "lake"), lab="labM", plate_map=bad_map)
    (o,) = summary.outcomes
    assert o.status == "failed" and "H12" in o.reason


def test_spike_list_missing_columns_fails_and_others_publish(tmp_path: Path) -> None:
    bad = tmp_path / "broken_spike_list.csv"
    bad.write_text("Investigator,,Time (s),Electrode\nx,,0.1,A1_11\n")
    summary = ingest_paths(
        [bad, SPIKE_LIST],
        lake=str(tmp_path / "lake"),
        lab="labM",
        condition="ctl",
        timepoint="DIV3",
        plate_map=None,
    )
    status = {o.file_name: o for o in summary.outcomes}
    assert status[bad.name].status == "failed" and "Amplitude" in status[bad.name].reason
    assert status[SPIKE_LIST.name].status == "published"


@pytest.fixture(scope="module")
def synth_plate(tmp_path_factory: pytest.TempPathFactory):
    from transforms.synth.plate import generate_plate

    out = tmp_path_factory.mktemp("plate")
    return generate_plate(out, n_wells=24, duration_s=20.0, snr=8.0, seed=3, write_nwb=True)


@pytest.mark.parametrize("kind", ["raw", "spk", "nwb"])
def test_synthetic_plate_recovers_ground_truth(tmp_path: Path, synth_plate, kind: str) -> None:
    path = {"raw": synth_plate.raw_path, "spk": synth_plate.spk_path, "nwb": synth_plate.nwb_path}[
        kind
    ]
    lake = tmp_path / "lake"
    summary = ingest_paths(
        [path],
        lake=str(lake),
        lab="synth",
        timepoint="DIV14",
        plate_map=synth_plate.plate_map_path,
    )
    assert summary.counts() == {"published": 1}, summary.outcomes[0].reason
    conditions = dict(query(lake, "SELECT well, condition FROM mea_recordings"))
    assert conditions == dict(synth_plate.condition)
    truth = synth_plate.spike_times_s
    found: dict[str, list[float]] = {}
    for electrode, t in query(lake, "SELECT electrode, time_s FROM mea_spikes"):
        found.setdefault(electrode, []).append(t)
    n_true = sum(len(v) for v in truth.values())
    hits = 0
    for electrode, times in truth.items():
        got = np.sort(np.asarray(found.get(electrode, [])))
        if got.size and times.size:
            idx = np.clip(np.searchsorted(got, times), 1, got.size - 1)
            nearest = np.minimum(np.abs(got[idx] - times), np.abs(got[idx - 1] - times))
            hits += int(np.sum(nearest <= 0.0005))
    n_found = sum(len(v) for v in found.values())
    assert hits / n_true >= 0.95 and hits / n_found >= 0.95
    # every well has a metrics row, partitioned by its own condition
    rows = query(lake, "SELECT count(*), count(DISTINCT condition) FROM mea_well_metrics")
    assert rows == [(24, len(set(synth_plate.condition.values())))]


def test_truncated_raw_fails_clearly(tmp_path: Path, synth_plate) -> None:
    cut = tmp_path / "cut.raw"
    data = synth_plate.raw_path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    summary = ingest_paths(
        [cut],
        lake=str(tmp_path / "lake"),
        lab="synth",
        timepoint="DIV14",
        plate_map=synth_plate.plate_map_path,
    )
    (o,) = summary.outcomes
    assert o.status == "failed" and "cut.raw" in o.reason and "past the end of the file" in o.reason


def test_convenience_views(tmp_path: Path) -> None:
    from tests.helpers import land

    lake = tmp_path / "lake"
    land(tmp_path / "landing", "File_axon_5.abf", condition="KO", timepoint="P21")
    ingest_paths([tmp_path / "landing"], lake=str(lake), landing=str(tmp_path / "landing"))
    ingest_paths([SPIKE_LIST], lake=str(lake), lab="labM", plate_map=EXP_LOG)
    cells = query(lake, "SELECT condition, timepoint, cell_id, rheobase_pa FROM cells")
    assert cells == [("KO", "P21", "File_axon_5", 200.0)]  # IPFX reference rheobase
    by_cond = dict(query(lake, "SELECT condition, n_wells FROM well_metrics_by_condition"))
    assert by_cond == {"treatX": 8, "treatY": 8, "untreated": 8, "unassigned": 24}
    qc_rows = query(lake, "SELECT lab, condition, status, files FROM qc_summary")
    assert ("labA", "KO", "published", 1) in qc_rows
    assert ("labM", "per well", "published", 1) in qc_rows
