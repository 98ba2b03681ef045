"""Resumable, streamed uploads into the landing zone, local or S3.

An upload is a session (:func:`start`) naming the file, its size, its partition
and its sidecar fields; its bytes arrive in chunks at a given offset
(:func:`open_chunk` / :func:`append`), each written on as it arrives, so a file is
never held in memory and a dropped connection resumes at :func:`status`'s
``received_bytes`` (a chunk at another offset raises :class:`UploadConflict`).
Sessions live in ``<landing>/.uploads/`` (hidden: the scanner never treats them as
recordings). When the last byte arrives the sidecar (``<file>.meta.json``, the
form's values) is written first, then the file appears in
``<landing>/<lab>/<condition>/<timepoint>/`` in one step, so the sensor never sees a
partial file, and its SHA-256 (its ``file_id``) is kept in the session. An existing
file of that name is never overwritten.

- **Local landing zone**: the bytes are appended to ``.uploads/.<id>.part`` (fsynced
  per chunk), which is renamed into place at the end.
- **S3 landing zone** (``s3://bucket/prefix``): an S3 multipart upload of the final
  key. Each chunk is spooled to a temporary file on disk, then sent as one part;
  every part but the last must hold at least :data:`S3_MIN_PART_BYTES` (S3's rule),
  so the session announces ``chunk_bytes`` (:data:`S3_PART_BYTES`). The bytes
  received are the parts S3 holds (``ListParts``), so any api-server process
  resumes a session; a chunk cut off by a dropped connection is discarded whole and
  resent. Completing the multipart upload makes the object appear at once.
  Credentials are the standard ``AWS_*`` variables (``AWS_ENDPOINT_URL`` for MinIO
  or another S3-compatible server).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Final

from transforms import spec
from transforms.errors import InvalidArgument, SpecError
from transforms.lake import storage

UPLOADS_DIR: Final = ".uploads"
#: Largest file accepted (bytes).
MAX_UPLOAD_BYTES: Final = 64 * 1024**3
#: Chunk size a local landing zone asks for (any size is accepted).
LOCAL_CHUNK_BYTES: Final = 1024 * 1024
#: Chunk (part) size an S3 landing zone asks for.
S3_PART_BYTES: Final = 8 * 1024 * 1024
#: S3's smallest part but the last.
S3_MIN_PART_BYTES: Final = 5 * 1024 * 1024
#: S3's largest part, and its most parts per upload.
S3_MAX_PART_BYTES: Final = 5 * 1024**3
S3_MAX_PARTS: Final = 10_000
_NAME: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._ -]{0,200}$")
_ID: Final = re.compile(r"^[0-9a-f]{32}$")


class UploadConflict(InvalidArgument):
    """A chunk does not start where the received bytes end (resume from there)."""


def _remote(landing: str) -> bool:
    if storage.is_s3(landing):
        return True
    if spec.is_remote(landing):
        raise SpecError(f"uploads need a local or s3:// landing zone, not {landing!r}")
    return False


def _dir(landing: str) -> Path:
    d = Path(landing) / UPLOADS_DIR
    d.mkdir(parents=True, exist_ok=True)
    return d


def _session_uri(landing: str, upload_id: str) -> str:
    return storage.join(landing, UPLOADS_DIR, f"{upload_id}.json")


def s3_client() -> Any:
    """A boto3 S3 client from the ``AWS_*`` environment (``AWS_ENDPOINT_URL`` honoured)."""
    import boto3

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("s3", endpoint_url=endpoint, region_name=region)


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


def _write_session(landing: str, session: dict[str, Any]) -> None:
    data = json.dumps(session).encode("utf-8")
    if _remote(landing):
        storage.write_bytes(_session_uri(landing, session["upload_id"]), data)
        return
    path = _dir(landing) / f"{session['upload_id']}.json"
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


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
    """Open an upload session; returns it (``upload_id``, ``received_bytes`` 0,
    ``chunk_bytes`` the chunk size to send, ...).

    Raises
    ------
    InvalidArgument
        A bad name, size or sidecar key, or a file of that name already landed.
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
    destination = f"{part.lab}/{part.condition}/{part.timepoint}/{file_name}"
    dest = storage.join(landing, part.lab, part.condition, part.timepoint, file_name)
    if storage.exists(dest):
        raise InvalidArgument(f"{destination} already exists in the landing zone")
    upload_id = uuid.uuid4().hex
    session: dict[str, Any] = {
        "upload_id": upload_id,
        "file_name": file_name,
        "size_bytes": int(size_bytes),
        **part.as_dict(),
        "sidecar": side,
        "user": user,
        "destination": destination,
    }
    if _remote(landing):
        if -(-int(size_bytes) // S3_PART_BYTES) > S3_MAX_PARTS:
            raise InvalidArgument(f"{file_name}: too large for {S3_MAX_PARTS} parts")
        bucket, key = storage.split_s3(dest)
        multipart = s3_client().create_multipart_upload(Bucket=bucket, Key=key)
        session["s3_upload_id"] = multipart["UploadId"]
        session["chunk_bytes"] = S3_PART_BYTES
    else:
        session["chunk_bytes"] = LOCAL_CHUNK_BYTES
        _dir(landing)
        (_dir(landing) / f".{upload_id}.part").touch()
    _write_session(landing, session)
    return {**session, "received_bytes": 0, "done": False}


def _session(landing: str, upload_id: str) -> dict[str, Any]:
    if not isinstance(upload_id, str) or not _ID.match(upload_id):
        raise InvalidArgument(f"bad upload id {upload_id!r}")
    if _remote(landing):
        uri = _session_uri(landing, upload_id)
        if not storage.exists(uri):
            raise SpecError(f"no upload {upload_id}")
        raw = storage.read_bytes(uri)
    else:
        path = _dir(landing) / f"{upload_id}.json"
        if not path.is_file():
            raise SpecError(f"no upload {upload_id}")
        raw = path.read_bytes()
    session: dict[str, Any] = json.loads(raw.decode("utf-8"))
    return session


def _s3_parts(session: dict[str, Any], bucket: str, key: str) -> list[dict[str, Any]]:
    """The parts S3 holds for the session's multipart upload, in order."""
    client = s3_client()
    parts: list[dict[str, Any]] = []
    marker = 0
    while True:
        page = client.list_parts(
            Bucket=bucket, Key=key, UploadId=session["s3_upload_id"], PartNumberMarker=marker
        )
        parts.extend(page.get("Parts", []))
        if not page.get("IsTruncated"):
            return sorted(parts, key=lambda p: int(p["PartNumber"]))
        marker = int(page["NextPartNumberMarker"])


def status(landing: str, upload_id: str) -> dict[str, Any]:
    """The session with ``received_bytes`` (where to resume) and ``done``."""
    s = _session(landing, upload_id)
    if s.get("file_id"):  # finished: the file landed and was hashed
        return {**s, "received_bytes": s["size_bytes"], "done": True}
    if _remote(landing):
        bucket, key = storage.split_s3(storage.join(landing, *s["destination"].split("/")))
        received = sum(int(p["Size"]) for p in _s3_parts(s, bucket, key))
        return {**s, "received_bytes": received, "done": False}
    part = _dir(landing) / f".{upload_id}.part"
    received = part.stat().st_size if part.exists() else 0
    return {**s, "received_bytes": received, "done": False}


class ChunkWriter:
    """One chunk of an upload, written as it arrives (:func:`open_chunk`).

    Call :meth:`write` for each piece of the request body, then :meth:`close` for the
    new status; :meth:`abort` after a dropped connection (a local file keeps the bytes
    already written; an S3 part is discarded whole).
    """

    def __init__(self, landing: str, session: dict[str, Any]) -> None:
        self.landing = landing
        self.session = session
        self.start = int(session["received_bytes"])
        self.size = self.start
        self.remote = _remote(landing)
        self._out: IO[bytes]
        if self.remote:
            self._out = tempfile.TemporaryFile(prefix="neurocyte-upload-")  # noqa: SIM115
        else:
            self._out = open(_dir(landing) / f".{session['upload_id']}.part", "ab")  # noqa: SIM115

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; refuse bytes beyond the announced size."""
        self.size += len(chunk)
        if self.size > self.session["size_bytes"]:
            self.abort(keep=False)
            raise InvalidArgument(
                f"{self.session['file_name']}: more than the announced "
                f"{self.session['size_bytes']} bytes"
            )
        self._out.write(chunk)

    def abort(self, *, keep: bool = True) -> None:
        """Stop here: a local file keeps what was written (``keep``), else it is cut back."""
        if self._out.closed:
            return
        if not self.remote:
            self._out.flush()
            if not keep:
                self._out.truncate(self.start)
            os.fsync(self._out.fileno())
        self._out.close()

    def close(self) -> dict[str, Any]:
        """Commit the chunk (fsync locally; one part on S3); the status after it."""
        s = self.session
        uid = s["upload_id"]
        if not self.remote:
            self.abort()
            if self.size == s["size_bytes"]:
                _finish_local(self.landing, s, _dir(self.landing) / f".{uid}.part")
            return status(self.landing, uid)
        n = self.size - self.start
        last = self.size == s["size_bytes"]
        dest = storage.join(self.landing, *s["destination"].split("/"))
        bucket, key = storage.split_s3(dest)
        try:
            if n == 0:
                return status(self.landing, uid)
            if not last and n < S3_MIN_PART_BYTES:
                raise InvalidArgument(
                    f"{s['file_name']}: a chunk but the last must hold at least "
                    f"{S3_MIN_PART_BYTES} bytes on an S3 landing zone (send {s['chunk_bytes']})"
                )
            if n > S3_MAX_PART_BYTES:
                raise InvalidArgument(f"{s['file_name']}: a chunk of {n} bytes is over 5 GiB")
            parts = _s3_parts(s, bucket, key)
            if sum(int(p["Size"]) for p in parts) != self.start:  # another writer meanwhile
                raise UploadConflict(f"upload {uid} changed while this chunk arrived; resume")
            self._out.seek(0)
            s3_client().upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=s["s3_upload_id"],
                PartNumber=len(parts) + 1,
                Body=self._out,
                ContentLength=n,
            )
        finally:
            self._out.close()
        if last:
            _finish_s3(self.landing, s, bucket, key)
        return status(self.landing, uid)


def open_chunk(landing: str, upload_id: str, *, offset: int) -> ChunkWriter:
    """A writer for the bytes at ``offset`` (which must be the bytes received so far).

    Raises
    ------
    UploadConflict
        ``offset`` is not where the received bytes end, or the upload is done.
    """
    s = status(landing, upload_id)
    if s["done"] or offset != s["received_bytes"]:
        raise UploadConflict(
            f"upload {upload_id} has {s['received_bytes']} bytes"
            + ("; it is complete" if s["done"] else f"; resume at that offset, not {offset}")
        )
    return ChunkWriter(landing, s)


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
        More bytes than the session's size, or (S3) a part too small.
    """
    s = status(landing, upload_id)
    if s["done"]:
        return s
    writer = open_chunk(landing, upload_id, offset=offset)
    try:
        for chunk in chunks:
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def _sidecar_bytes(s: dict[str, Any]) -> bytes:
    return json.dumps(s["sidecar"], indent=1).encode("utf-8")


def _finish_local(landing: str, s: dict[str, Any], part: Path) -> None:
    dest = Path(landing) / s["destination"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        raise InvalidArgument(f"{s['destination']} appeared in the landing zone meanwhile")
    file_id = storage.sha256(part)
    if s["sidecar"]:
        side = dest.with_name(dest.name + spec.SIDECAR_SUFFIX)
        tmp = side.with_name("." + side.name + ".tmp")
        tmp.write_bytes(_sidecar_bytes(s))
        tmp.replace(side)
    os.replace(part, dest)
    _write_session(landing, {**s, "file_id": file_id})


def _finish_s3(landing: str, s: dict[str, Any], bucket: str, key: str) -> None:
    client = s3_client()
    dest = f"s3://{bucket}/{key}"
    if storage.exists(dest):
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=s["s3_upload_id"])
        raise InvalidArgument(f"{s['destination']} appeared in the landing zone meanwhile")
    if s["sidecar"]:
        storage.write_bytes(dest + spec.SIDECAR_SUFFIX, _sidecar_bytes(s))
    parts = _s3_parts(s, bucket, key)
    client.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=s["s3_upload_id"],
        MultipartUpload={
            "Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]
        },
    )
    _write_session(landing, {**s, "file_id": storage.sha256(dest)})


def abort(landing: str, upload_id: str) -> None:
    """Drop an unfinished session and its bytes (local part file or S3 parts)."""
    s = status(landing, upload_id)
    if s["done"]:
        return
    if _remote(landing):
        bucket, key = storage.split_s3(storage.join(landing, *s["destination"].split("/")))
        client = s3_client()
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=s["s3_upload_id"])
        sbucket, skey = storage.split_s3(_session_uri(landing, upload_id))
        client.delete_object(Bucket=sbucket, Key=skey)
        return
    with contextlib.suppress(FileNotFoundError):
        (_dir(landing) / f".{upload_id}.part").unlink()
    (_dir(landing) / f"{upload_id}.json").unlink()
