"""Planning work items: which files become several well-group parts, and how parts regroup."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from transforms import spec

SPLITTABLE_KINDS = ("axion_raw", "nwb")


def plate_parts(
    file_name: str, size_bytes: int, *, split_plate_mb: float | None, max_parts: int = 16
) -> int:
    """How many well groups to stage a file in.

    1 unless the file is a continuous plate (``.raw``, NWB) larger than
    ``split_plate_mb`` MiB; then one group per ``split_plate_mb`` MiB of file,
    at most ``max_parts`` (groups are cut at filter-lane boundaries, see
    :func:`transforms.mea_rows.well_groups`, so a plate may fill fewer).
    """
    if not split_plate_mb or spec.recording_kind(file_name) not in SPLITTABLE_KINDS:
        return 1
    limit = float(split_plate_mb) * 2**20
    if size_bytes <= limit:
        return 1
    return max(1, min(int(max_parts), math.ceil(size_bytes / limit)))


def split_candidates(
    candidates: Sequence[dict[str, Any]], *, split_plate_mb: float | None, max_parts: int = 16
) -> list[dict[str, Any]]:
    """Work items: each candidate as is, or a large plate as one item per well group.

    The parts of a plate carry ``part``, ``n_parts`` and the ``ingest_id`` they
    share (a candidate needs ``file_name`` and ``size_bytes``).
    """
    out: list[dict[str, Any]] = []
    for cand in candidates:
        n = plate_parts(
            cand["file_name"],
            int(cand["size_bytes"]),
            split_plate_mb=split_plate_mb,
            max_parts=max_parts,
        )
        if n == 1:
            out.append(dict(cand))
            continue
        ingest_id = uuid.uuid4().hex
        out.extend({**cand, "part": k, "n_parts": n, "ingest_id": ingest_id} for k in range(n))
    return out


def group_parts(batches: Iterable[Sequence[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Staged outcomes regrouped for the gate: the parts of a split file in one batch.

    Batches of whole files stay as they are; each split file becomes one batch
    of its parts (whichever extract staged them), for :func:`commit_batch`.
    """
    out: list[list[dict[str, Any]]] = []
    split: dict[str, list[dict[str, Any]]] = {}
    for batch in batches:
        whole = [o for o in batch if o.get("part") is None]
        if whole:
            out.append(whole)
        for o in batch:
            if o.get("part") is not None:
                split.setdefault(o["ingest_id"], []).append(o)
    return out + list(split.values())
