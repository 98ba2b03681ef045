"""Ingest many files without a scheduler: stage in batches, gate and commit, then publish.

This is what ``neurocyte ingest`` runs; the DAG runs the same steps as tasks
(:func:`~transforms.pipeline.stage.stage_file`, :func:`~transforms.pipeline.commit.commit_batch`,
:func:`~transforms.lake.catalog.publish`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transforms.pipeline import gate
from transforms.pipeline.commit import commit_batch, commit_staged
from transforms.pipeline.outcome import Outcome
from transforms.pipeline.plan import plate_parts
from transforms.pipeline.stage import stage_file


def ingest_file(path: str | Path, *, lake: str | None = None, **kwargs: Any) -> Outcome:
    """Stage and commit one file (no publishing)."""
    return commit_staged(stage_file(path, lake=lake, **kwargs), lake=lake)


@dataclass(frozen=True)
class IngestSummary:
    outcomes: tuple[Outcome, ...]
    catalog: str
    docs: str

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out


#: Kinds (by name) whose files may be split into well groups: continuous plates, where
#: spike detection dominates the cost (an icephys NWB so split is staged by its part 0).


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, directories expanded to the recordings below them.

    Symbolic links are never followed: a link (given, or found in a folder) is
    returned as itself, and staging refuses it and logs it. Folder listing is
    bounded (:func:`transforms.untrusted.walk`).
    """
    from transforms import spec
    from transforms.untrusted import walk

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and not p.is_symlink():
            listing = walk(p)
            found = [e.path for e in listing.files if spec.is_recording_name(e.path.name)]
            out.extend(sorted(found + [e.path for e in listing.links]))
        else:
            out.append(p)
    return out


def ingest_paths(
    paths: Sequence[str | Path],
    *,
    lake: str | None = None,
    landing: str | None = None,
    lab: str | None = None,
    condition: str | None = None,
    timepoint: str | None = None,
    plate_map: str | Path | None = None,
    params_file: str | None = None,
    force: bool = False,
    publish: bool = True,
    batch_size: int = 50,
    on_outcome: Callable[[Outcome], None] | None = None,
    split_plate_mb: float | None = None,
    max_parts: int = 16,
) -> IngestSummary:
    """Ingest many files in batches, then publish the catalog and QC docs once.

    Each batch is staged file by file, validated together and committed with
    one Delta commit per table (see :func:`commit_batch`). With
    ``split_plate_mb``, a larger continuous plate is staged well group by well
    group (:func:`plate_parts`), as the DAG's workers do, and merged at commit.
    ``params_file`` is a parameter set for every file instead of each lab's
    ``neurocyte.toml`` (:mod:`transforms.pipeline.paramset`).
    """
    outcomes: list[Outcome] = []
    files = expand_paths(paths)
    if files:
        gate.warm()  # the QC worker imports GX on the other core while files decode
    common: dict[str, Any] = {
        "lake": lake,
        "landing": landing,
        "lab": lab,
        "condition": condition,
        "timepoint": timepoint,
        "plate_map": plate_map,
        "params_file": params_file,
        "force": force,
    }
    for start in range(0, len(files), batch_size):
        staged: list[Outcome] = []
        for path in files[start : start + batch_size]:
            size = path.stat().st_size if path.is_file() and not path.is_symlink() else 0
            n = plate_parts(path.name, size, split_plate_mb=split_plate_mb, max_parts=max_parts)
            if n == 1:
                staged.append(stage_file(path, **common))
                continue
            ingest_id = uuid.uuid4().hex
            staged.extend(
                stage_file(path, **common, part=k, n_parts=n, ingest_id=ingest_id) for k in range(n)
            )
        for outcome in commit_batch(staged, lake=lake):
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    catalog = docs = ""
    if publish:
        from transforms.lake.catalog import publish as publish_catalog

        catalog = str(publish_catalog(lake=lake).catalog)
        docs = str(gate.build_data_docs(lake=lake))
    return IngestSummary(outcomes=tuple(outcomes), catalog=catalog, docs=docs)
