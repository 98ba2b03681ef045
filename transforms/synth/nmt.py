"""Neural Metric Tool exports for tests: every layout variant, and activity metrics
computed from spikes by the NMT's definitions, independently of :mod:`transforms.mea`.

:func:`neural_metrics_bytes` writes what :mod:`transforms.formats.axis_neural_metrics`
reads: a settings block (the recording's AxIS settings, then the NMT's), a
``Well Averages`` block (wells as columns, a ``Treatment/ID`` row, category rows, metric
rows), a ``Treatment Averages`` block, and a per-electrode ``Measurement`` block, in
any combination, separated by commas, TABs or semicolons (with decimal commas).
"""

from __future__ import annotations

import collections
import gzip
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, Literal

from transforms.errors import InvalidArgument

#: The NMT's settings rows (section titles, then indented keys), as AxIS 3 writes them.
NMT_SETTINGS: Final[tuple[tuple[str, str], ...]] = (
    ("Neural Metric Tool", "Version 3.1.7"),
    ("", ""),
    ("Analysis Settings", ""),
    ("   Analysis Start", "0 s"),
    ("   Analysis Duration", "10 s"),
    ("   Minimum Spike Rate for Active Electrode", "5 spikes/minute"),
    ("", ""),
    ("Burst Settings", ""),
    ("   Burst Detector", "ISI Threshold"),
    ("   Maximum Inter-Spike Interval", "100 ms"),
    ("   Minimum Number of Spikes", "5"),
    ("", ""),
    ("Network Burst Settings", ""),
    ("   Network Burst Detector", "Envelope"),
    ("   Minimum Electrodes", "35 %"),
    ("", ""),
    ("Synchrony Settings", ""),
    ("   Synchrony Window", "20 ms"),
)

#: Category rows the NMT writes above its metrics.
CATEGORY_OF: Final[dict[str, str]] = {
    "Number of Spikes": "Activity Metrics",
    "Mean Firing Rate (Hz)": "Activity Metrics",
    "Number of Active Electrodes": "Activity Metrics",
    "Weighted Mean Firing Rate (Hz)": "Activity Metrics",
    "Number of Bursts": "Burst Metrics",
    "Burst Duration - Avg (sec)": "Burst Metrics",
    "Number of Network Bursts": "Network Burst Metrics",
    "Network Burst Frequency (Hz)": "Network Burst Metrics",
    "Network Burst Duration - Avg (sec)": "Network Burst Metrics",
    "Area Under Normalized Cross-Correlation": "Synchrony Metrics",
}

Values = Mapping[str, Mapping[str, float | None]]
Blocks = Literal["wells", "electrodes", "both"]


def activity_metrics(
    spike_electrodes: Sequence[str],
    *,
    electrodes: Sequence[str],
    duration_s: float,
    min_rate_per_min: float = 5.0,
) -> tuple[dict[str, dict[str, float | None]], dict[str, dict[str, float | None]]]:
    """The NMT's activity metrics of every well and electrode, from spike electrodes.

    Well: ``Number of Spikes``, ``Mean Firing Rate (Hz)`` (spikes / duration / electrodes
    of the well), ``Number of Active Electrodes`` (at least ``min_rate_per_min``),
    ``Weighted Mean Firing Rate (Hz)`` (mean rate of the active electrodes; None without
    one). Electrode: ``Number of Spikes``, ``Mean Firing Rate (Hz)``.

    Raises
    ------
    InvalidArgument
        If ``duration_s`` is not positive or a spike's electrode is not listed.
    """
    if not duration_s > 0:
        raise InvalidArgument(f"duration_s must be positive, got {duration_s}")
    counts = collections.Counter(spike_electrodes)
    unknown = set(counts) - set(electrodes)
    if unknown:
        raise InvalidArgument(f"spikes on unlisted electrodes: {sorted(unknown)[:5]}")
    by_well: dict[str, list[str]] = collections.defaultdict(list)
    for e in electrodes:
        by_well[e.split("_", 1)[0]].append(e)
    wells: dict[str, dict[str, float | None]] = {}
    per_electrode: dict[str, dict[str, float | None]] = {}
    for well, names in by_well.items():
        rates = [counts[e] / duration_s for e in names]
        active = [r for r in rates if r * 60.0 >= min_rate_per_min]
        total = sum(counts[e] for e in names)
        wells[well] = {
            "Number of Spikes": float(total),
            "Mean Firing Rate (Hz)": total / duration_s / len(names),
            "Number of Active Electrodes": float(len(active)),
            "Weighted Mean Firing Rate (Hz)": sum(active) / len(active) if active else None,
        }
        for e, r in zip(names, rates, strict=True):
            per_electrode[e] = {"Number of Spikes": float(counts[e]), "Mean Firing Rate (Hz)": r}
    return wells, per_electrode


def _cell(value: float | None, *, decimal_comma: bool) -> str:
    if value is None:
        return ""
    text = f"{value:.6g}" if value != int(value) or abs(value) >= 1e6 else str(int(value))
    return text.replace(".", ",") if decimal_comma else text


def _quote(cell: str, delimiter: str) -> str:
    if any(c in cell for c in (delimiter, '"', "\n")):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def neural_metrics_bytes(
    well_values: Values,
    *,
    electrode_values: Values | None = None,
    recording_settings: Sequence[tuple[str, str]] = (),
    settings: Sequence[tuple[str, str]] = NMT_SETTINGS,
    treatments: Mapping[str, str] | None = None,
    blocks: Blocks = "wells",
    delimiter: str = ",",
    newline: str = "\r\n",
    electrode_separator: str = "_",
    categories: bool = True,
    treatment_averages: bool = True,
    measurement_title: bool = False,
    bom: bool = False,
    gz: bool = False,
) -> bytes:
    """An NMT ``*_neuralMetrics.csv`` of the given values.

    Parameters
    ----------
    well_values
        Well -> metric label (``Mean Firing Rate (Hz)``) -> value (None: empty cell).
    electrode_values
        Electrode (``A1_11``) -> label -> value, for the per-electrode block.
    recording_settings, settings
        The recording's AxIS settings rows, then the NMT's (written in that order).
    treatments
        Well -> treatment for the ``Treatment/ID`` row.
    blocks
        ``wells`` (a ``Well Averages`` block), ``electrodes`` (a per-electrode
        ``Measurement`` block only) or ``both``.
    delimiter
        ``,``, TAB or ``;`` (semicolons write decimal commas, as a European Excel does).
    electrode_separator
        ``_`` (``A1_11``) or a space (``A1 11``) in electrode headers.
    categories, treatment_averages, measurement_title
        Write category rows, a ``Treatment Averages`` block, a lone ``Measurement``
        row above each block header.

    Raises
    ------
    InvalidArgument
        On an unknown delimiter or block choice, or electrode blocks without values.
    """
    if delimiter not in (",", "\t", ";"):
        raise InvalidArgument(f"delimiter must be ',', TAB or ';', got {delimiter!r}")
    if blocks not in ("wells", "electrodes", "both"):
        raise InvalidArgument(f"blocks must be wells, electrodes or both, got {blocks!r}")
    if blocks != "wells" and not electrode_values:
        raise InvalidArgument("an electrode block needs electrode_values")
    comma = delimiter == ";"
    rows: list[list[str]] = [[k, v] for k, v in (*recording_settings, ("", ""), *settings)]
    rows.append([])

    def metric_rows(columns: Sequence[str], values: Values) -> list[list[str]]:
        labels = list(dict.fromkeys(k for c in columns for k in values[c]))
        out: list[list[str]] = []
        category = None
        for label in labels:
            cat = CATEGORY_OF.get(label, "Other Metrics")
            if categories and cat != category:
                out.append([cat])
                category = cat
            out.append(
                [label, *(_cell(values[c].get(label), decimal_comma=comma) for c in columns)]
            )
        return out

    if blocks in ("wells", "both"):
        wells = list(well_values)
        if measurement_title:
            rows.append(["Measurement"])
        rows.append(["Well Averages", *wells])
        rows.append(["Treatment/ID", *((treatments or {}).get(w, "") for w in wells)])
        rows += metric_rows(wells, well_values)
        rows.append([])
        if treatment_averages and treatments:
            groups = sorted(set(treatments.values()))
            rows.append(["Treatment Averages", *groups])
            rows.append(
                [
                    "Number of Wells",
                    *(str(sum(v == g for v in treatments.values())) for g in groups),
                ]
            )
            rows.append([])
    if blocks in ("electrodes", "both") and electrode_values:
        names = list(electrode_values)
        if measurement_title:
            rows.append(["Measurement"])
        header = [n.replace("_", electrode_separator) for n in names]
        rows.append(["Measurement", *header])
        rows += metric_rows(names, electrode_values)
        rows.append([])
    text = newline.join(delimiter.join(_quote(c, delimiter) for c in r) for r in rows) + newline
    raw = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    return gzip.compress(raw) if gz else raw


def write_neural_metrics(path: str | Path, well_values: Values, **kwargs: object) -> Path:
    """Write :func:`neural_metrics_bytes` to ``path`` (``.gz`` names are gzipped)."""
    path = Path(path)
    gz = path.name.lower().endswith(".gz")
    path.write_bytes(neural_metrics_bytes(well_values, gz=gz, **kwargs))  # type: ignore[arg-type]
    return path
