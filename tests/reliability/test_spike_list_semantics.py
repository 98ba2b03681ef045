"""Spike-list semantics: repeated rows, absurd values, row caps, partial plate maps.

Each case goes through the real reader, and where it matters the real ingest
(GX gate, Delta tables, catalog), on files written like AxIS exports.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow.compute as pc
import pytest

from tests.axis_text import spike_list_bytes, spikes_on
from tests.helpers import query
from transforms.errors import DecodeError
from transforms.formats.axis_spikelist import DUPLICATE_SPIKES, read_spike_list
from transforms.pipeline import ingest_paths
from transforms.pipeline.decode_mea import ENV_PARTIAL_PLATE_MAP, PLATE_MAP_MISSING_WELL

ELECTRODES = [f"A1_{c}{r}" for c in (1, 2) for r in (1, 2)] + ["B2_11", "B2_22"]


def _spikes(n: int = 400) -> list[tuple[float, str, float]]:
    return spikes_on(ELECTRODES, n=n, duration_s=10.0, seed=3)


def _ingest(tmp_path: Path, path: Path, **kw):  # type: ignore[no-untyped-def]
    lake = tmp_path / "lake"
    summary = ingest_paths(
        [path], lake=str(lake), lab="labX", condition="ctl", timepoint="DIV21", **kw
    )
    return lake, summary.outcomes[0]


def test_repeated_rows_are_kept_once_and_counted(tmp_path: Path) -> None:
    spikes = _spikes()
    doubled = sorted([*spikes, *spikes[:150]], key=lambda s: s[0])  # 150 rows exported twice
    clean_path, dup_path = tmp_path / "clean_spike_list.csv", tmp_path / "dup_spike_list.csv"
    clean_path.write_bytes(spike_list_bytes(spikes))
    dup_path.write_bytes(spike_list_bytes(doubled))
    clean, dup = read_spike_list(clean_path), read_spike_list(dup_path)
    assert dup.spikes.num_rows == clean.spikes.num_rows == len(spikes)
    assert dup.n_duplicates == 150 and f"{DUPLICATE_SPIKES}:150" in dup.qc_flags
    assert clean.n_duplicates == 0 and not any(DUPLICATE_SPIKES in f for f in clean.qc_flags)
    assert dup.spikes.equals(clean.spikes)
    # a spike on another electrode at the same time, or with another amplitude, is no repeat
    t, e, a = spikes[10]
    near = sorted([*spikes, (t, "B2_11" if e != "B2_11" else "A1_11", a), (t, e, a + 0.01)])
    (tmp_path / "near_spike_list.csv").write_bytes(spike_list_bytes(near))
    assert read_spike_list(tmp_path / "near_spike_list.csv").n_duplicates == 0

    lake_c, oc = _ingest(tmp_path / "c", clean_path)
    lake_d, od = _ingest(tmp_path / "d", dup_path)
    assert oc.status == od.status == "published", (oc.reason, od.reason)
    sql = "SELECT well, mean_firing_rate_hz FROM mea_well_metrics ORDER BY well"
    assert query(lake_d, sql) == query(lake_c, sql)  # rates were doubled before the fix
    flags = query(lake_d, "SELECT DISTINCT reader_qc_flags FROM mea_recordings")
    assert flags == [(f"{DUPLICATE_SPIKES}:150",)]


@pytest.mark.parametrize(
    ("amplitude", "why"),
    [
        ("9" * 5_000_000, "is inf"),  # 5 million digits: stored as inf before the fix
        ("1e999", "is inf"),
        ("-42.5", "above 10 mV"),  # -42.5 mV: no extracellular spike is that large
    ],
)
def test_absurd_amplitudes_fail_naming_file_and_line(
    tmp_path: Path, amplitude: str, why: str
) -> None:
    lines = spike_list_bytes(_spikes(400)).decode().split("\r\n")
    row = 300  # a spike row past the settings block (the fast reader's part)
    cells = lines[row].split(",")
    cells[4] = amplitude
    lines[row] = ",".join(cells)
    line = sum(1 + x.count("\n") for x in lines[:row]) + 1  # the Description spans 2 lines
    path = tmp_path / "amp_spike_list.csv"
    path.write_text("\r\n".join(lines))
    with pytest.raises(DecodeError) as err:
        read_spike_list(path)
    text = str(err.value)
    assert str(path) in text and f"line {line}:" in text and why in text, text
    assert len(text) < 600  # the 5-million-digit cell is not echoed
    lake, o = _ingest(tmp_path, path)
    assert o.status == "failed" and f"line {line}:" in o.reason
    (rows,) = query(lake, "SELECT count(*) FROM mea_spikes")
    assert rows == (0,)


def test_non_finite_spike_time_fails(tmp_path: Path) -> None:
    lines = spike_list_bytes(_spikes(50)).decode().split("\r\n")  # line 32: Description is 2
    cells = lines[30].split(",")
    cells[2] = "1e999"
    lines[30] = ",".join(cells)
    path = tmp_path / "t_spike_list.csv"
    path.write_text("\r\n".join(lines))
    with pytest.raises(DecodeError, match=r"line 32: spike time '1e999' is inf"):
        read_spike_list(path)


def test_rows_beyond_the_cap_fail_as_a_resource_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big_spike_list.csv.gz"
    path.write_bytes(spike_list_bytes(_spikes(3000), gz=True))
    monkeypatch.setenv("NEUROCYTE_MAX_SPIKE_ROWS", "2000")
    _, o = _ingest(tmp_path, path)
    assert o.status == "failed", o
    assert o.reason.startswith("resource: ") and "more than 2000 spike rows" in o.reason
    assert "NEUROCYTE_MAX_SPIKE_ROWS" in o.reason
    monkeypatch.delenv("NEUROCYTE_MAX_SPIKE_ROWS")
    assert read_spike_list(path).spikes.num_rows == 3000


def _plate_with_partial_map(tmp_path: Path) -> tuple[Path, Path]:
    path = tmp_path / "p_spike_list.csv"
    path.write_bytes(spike_list_bytes(_spikes()))  # names wells A1 and B2
    plate_map = tmp_path / "p.platemap.csv.gz"
    plate_map.write_bytes(gzip.compress(b"well,condition\nA1,CAP\nC4,DMSO\n"))  # no B2
    return path, plate_map


def test_partial_plate_map_flags_unlisted_wells_by_default(tmp_path: Path) -> None:
    path, plate_map = _plate_with_partial_map(tmp_path)
    lake, o = _ingest(tmp_path, path, plate_map=plate_map)
    assert o.status == "published", o.reason
    rows = query(lake, "SELECT well, condition, reader_qc_flags FROM mea_recordings ORDER BY 1")
    assert rows == [("A1", "CAP", ""), ("B2", "ctl", PLATE_MAP_MISSING_WELL), ("C4", "DMSO", "")]


def test_partial_plate_map_is_refused_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, plate_map = _plate_with_partial_map(tmp_path)
    monkeypatch.setenv(ENV_PARTIAL_PLATE_MAP, "refuse")
    lake, o = _ingest(tmp_path, path, plate_map=plate_map)
    assert o.status == "failed"
    assert "does not list 1 well(s)" in o.reason and "(B2)" in o.reason, o.reason
    assert query(lake, "SELECT count(*) FROM mea_recordings") == [(0,)]
    monkeypatch.setenv(ENV_PARTIAL_PLATE_MAP, "sometimes")
    _, o = _ingest(tmp_path / "x", path, plate_map=plate_map)
    assert o.status == "failed" and "partial plate map mode" in o.reason


def test_streamed_blocks_read_like_one_block(tmp_path: Path) -> None:
    """A file read in many small blocks (CRLF split across them, footer at the end)."""
    footer = {w: {"Active": "True", "Treatment": "CAP"} for w in ("A1", "B2")}
    path = tmp_path / "s_spike_list.csv"
    path.write_bytes(spike_list_bytes(_spikes(3000), footer=footer))
    whole = read_spike_list(path)
    for block in (1 << 16, 65_537):
        small = read_spike_list(path, block_bytes=block)
        assert small.spikes.equals(whole.spikes) and small.well_info == whole.well_info
        assert small.settings == whole.settings
    assert whole.spikes.num_rows == 3000
    assert int(pc.count_distinct(whole.spikes["well"]).as_py()) == 2
