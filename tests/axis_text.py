"""A tiny generator of AxIS-style spike-list exports, and an independent plain parse.

The layouts follow the real exports described in research/mea/FINDINGS.md: the
settings block in columns 0-1 beside the spike rows (the header row is also the
first setting, ``Investigator``), section titles not indented and keys under them
indented by 3 spaces, a quoted ``Description`` that may span lines, and an optional
``Well Information`` footer after a blank row.
"""

from __future__ import annotations

import collections
import csv
import gzip
import io
from collections.abc import Sequence

#: Settings as AxIS 3.6.2.2 writes them (Maestro Edge, CytoView MEA 24).
AXIS3_SETTINGS: tuple[tuple[str, str], ...] = (
    ("Recording Name", "WT culture_22DIV"),
    ("Description", "WT hippocampal culture, 22DIV.\nSee notes"),
    ("", ""),
    ("Maestro Edge (Maestro-299) Settings", ""),
    ("   Original File Time", "04/25/2023 16:46:02"),
    ("   Sampling Frequency", "12.5 kHz"),
    ("   Voltage Scale", "5.484861781483107E-08 V/sample"),
    ("   Experiment Start Time", "04/25/2023 12:45:44"),
    ("   Plate Type", "CytoView MEA 24"),
    ("   Digital Low Pass Filter", "3 kHz Kaiser Window"),
    ("   Digital High Pass Filter", "200 Hz IIR"),
    ("   Plate Serial Number", "100-0914"),
    ("   AxIS Version", "3.6.2.2"),
    ("", ""),
    ("AxIS Playback", ""),
    ("   AxIS Version", "3.6.2.2"),
    ("   File Name", "WT culture(000).raw"),
    ("   Requested File Section", "0s to 10s"),
    ("   Actual File Section Run", "0s to 10s"),
    ("", ""),
    ("Spike Detector Settings", ""),
    ("   Method", "Adaptive Threshold Crossing"),
    ("   Threshold", "6"),
    ("   Pre-Spike Duration", "0.84 ms"),
    ("   Post-Spike Duration", "2.16 ms"),
    ("   Coincident Event Filter", "Default (Well)"),
    ("   Coincidence Occurrence Threshold", "4 Electrodes"),
    ("   Coincidence Event Window", "160 µs"),
)

#: Settings as AxIS 2.0.3.3 writes them (classic Maestro, no processing title).
AXIS2_SETTINGS: tuple[tuple[str, str], ...] = (
    ("Experiment ID", ""),
    ("Description", ""),
    ("", ""),
    ("Maestro Settings", ""),
    ("   Original File Time", "8/17/2015 4:12:33 PM"),
    ("   Sampling Frequency", "12500 Hz"),
    ("   Voltage Scale", "6.5E-08 V/sample"),
    ("   Experiment Start Time", "8/17/2015 4:11:57 PM"),
    ("   Plate Type", "Maestro 48-Well (Transparent)"),
    ("   AxIS Version", "2.0.3.3"),
    ("File Source", "x(000).raw"),
    ("Requested File Section", "0s to 10s"),
    ("Actual File Section Run", "0s to 10s"),
    ("", ""),
    ("Spike Detector Settings", ""),
    ("   Method", "Adaptive Threshold Crossing"),
    ("   Threshold", "7"),
)

Spike = tuple[float, str, float]


def _quote(cell: str, delimiter: str) -> str:
    if any(c in cell for c in (delimiter, '"', "\n")):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def spike_list_bytes(
    spikes: Sequence[Spike],
    *,
    settings: Sequence[tuple[str, str]] = AXIS3_SETTINGS,
    investigator: str = "Maddy",
    delimiter: str = ",",
    newline: str = "\r\n",
    bom: bool = False,
    time_header: str = "Time (s)",
    amplitude_header: str = "Amplitude(mV)",
    time_format: str = "{:.8f}",
    amplitude_format: str = "{:.3f}",
    pad_cells: int = 0,
    footer: dict[str, dict[str, str]] | None = None,
    gz: bool = False,
    replace: dict[str, str] | None = None,
) -> bytes:
    """An AxIS-style export: settings beside the spikes, optionally a footer.

    ``pad_cells`` adds empty cells to every row (Excel's padding); ``replace``
    replaces settings values by key (stripped).
    """
    replace = replace or {}
    rows: list[list[str]] = [
        ["Investigator", investigator, time_header, "Electrode", amplitude_header]
    ]
    n = max(len(spikes), len(settings))
    for i in range(n):
        key, value = settings[i] if i < len(settings) else ("", "")
        value = replace.get(key.strip(), value)
        if i < len(spikes):
            t, e, a = spikes[i]
            data = [time_format.format(t), e, amplitude_format.format(a)]
        else:
            data = ["", "", ""]
        rows.append([key, value, *data])
    width = 5 + pad_cells
    lines = [
        delimiter.join(_quote(c, delimiter) for c in r + [""] * (width - len(r))) for r in rows
    ]
    text = newline.join(lines) + newline
    if footer:
        wells = list(footer)
        labels = list(dict.fromkeys(k for info in footer.values() for k in info))
        block = [["Well Information"], ["Well", *wells]]
        block += [[label, *(footer[w].get(label, "") for w in wells)] for label in labels]
        text += delimiter * (width - 1) + newline
        text += newline.join(delimiter.join(_quote(c, delimiter) for c in r) for r in block)
        text += newline
    raw = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    return gzip.compress(raw) if gz else raw


def plain_counts(raw: bytes, delimiter: str) -> dict[str, int]:
    """Spikes per well, read with the csv module alone (independent of the reader)."""
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8-sig")
    counts: collections.Counter[str] = collections.Counter()
    for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
        if row and row[0].strip() == "Well Information":
            break
        if len(row) > 3 and row[2].strip() and row[2].strip()[0].isdigit():
            counts[row[3].split("_")[0]] += 1
    return dict(counts)


def spikes_on(
    electrodes: Sequence[str], *, n: int, duration_s: float, seed: int = 0
) -> list[Spike]:
    """``n`` time-sorted spikes spread over ``electrodes`` in ``(0, duration_s)``."""
    import random

    rng = random.Random(seed)
    times = sorted(rng.uniform(0.001, duration_s - 0.001) for _ in range(n))
    return [(t, rng.choice(list(electrodes)), rng.uniform(0.01, 0.2)) for t in times]
