"""The landing zone: where files arrive, and what each one's metadata is.

Files arrive as ``<landing>/<lab>/<condition>/<timepoint>/<file>``; an optional
sidecar ``<file>.meta.json`` adds or overrides metadata. Explicit values
(CLI flags, DAG params) override both.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from transforms import spec
from transforms.errors import SpecError
from transforms.untrusted import escape, excerpt, read_nofollow, walk

#: Largest sidecar read (bytes): a few metadata values.
SIDECAR_MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class Target:
    """Where a file's rows go, and the free-text metadata that rides along.

    Partition values are validated when set; a plate recording may leave
    ``condition``/``timepoint`` to its plate map (per well).
    """

    lab: str
    condition: str | None = None
    timepoint: str | None = None
    cell_id: str | None = None
    subject: str | None = None
    notes: str | None = None
    source: str = ""
    species: str | None = None
    sex: str | None = None
    age: str | None = None
    genotype: str | None = None
    strain: str | None = None
    date_of_birth: str | None = None

    @property
    def partition(self) -> spec.Partition:
        """The file-level partition; :class:`SpecError` if incomplete."""
        if not self.condition or not self.timepoint:
            missing = [c for c in ("condition", "timepoint") if not getattr(self, c)]
            raise SpecError(
                f"{self.source}: no {', '.join(missing)}: place it under "
                "<landing>/<lab>/<condition>/<timepoint>/, add a sidecar, or pass them explicitly"
            )
        return spec.Partition(self.lab, self.condition, self.timepoint)


def read_sidecar(path: Path) -> dict[str, str]:
    """The ``<file>.meta.json`` beside ``path`` (empty if there is none)."""
    sidecar = path.with_name(path.name + spec.SIDECAR_SUFFIX)
    if not os.path.lexists(sidecar):
        return {}
    # read without following a link (a link is refused), and never more than the cap
    raw = read_nofollow(sidecar, max_bytes=SIDECAR_MAX_BYTES)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"{escape(sidecar.name)}: not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SpecError(f"{sidecar.name}: must hold a JSON object")
    unknown = set(doc) - spec.SIDECAR_KEYS
    if unknown:
        shown = ", ".join(excerpt(k, limit=60) for k in sorted(unknown)[:10])
        more = f", …(+{len(unknown) - 10} more)" if len(unknown) > 10 else ""
        raise SpecError(
            f"{escape(sidecar.name)}: unknown keys [{shown}{more}]; "
            f"allowed: {sorted(spec.SIDECAR_KEYS)}"
        )
    out: dict[str, str] = {}
    for key, value in doc.items():
        if value is None:
            continue
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise SpecError(f"{sidecar.name}: {key} must be a string, got {type(value).__name__}")
        text = str(value)
        if len(text) > 4096 or "\x00" in text:
            raise SpecError(f"{sidecar.name}: {key} is too long or holds a NUL byte")
        out[key] = text
    if "subject_id" in out:
        alias = out.pop("subject_id")
        if out.get("subject", alias) != alias:
            raise SpecError(
                f"{escape(sidecar.name)}: subject {excerpt(out['subject'])} and subject_id "
                f"{excerpt(alias)} differ; "
                "give one of them"
            )
        out["subject"] = alias
    return out


def _from_path(path: Path, landing: str | None) -> dict[str, str]:
    root = spec.landing_root(landing)
    if spec.is_remote(root):
        return {}
    absolute = Path(os.path.abspath(path))
    try:  # links below the root are refused before this (untrusted.check_inside)
        rel = absolute.relative_to(Path(root))
    except ValueError:  # named through a linked prefix of the (resolved) root
        try:
            real_parent = Path(os.path.realpath(absolute.parent))
            rel = (real_parent / absolute.name).relative_to(Path(root))
        except ValueError:
            return {}
    if len(rel.parts) != 4:
        return {}
    lab, condition, timepoint, _ = rel.parts
    return {"lab": lab, "condition": condition, "timepoint": timepoint}


def resolve_target(
    path: str | Path,
    *,
    landing: str | None = None,
    lab: str | None = None,
    condition: str | None = None,
    timepoint: str | None = None,
    require_all: bool = True,
) -> Target:
    """Partition and metadata of a file: landing path < sidecar < explicit values.

    With ``require_all=False`` only ``lab`` is required (plate recordings take
    condition and timepoint per well from their plate map).

    Raises
    ------
    SpecError
        If a partition value is missing or invalid; the message names the
        file and the value.
    """
    path = Path(path)
    values = _from_path(path, landing)
    values.update(read_sidecar(path))
    explicit = {"lab": lab, "condition": condition, "timepoint": timepoint}
    values.update({k: v for k, v in explicit.items() if v is not None})
    needed = spec.PARTITION_COLUMNS if require_all else ("lab",)
    missing = [c for c in needed if not values.get(c)]
    if missing:
        raise SpecError(
            f"{path.name}: no {', '.join(missing)}: place it under "
            "<landing>/<lab>/<condition>/<timepoint>/, add a sidecar, or pass them explicitly"
        )
    checked = {
        c: spec.validate_partition_value(c, values[c], source=path.name)
        for c in spec.PARTITION_COLUMNS
        if values.get(c)
    }
    return Target(
        lab=checked["lab"],
        condition=checked.get("condition"),
        timepoint=checked.get("timepoint"),
        cell_id=values.get("cell_id"),
        subject=values.get("subject"),
        notes=values.get("notes"),
        source=path.name,
        **{k: values.get(k) for k in spec.SUBJECT_FIELDS},
    )


def is_candidate(path: Path) -> bool:
    """A recording file (by suffix), not a sidecar, hidden or partial upload, not a link."""
    name = path.name
    return not path.is_symlink() and path.is_file() and spec.is_recording_name(name)


def scan(
    *, landing: str | None = None, settle_s: float = 0.0, now: float | None = None
) -> list[Path]:
    """Recording files and symbolic links under the landing zone, oldest first.

    Files modified less than ``settle_s`` seconds ago are left for the next
    scan: they may still be uploading. Links are listed, never followed (staging
    refuses them, and logs them as such); the listing is bounded
    (:func:`transforms.untrusted.walk`).
    """
    root = Path(spec.landing_root(landing))
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    listing = walk(root)
    entries = [e for e in listing.files if spec.is_recording_name(e.path.name)] + listing.links
    found = [e for e in entries if now - e.mtime >= settle_s]
    return [e.path for e in sorted(found, key=lambda e: (e.mtime, str(e.path)))]
