"""Resumable, streamed uploads into a local landing zone.

An upload is a session (:func:`start`) naming the file, its size, its partition
and its sidecar fields; its bytes arrive in chunks at a given offset
(:func:`append`), each written straight to disk, so a file is never held in
memory and a dropped connection resumes at :func:`status`'s ``received_bytes``.
Sessions and partial files live in ``<landing>/.uploads/`` (hidden: the scanner
never treats them as recordings). When the last byte arrives the sidecar
(``<file>.meta.json``, the form's values) is written first, then the file is
renamed into ``<landing>/<lab>/<condition>/<timepoint>/`` in one step, so the
sensor never sees a partial file. An existing file of that name is never
overwritten.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from transforms import spec
from transforms.errors import InvalidArgument, SpecError

UPLOADS_DIR: Final = ".uploads"
#: Largest file accepted (bytes).
MAX_UPLOAD_BYTES: Final = 64 * 1024**3
_NAME: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._ -]{0,200}$")
_ID: Final = re.compile(r"^[0-9a-f]{32}$")


class UploadConflict(InvalidArgument):
    """A chunk does not start where the received bytes end (resume from there)."""


def _dir(landing: str) -> Path:
    if spec.is_remote(landing):
        raise SpecError("uploads need a local landing zone (an s3:// one is not supported yet)")
    d = Path(landing) / UPLOADS_DIR
    d.mkdir(parents=True, exist_ok=True)
    return d


def _check_name(file_name: str) -> str:
    if not isinstance(file_name, str) or not _NAME.match(file_name) or ".." in file_name:
        raise InvalidArgument(f"bad file name {file_name!r}")
    lower = file_name.lower()
    if spec.recording_kind(file_name) is None and not lower.endswith((".csv", ".csv.gz")):
        raise InvalidArgument(
            f"{file_name}: not a recording (.abf, .nwb, .raw, .spk, *spike_list*.csv) "
            "nor a plate map (.csv)"
        )
    return file_name


def start(
    landing: str,
    *,
    file_name: str,
    size_bytes: int,
    lab: str,
    condition: str,
    timepoint: str,
    sidecar: dict[str, Any] | None = None,
    user: str,
) -> dict[str, Any]:
    """Open an upload session; returns it (``upload_id``, ``received_bytes`` 0, ...).

    Raises
    ------
    InvalidArgument
        A bad name, size or sidecar key.
    SpecError
        A bad partition value.
    """
    part = spec.Partition.of(lab, condition, timepoint, source=file_name)
    _check_name(file_name)
    if isinstance(size_bytes, bool) or not 0 < int(size_bytes) <= MAX_UPLOAD_BYTES:
        raise InvalidArgument(f"size_bytes must be in 1..{MAX_UPLOAD_BYTES}, got {size_bytes!r}")
    side = {k: v for k, v in (sidecar or {}).items() if v not in (None, "")}
    unknown = set(side) - set(spec.SIDECAR_KEYS)
    if unknown:
        raise InvalidArgument(f"unknown sidecar keys {sorted(unknown)}")
    dest = Path(landing) / part.lab / part.condition / part.timepoint / file_name
    if dest.exists():
        raise InvalidArgument(f"{dest.relative_to(landing)} already exists in the landing zone")
    upload_id = uuid.uuid4().hex
    session = {
        "upload_id": upload_id,
        "file_name": file_name,
        "size_bytes": int(size_bytes),
        **part.as_dict(),
        "sidecar": side,
        "user": user,
        "destination": str(dest.relative_to(landing)),
    }
    d = _dir(landing)
    (d / f"{upload_id}.json").write_text(json.dumps(session), encoding="utf-8")
    (d / f".{upload_id}.part").touch()
    return {**session, "received_bytes": 0, "done": False}


def _session(landing: str, upload_id: str) -> dict[str, Any]:
    if not isinstance(upload_id, str) or not _ID.match(upload_id):
        raise InvalidArgument(f"bad upload id {upload_id!r}")
    path = _dir(landing) / f"{upload_id}.json"
    if not path.is_file():
        raise SpecError(f"no upload {upload_id}")
    session: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return session


def status(landing: str, upload_id: str) -> dict[str, Any]:
    """The session with ``received_bytes`` (where to resume) and ``done``."""
    s = _session(landing, upload_id)
    part = _dir(landing) / f".{upload_id}.part"
    dest = Path(landing) / s["destination"]
    done = not part.exists() and dest.is_file()
    received = s["size_bytes"] if done else (part.stat().st_size if part.exists() else 0)
    return {**s, "received_bytes": received, "done": done}


def append(landing: str, upload_id: str, *, offset: int, chunks: Iterable[bytes]) -> dict[str, Any]:
    """Write chunks at ``offset`` (which must be the bytes received so far).

    Returns
    -------
    dict
        :func:`status` after the write; ``done`` once the file is in the landing zone.

    Raises
    ------
    UploadConflict
        ``offset`` is not where the received bytes end.
    InvalidArgument
        More bytes than the session's size.
    """
    s = status(landing, upload_id)
    if s["done"]:
        return s
    if offset != s["received_bytes"]:
        raise UploadConflict(
            f"upload {upload_id} has {s['received_bytes']} bytes; resume at that offset, "
            f"not {offset}"
        )
    part = _dir(landing) / f".{upload_id}.part"
    size = s["received_bytes"]
    with open(part, "ab") as out:
        for chunk in chunks:
            size += len(chunk)
            if size > s["size_bytes"]:
                out.truncate(s["received_bytes"])
                raise InvalidArgument(
                    f"{s['file_name']}: more than the announced {s['size_bytes']} bytes"
                )
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if size == s["size_bytes"]:
        _finish(landing, s, part)
    return status(landing, upload_id)


def _finish(landing: str, s: dict[str, Any], part: Path) -> None:
    dest = Path(landing) / s["destination"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        raise InvalidArgument(f"{s['destination']} appeared in the landing zone meanwhile")
    if s["sidecar"]:
        side = dest.with_name(dest.name + spec.SIDECAR_SUFFIX)
        tmp = side.with_name("." + side.name + ".tmp")
        tmp.write_text(json.dumps(s["sidecar"], indent=1), encoding="utf-8")
        tmp.replace(side)
    os.replace(part, dest)
