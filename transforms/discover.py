"""Find landing-zone files that still need ingesting (by content hash)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transforms import lake as lakeio
from transforms import spec
from transforms.landing import scan, sha256_file


@dataclass(frozen=True)
class Candidate:
    """A file to ingest; small and JSON-serialisable (it travels as an XCom)."""

    path: str
    file_name: str
    file_id: str
    size_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_files(
    *,
    landing: str | None = None,
    lake: str | None = None,
    settle_s: float = 0.0,
    include_attempted: bool = False,
) -> list[Candidate]:
    """Settled landing files whose content has no attempt at this transform version.

    A file whose bytes were already attempted (published, quarantined or
    failed) at the current :data:`spec.TRANSFORM_VERSION` is not new, whatever
    its name: a renamed copy is the same recording. ``include_attempted``
    returns those too (for a forced re-ingest). Two identical files in one
    scan are returned once.
    """
    attempted: set[str] = set()
    if not include_attempted:
        log = lakeio.read_table(
            spec.INGEST_LOG, lake=lake, columns=["file_id", "status", "transform_version"]
        )
        if log is not None:
            for fid, status, version in zip(
                log["file_id"].to_pylist(),
                log["status"].to_pylist(),
                log["transform_version"].to_pylist(),
                strict=True,
            ):
                if version == spec.TRANSFORM_VERSION and status != "duplicate":
                    attempted.add(fid)
    out: list[Candidate] = []
    seen: set[str] = set()
    for path in scan(landing=landing, settle_s=settle_s):
        file_id = sha256_file(path)
        if file_id in attempted or file_id in seen:
            continue
        seen.add(file_id)
        out.append(Candidate(str(Path(path)), path.name, file_id, path.stat().st_size))
    return out
