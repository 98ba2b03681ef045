"""Parameter sets per lab and protocol: ``neurocyte.toml``.

A lab's landing folder may hold a parameter set, ``<landing>/<lab>/neurocyte.toml``, that
applies to every recording landed under it; ``neurocyte ingest --params FILE`` (or the
ingest DAG's ``params_file``) names one for a run instead. It overrides the defaults of
:class:`~transforms.icephys.extract.IcephysParams` (patch clamp),
:class:`~transforms.mea.detect.DetectionParams` (spike detection on raw MEA data) and
:class:`~transforms.mea.metrics.MetricParams` (MEA metrics)::

    [icephys]                      # every patch-clamp recording of the lab
    qc_profile = "ipfx"

    # recordings whose protocol (icephys_recordings.protocol) is exactly this name;
    # its keys override [icephys]
    [icephys.protocols."0113 steps dual -100 to 300 step 25"]
    stim_window = "ipfx"
    subthresh_min_amp_pa = -80.0

    [mea.detection]                # raw MEA data (.raw, NWB) only
    threshold_k = 5.5

    [mea.metrics]
    min_rate_spm = 6

Every key is a field of those classes, with its type (a number where the field is a
number, ``true``/``false`` for a flag, a string for a name); an unknown key or section, a
value of the wrong type or out of range is a :class:`~transforms.errors.ConfigError`
naming the file and the key, never a silent default, and every recording the file applies
to fails with it. The whole file is checked, whichever protocol a recording has. The values
applied are those in each row's ``params_json`` (with ``parameter_set``: the file, its
SHA-256 and the sections used); the file's bytes are part of the recording's metadata
digest (:mod:`transforms.pipeline.identity`), so editing it re-publishes the lab's files.
"""

from __future__ import annotations

import difflib
import hashlib
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from transforms import spec
from transforms.errors import ConfigError, InvalidArgument, NeurocyteError
from transforms.icephys.extract import IcephysParams
from transforms.lake import storage
from transforms.mea.detect import DetectionParams
from transforms.mea.metrics import MetricParams

#: The reserved key of ``[icephys]`` holding the per-protocol sections.
PROTOCOLS_KEY = "protocols"
#: Section name -> the parameter class its keys are fields of.
SECTIONS: dict[str, type] = {
    "icephys": IcephysParams,
    "mea.detection": DetectionParams,
    "mea.metrics": MetricParams,
}


@dataclass(frozen=True)
class ParameterSet:
    """A validated parameter set: overrides per section and per icephys protocol.

    ``label`` names the file in messages and provenance (``<lab>/neurocyte.toml`` for a
    lab's file, else the path given); ``sha256`` is the SHA-256 of its bytes.
    """

    label: str
    sha256: str
    icephys: Mapping[str, Any] = field(default_factory=dict)
    protocols: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    detection: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def icephys_params(self, protocol: str | None) -> IcephysParams:
        """The patch-clamp parameters of a recording of ``protocol`` (None: no name)."""
        overrides = {**self.icephys, **self.protocols.get(protocol or "", {})}
        return replace(IcephysParams(), **overrides)

    def detection_params(self) -> DetectionParams:
        return replace(DetectionParams(), **self.detection)

    def metric_params(self) -> MetricParams:
        return replace(MetricParams(), **self.metrics)

    def provenance(self, *, protocol: str | None = None, modality: str) -> dict[str, Any]:
        """What ``params_json`` records of the set: the file, its hash, the sections used."""
        if modality == "icephys":
            used = ["icephys"] if self.icephys else []
            if protocol and protocol in self.protocols:
                used.append(f'icephys.protocols."{protocol}"')
        else:
            used = [
                s
                for s, v in (("mea.detection", self.detection), ("mea.metrics", self.metrics))
                if v
            ]
        return {"file": self.label, "sha256": self.sha256, "sections": used}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, str(tp)
    )


def _checked(value: Any, tp: Any, *, where: str) -> Any:
    """``value`` as the field type ``tp`` wants it, or :class:`ConfigError`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) == 1:  # ``float | None``: TOML has no null, so the value type
            return _checked(value, options[0], where=where)
    ok = False
    if origin is Literal:
        ok = value in typing.get_args(tp)
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}")
    return value


def _unknown(key: str, allowed: list[str], *, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}; allowed: {', '.join(sorted(allowed))}")


def _section(
    doc: Any, cls: type, *, label: str, name: str, reserved: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The overrides of one section, each key a field of ``cls`` with its type."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{label}: [{name}] must be a table of parameters, got {doc!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key in reserved:
            continue
        if key not in hints or key not in names:
            raise _unknown(key, [*names, *reserved], where=f"{label}: [{name}]")
        out[key] = _checked(value, hints[key], where=f"{label}: [{name}] {key}")
    try:  # the class's own checks (ranges, known names) on the values as they combine
        replace(cls(), **out)
    except (InvalidArgument, NeurocyteError, TypeError) as exc:
        raise ConfigError(f"{label}: [{name}]: {exc}") from exc
    return out


def parse_parameter_set(data: bytes, *, label: str) -> ParameterSet:
    """Validate a parameter set's bytes (TOML).

    Raises
    ------
    ConfigError
        Not UTF-8 TOML, an unknown section or key, a value of the wrong type or out of
        range; the message names ``label`` and the key.
    """
    digest = hashlib.sha256(data).hexdigest()
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{label}: not valid TOML: {exc}") from exc
    tops = ["icephys", "mea"]
    for key in doc:
        if key not in tops:
            raise _unknown(key, tops, where=label)
    icephys_doc = doc.get("icephys", {})
    icephys = _section(
        icephys_doc, IcephysParams, label=label, name="icephys", reserved=(PROTOCOLS_KEY,)
    )
    protocols: dict[str, dict[str, Any]] = {}
    listed = icephys_doc.get(PROTOCOLS_KEY, {})
    if not isinstance(listed, dict):
        raise ConfigError(
            f"{label}: [icephys.{PROTOCOLS_KEY}] must hold one table per protocol "
            f'([icephys.{PROTOCOLS_KEY}."<protocol name>"]), got {listed!r}'
        )
    for protocol, overrides in listed.items():
        name = f'icephys.{PROTOCOLS_KEY}."{protocol}"'
        mine = _section(overrides, IcephysParams, label=label, name=name)
        _section({**icephys, **mine}, IcephysParams, label=label, name=name)  # combined
        protocols[protocol] = mine
    mea_doc = doc.get("mea", {})
    if not isinstance(mea_doc, dict):
        raise ConfigError(f"{label}: [mea] must hold [mea.detection] and/or [mea.metrics]")
    for key in mea_doc:
        if key not in ("detection", "metrics"):
            raise _unknown(key, ["detection", "metrics"], where=f"{label}: [mea]")
    detection = _section(
        mea_doc.get("detection", {}), DetectionParams, label=label, name="mea.detection"
    )
    metrics = _section(mea_doc.get("metrics", {}), MetricParams, label=label, name="mea.metrics")
    return ParameterSet(label, digest, icephys, protocols, detection, metrics)


def landing_parts(path: str | Path, landing: str | None) -> tuple[str, ...] | None:
    """The folders and name of a landing file below the landing root (None if outside)."""
    root = spec.landing_root(landing)
    text = str(path)
    if storage.is_s3(root) or storage.is_s3(text):
        prefix = root.rstrip("/") + "/"
        if not text.startswith(prefix):
            return None
        rel = text[len(prefix) :]
    else:
        try:
            rel = Path(text).resolve().relative_to(Path(root)).as_posix()
        except ValueError:
            return None
    parts = tuple(p for p in rel.split("/") if p)
    return parts or None


def parameter_file_for(
    path: str | Path,
    *,
    landing: str | None = None,
    lab: str | None = None,
    params_file: str | None = None,
    exists: Callable[[str], bool] = storage.exists,
) -> tuple[str, str] | None:
    """``(uri, label)`` of the parameter set that applies to a landing file, or None.

    ``params_file`` when given; else ``<landing>/<lab>/neurocyte.toml`` when it exists
    (``exists``: a planner may answer from its listing), the lab being ``lab`` (an
    explicit value) or the landing folder the file lies under.
    """
    if params_file:
        return str(params_file), str(params_file)
    if not lab:
        parts = landing_parts(path, landing)
        lab = parts[0] if parts and len(parts) >= 2 else None
    if not lab:
        return None
    try:
        spec.validate_partition_value("lab", lab, source=Path(str(path)).name)
    except NeurocyteError:
        return None  # no such folder can exist; the partition check fails the file
    uri = storage.join(spec.landing_root(landing), lab, spec.PARAMS_FILE_NAME)
    return (uri, f"{lab}/{spec.PARAMS_FILE_NAME}") if exists(uri) else None


def load_parameter_set(
    path: str | Path,
    *,
    landing: str | None = None,
    lab: str | None = None,
    params_file: str | None = None,
) -> ParameterSet | None:
    """The validated parameter set that applies to a landing file (None: defaults).

    Raises
    ------
    ConfigError
        The file named by ``params_file`` does not exist, or the set is malformed.
    """
    found = parameter_file_for(path, landing=landing, lab=lab, params_file=params_file)
    if found is None:
        return None
    uri, label = found
    try:
        data = storage.read_bytes(uri)
    except (OSError, FileNotFoundError) as exc:
        raise ConfigError(f"{label}: cannot read the parameter set: {exc}") from exc
    return parse_parameter_set(data, label=label)
