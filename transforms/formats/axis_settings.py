"""The AxIS settings block: ``key,value`` lines AxIS writes beside a spike list's rows
and into a ``.spk`` file's BlockVectorHeaderExtension description.

Section titles are not indented and have an empty value (``Maestro Pro Settings``,
``AxIS Batch Process``, ``Spike Detector Settings``); keys under a title are indented
(3 spaces). The same keys appear in the CSV export and in the ``.spk`` text, with
formats that vary between AxIS versions and after an Excel round trip
(``8/17/2015 4:12:33 PM``, ``10/21/2019 11:21``, ``04/25/2023 16:46:02``;
``12500 Hz`` / ``12.5 kHz``; a signed ``Voltage Scale``; ``160 µs`` written ``160 ?s``
in ``.spk`` files). :func:`header_metadata` turns them into typed values.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

#: Date formats of ``Original File Time`` / ``Experiment Start Time`` (month first).
_DATE_FORMATS: Final = (
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%y %I:%M:%S %p",
    "%m/%d/%y %I:%M %p",
    "%m/%d/%y %H:%M:%S",
    "%m/%d/%y %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
)
_NUMBER_UNIT: Final = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S*)")
_INSTRUMENT_TITLE: Final = re.compile(r"^(?P<name>.+?)\s*(?:\((?P<serial>[^)]*)\))?\s+Settings$")
#: Top-level keys that are never section titles, even with an empty value.
_PLAIN_KEYS: Final = frozenset({"Investigator", "Experiment ID", "Recording Name", "Description"})
_NOT_INSTRUMENT: Final = ("spike detector", "digital filter", "stimulation", "viability")
_FREQ_SCALE: Final = {"hz": 1.0, "khz": 1e3, "mhz": 1e6}
_TIME_SCALE_MS: Final = {"ms": 1.0, "s": 1e3, "us": 1e-3, "µs": 1e-3, "?s": 1e-3, "μs": 1e-3}


def collect_settings(pairs: Iterable[tuple[str | None, str | None]]) -> dict[str, str]:
    """Settings as key -> value from raw ``(key cell, value cell)`` pairs.

    Keys are stripped of their indentation; a non-indented key starts a section. A
    key repeated in another section is stored a second time as ``"<section>/<key>"``
    (``AxIS Batch Process/AxIS Version``). Empty keys are skipped.
    """
    settings: dict[str, str] = {}
    section = ""
    for raw_key, raw_value in pairs:
        key = (raw_key or "").strip()
        if not key:
            continue
        value = " ".join((raw_value or "").split())
        if not (raw_key or "")[:1].isspace():
            section = key
        if key not in settings:
            settings[key] = value
        elif value:
            settings[f"{section}/{key}"] = value
    return settings


def sections_of(pairs: Iterable[tuple[str | None, str | None]]) -> dict[str, dict[str, str]]:
    """Settings grouped by section title (keys before any title under ``""``)."""
    out: dict[str, dict[str, str]] = {}
    section = ""
    for raw_key, raw_value in pairs:
        key = (raw_key or "").strip()
        if not key:
            continue
        value = " ".join((raw_value or "").split())
        indented = (raw_key or "")[:1].isspace()
        if not indented and not value and key not in _PLAIN_KEYS:
            section = key  # a title (the .spk text does not indent the keys under it)
            out.setdefault(section, {})
            continue
        if not indented and key in _PLAIN_KEYS:
            out.setdefault("", {}).setdefault(key, value)
            continue
        out.setdefault(section, {}).setdefault(key, value)
    return out


def parse_settings_text(text: str) -> list[tuple[str, str]]:
    """``key,value`` pairs from settings text lines (the ``.spk`` extension form)."""
    pairs = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            continue
        key, _, value = line.partition(",")
        pairs.append((key, value))
    return pairs


def parse_datetime(text: str | None) -> dt.datetime | None:
    """An AxIS date (``8/17/2015 4:12:33 PM``, ``04/25/2023 16:46:02``), or None."""
    text = " ".join((text or "").split())
    if not text:
        return None
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _number_unit(text: str | None) -> tuple[float, str] | None:
    m = _NUMBER_UNIT.match(text or "")
    if not m:
        return None
    value = float(m.group(1))
    return (value, m.group(2).lower()) if math.isfinite(value) else None


def parse_frequency_hz(text: str | None) -> float | None:
    """``12500 Hz`` / ``12.5 kHz`` in Hz, or None."""
    nu = _number_unit(text)
    if nu is None:
        return None
    value, unit = nu
    scale = _FREQ_SCALE.get(unit or "hz")
    return None if scale is None else value * scale


def parse_time_ms(text: str | None) -> float | None:
    """``0.84 ms`` / ``160 µs`` (``160 ?s`` in ``.spk`` files) / ``1 s`` in ms, or None."""
    nu = _number_unit(text)
    if nu is None:
        return None
    value, unit = nu
    scale = _TIME_SCALE_MS.get(unit or "ms")
    return None if scale is None else value * scale


def parse_float(text: str | None) -> float | None:
    """The leading number of a value (``7``, ``4 Electrodes``), or None."""
    nu = _number_unit(text)
    return None if nu is None else nu[0]


def instrument_of(titles: Iterable[str]) -> tuple[str | None, str | None]:
    """(instrument, serial) from the ``<instrument> (<serial>) Settings`` title.

    ``Maestro Edge (Maestro-299) Settings`` gives ``("Maestro Edge", "Maestro-299")``;
    an empty serial (``Maestro-``) gives None.
    """
    for title in titles:
        m = _INSTRUMENT_TITLE.match(title.strip())
        if not m or m.group("name").lower().startswith(_NOT_INSTRUMENT):
            continue
        serial = (m.group("serial") or "").strip()
        if not re.search(r"\d", serial):
            serial = ""
        return m.group("name").strip(), serial or None
    return None, None


def header_metadata(pairs: Sequence[tuple[str | None, str | None]]) -> dict[str, Any]:
    """Typed header metadata from the settings pairs (missing values are None).

    Keys: ``recorded_at`` (``Original File Time``), ``experiment_started_at``,
    ``axis_version``, ``instrument``, ``instrument_serial``, ``plate_type_text``,
    ``plate_serial``, ``sampling_rate_hz``, ``voltage_scale_uv_per_count`` (signed, as
    written), ``detector_method``, ``detector_threshold``, ``pre_spike_ms``,
    ``post_spike_ms``, ``coincidence_filter``, ``coincidence_threshold``,
    ``coincidence_window_ms``, ``low_pass_filter``, ``high_pass_filter``,
    ``recording_name``, ``investigator``, ``description``, ``analysed_section``, and
    ``sections`` (every setting, by section title).
    """
    flat = collect_settings(pairs)
    sections = sections_of(pairs)
    detector = next((v for k, v in sections.items() if k.lower().startswith("spike detector")), {})

    def get(key: str) -> str | None:
        value = flat.get(key, "").strip()
        return value or None

    scale = parse_float(get("Voltage Scale"))
    instrument, serial = instrument_of(sections)
    return {
        "recorded_at": parse_datetime(get("Original File Time")),
        "experiment_started_at": parse_datetime(get("Experiment Start Time")),
        "axis_version": get("AxIS Version"),
        "instrument": instrument,
        "instrument_serial": serial,
        "plate_type_text": get("Plate Type"),
        "plate_serial": get("Plate Serial Number"),
        "sampling_rate_hz": parse_frequency_hz(get("Sampling Frequency")),
        "voltage_scale_uv_per_count": None if scale is None else scale * 1e6,
        "detector_method": detector.get("Method") or None,
        "detector_threshold": parse_float(detector.get("Threshold")),
        "pre_spike_ms": parse_time_ms(detector.get("Pre-Spike Duration")),
        "post_spike_ms": parse_time_ms(detector.get("Post-Spike Duration")),
        "coincidence_filter": detector.get("Coincident Event Filter") or None,
        "coincidence_threshold": parse_float(detector.get("Coincidence Occurrence Threshold")),
        "coincidence_window_ms": parse_time_ms(detector.get("Coincidence Event Window")),
        "low_pass_filter": get("Digital Low Pass Filter"),
        "high_pass_filter": get("Digital High Pass Filter"),
        "recording_name": get("Recording Name") or get("Experiment ID"),
        "investigator": get("Investigator"),
        "description": get("Description"),
        "analysed_section": get("Actual File Section Run") or get("Requested File Section"),
        "sections": sections,
    }
