"""Storage helpers: one API over local paths and ``s3://`` URIs.

The landing zone, the lake and its staging area may live on a local disk or on
an S3-compatible object store (AWS S3, MinIO; moto's server in the tests).
Everything here speaks pyarrow's filesystem layer, configured only from the
standard ``AWS_*`` environment variables, so credentials never appear in code,
URIs or logs (Airflow tasks export an ``aws`` connection into that environment
for the duration of a call; see ``dags/neurocyte_tasks/ops.py``).

Object-store semantics worth knowing:

* an S3 object becomes visible only once its upload completed, so "settled"
  means "not modified for ``settle_s``" (it lets a sidecar catch up with its
  recording), not "not growing";
* there is no rename: :func:`move_tree` copies then deletes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from transforms import spec
from transforms.errors import CatalogUnavailable, LakeError, SpecError
from transforms.untrusted import walk

_CHUNK = 1 << 20

#: Variables :func:`aws_env_from_connection` may export; nothing else.
AWS_ENV_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ALLOW_HTTP",
)


def is_s3(uri: str) -> bool:
    """True for ``s3://`` (and ``s3a://``) URIs."""
    return uri.startswith(("s3://", "s3a://"))


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/...`` -> ``("bucket", "key/...")``.

    Raises
    ------
    SpecError
        If ``uri`` is not an S3 URI or names no bucket.
    """
    if not is_s3(uri):
        raise SpecError(f"not an s3:// URI: {uri!r}")
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise SpecError(f"no bucket in {uri!r}")
    return bucket, key.strip("/")


def join(root: str, *parts: str) -> str:
    """Join path segments onto a local path or a URI with ``/``."""
    for part in parts:
        if part in ("", ".", "..") or part.startswith("/"):
            raise SpecError(f"illegal path segment {part!r}")
    return "/".join([root.rstrip("/"), *parts])


def s3_filesystem() -> Any:
    """A ``pyarrow.fs.S3FileSystem`` configured from the ``AWS_*`` environment.

    ``AWS_ENDPOINT_URL`` selects an S3-compatible endpoint (MinIO, moto);
    ``http://`` endpoints are allowed only through that explicit variable.
    """
    from pyarrow import fs

    kwargs: dict[str, Any] = {
        "region": os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    }
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        if not host:
            raise SpecError("AWS_ENDPOINT_URL must look like http(s)://host[:port]")
        kwargs["endpoint_override"] = host.rstrip("/")
        kwargs["scheme"] = scheme
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        kwargs["secret_key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return fs.S3FileSystem(**kwargs)


def filesystem(uri: str) -> tuple[Any, str]:
    """The pyarrow filesystem for ``uri`` and the path to use with it."""
    from pyarrow import fs

    if is_s3(uri):
        bucket, key = split_s3(uri)
        return s3_filesystem(), f"{bucket}/{key}".rstrip("/")
    if spec.is_remote(uri):
        raise SpecError(f"unsupported storage scheme in {uri!r} (local paths and s3:// only)")
    return fs.LocalFileSystem(), str(Path(uri.removeprefix("file://")).resolve())


def _uri(uri_root: str, fs_root: str, fs_path: str) -> str:
    """Map a filesystem path found under ``fs_root`` back to a URI under ``uri_root``."""
    rel = fs_path[len(fs_root) :].lstrip("/")
    return join(uri_root, *rel.split("/")) if rel else uri_root


@dataclass(frozen=True)
class ObjectInfo:
    """One file or object: where, how big, when last changed (epoch seconds).

    ``mtime`` is the object's server-set ``LastModified`` on S3, and the later
    of ``st_mtime`` and ``st_ctime`` for a local file (a copy that preserves an
    old modification time still counts as a change).
    """

    uri: str
    size: int
    mtime: float

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


def list_files(root: str) -> list[ObjectInfo]:
    """Every file below ``root`` (recursive); empty if ``root`` does not exist.

    Locally, symbolic links are neither followed nor listed, and the listing is
    bounded (:func:`transforms.untrusted.walk`): a link loop cannot hang it.
    """
    from pyarrow import fs as pafs

    if not is_s3(root):
        if spec.is_remote(root):
            raise SpecError(f"unsupported storage scheme in {root!r} (local paths and s3:// only)")
        local = str(Path(root.removeprefix("file://")).resolve())
        return [
            ObjectInfo(_uri(root, local, str(e.path)), e.size, e.mtime)
            for e in walk(local, hidden=True).files
        ]
    fsys, base = filesystem(root)
    info = fsys.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        return []
    if info.type == pafs.FileType.File:
        mtime = info.mtime.timestamp() if info.mtime else 0.0
        return [ObjectInfo(root, int(info.size or 0), mtime)]
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    out = []
    for item in fsys.get_file_info(selector):
        if item.type != pafs.FileType.File:
            continue
        mtime = item.mtime.timestamp() if item.mtime else 0.0
        out.append(ObjectInfo(_uri(root, base, item.path), int(item.size or 0), mtime))
    return out


def exists(uri: str) -> bool:
    from pyarrow import fs as pafs

    fsys, path = filesystem(uri)
    return bool(fsys.get_file_info(path).type != pafs.FileType.NotFound)


def sha256(uri: str | Path) -> str:
    """SHA-256 of a file's or object's bytes (streamed, constant memory): its ``file_id``.

    Read with ``compression=None``: pyarrow would otherwise decompress a ``.gz`` by its
    name, and a gzipped spike list would get another file_id than its bytes.
    """
    fsys, path = filesystem(str(uri))
    h = hashlib.sha256()
    with fsys.open_input_stream(path, compression=None) as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def read_bytes(uri: str) -> bytes:
    fsys, path = filesystem(uri)
    with fsys.open_input_stream(path, compression=None) as fh:
        return bytes(fh.read())


def write_bytes(uri: str, data: bytes) -> None:
    fsys, path = filesystem(uri)
    if not is_s3(uri):
        fsys.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fsys.open_output_stream(path) as fh:
        fh.write(data)


def write_parquet(table: pa.Table, uri: str) -> None:
    """Write ``table`` as one Parquet file at ``uri`` (parents created)."""
    fsys, path = filesystem(uri)
    if not is_s3(uri):
        fsys.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fsys)


def read_parquet(uri: str, *, read_dictionary: Sequence[str] = ()) -> pa.Table:
    """Read one Parquet file; ``read_dictionary`` columns come back dictionary-encoded."""
    fsys, path = filesystem(uri)
    if read_dictionary:
        present = set(pq.read_schema(path, filesystem=fsys).names)
        wanted = [c for c in read_dictionary if c in present]
        return pq.read_table(path, filesystem=fsys, read_dictionary=wanted or None)
    return pq.read_table(path, filesystem=fsys)


def read_parquet_schema(uri: str) -> pa.Schema:
    """The Arrow schema of one Parquet file (its footer only)."""
    fsys, path = filesystem(uri)
    return pq.read_schema(path, filesystem=fsys)


def iter_parquet(
    uri: str, *, batch_rows: int, read_dictionary: Sequence[str] = ()
) -> Iterator[pa.RecordBatch]:
    """One Parquet file's rows in batches of at most ``batch_rows`` (never all at once).

    ``read_dictionary`` columns come back dictionary-encoded, as in :func:`read_parquet`.
    A batch never spans two row groups, so some are shorter.
    """
    fsys, path = filesystem(uri)
    with fsys.open_input_file(path) as fh:
        present = set(pq.read_schema(fh).names)
        wanted = [c for c in read_dictionary if c in present]
        reader = pq.ParquetFile(fh, read_dictionary=wanted or None)
        yield from reader.iter_batches(batch_size=batch_rows)


def remove_tree(uri: str) -> None:
    """Delete ``uri`` and everything below it; nothing if it does not exist."""
    from pyarrow import fs as pafs

    fsys, path = filesystem(uri)
    kind = fsys.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fsys.delete_dir(path)
    elif kind == pafs.FileType.File:
        fsys.delete_file(path)
    elif is_s3(uri):
        # S3 "directories" exist only through their objects.
        for obj in list_files(uri):
            fsys.delete_file(filesystem(obj.uri)[1])


def move_tree(src: str, dst: str) -> None:
    """Move a directory tree; on object stores: copy every object, then delete."""
    if not is_s3(src) and not is_s3(dst):
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(src, dst)
        return
    for obj in list_files(src):
        rel = obj.uri[len(src.rstrip("/")) :].lstrip("/")
        write_bytes(join(dst, *rel.split("/")), read_bytes(obj.uri))
    remove_tree(src)


def download(uri: str, dest: Path) -> Path:
    """Copy a file or object to the local path ``dest`` (atomically renamed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fsys, path = filesystem(uri)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    with fsys.open_input_stream(path, compression=None) as src, open(tmp, "wb") as out:
        while chunk := src.read(_CHUNK):
            out.write(chunk)
    tmp.replace(dest)
    return dest


#: Where remote (``s3://``) sources are cached for raw access and export, by file_id.
ENV_SOURCE_CACHE = "NEUROCYTE_SOURCE_CACHE"


def source_cache_dir() -> Path:
    """``$NEUROCYTE_SOURCE_CACHE``, else ``<tmp>/neurocyte-sources``."""
    explicit = os.environ.get(ENV_SOURCE_CACHE)
    return Path(explicit) if explicit else Path(tempfile.gettempdir()) / "neurocyte-sources"


def readable_source(uri: str, *, file_id: str) -> Path:
    """A local path holding the bytes of the landed file ``uri`` (content ``file_id``).

    A local ``uri`` is returned as is (callers verify it). An ``s3://`` object is
    downloaded once into :func:`source_cache_dir` under its file_id, checked
    against ``file_id`` before it is used, and reused while it is there.

    Raises
    ------
    LakeError
        If the object cannot be read or its content no longer hashes to ``file_id``.
    """
    if not is_s3(uri):
        return Path(uri)
    spec.check_file_id(file_id)
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    dest = source_cache_dir() / file_id / name
    if dest.is_file():
        return dest
    try:
        download(uri, dest.with_name(dest.name + ".unverified"))
    except OSError as exc:
        raise LakeError(f"source of {file_id} cannot be read from {uri}: {exc}") from exc
    fetched = dest.with_name(dest.name + ".unverified")
    if sha256(fetched) != file_id:
        fetched.unlink(missing_ok=True)
        raise LakeError(f"{uri} changed since it was ingested (hash differs from file_id)")
    fetched.replace(dest)
    return dest


@contextmanager
def localized(uri: str, *, landing: str | None = None) -> Iterator[tuple[Path, str]]:
    """A local copy of a landing file (its sidecar, its lab's parameter set) for the decoders.

    Yields ``(local_path, local_landing_root)``: the file sits at the same
    ``<lab>/<condition>/<timepoint>/<name>`` below the returned root as below
    the landing zone, so partition values resolve from its path exactly as for
    a local landing zone, and ``<lab>/neurocyte.toml`` is copied beside it. A
    local ``uri`` is yielded as is. The copy is removed on exit.
    """
    if not is_s3(uri):
        yield Path(uri), spec.landing_root(landing)
        return
    root = spec.landing_root(landing)
    prefix = root.rstrip("/") + "/"
    rel = uri[len(prefix) :] if uri.startswith(prefix) else uri.rsplit("/", 1)[-1]
    parts = [p for p in rel.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise SpecError(f"illegal path in {uri!r}")
    with tempfile.TemporaryDirectory(prefix="neurocyte-fetch-") as tmp:
        local = Path(tmp).joinpath(*parts)
        download(uri, local)
        sidecar = uri + spec.SIDECAR_SUFFIX
        if exists(sidecar):
            download(sidecar, local.with_name(local.name + spec.SIDECAR_SUFFIX))
        if len(parts) >= 2:
            params = join(root, parts[0], spec.PARAMS_FILE_NAME)
            if exists(params):
                download(params, Path(tmp) / parts[0] / spec.PARAMS_FILE_NAME)
        yield local, tmp


def settled(
    objects: list[ObjectInfo], *, settle_s: float, now: float | None = None
) -> list[ObjectInfo]:
    """Objects not modified during the last ``settle_s`` seconds."""
    now = time.time() if now is None else now
    return [o for o in objects if now - o.mtime >= settle_s]


# --- DuckDB catalog for a remote lake -------------------------------------


def require_httpfs(con: Any) -> None:
    """Load DuckDB's ``httpfs`` extension (no download) or raise a clear error.

    Views over ``s3://`` Parquet need ``httpfs``. It is never auto-installed
    here: an install downloads a binary, which offline hosts cannot do.

    Raises
    ------
    CatalogUnavailable
        If the extension is not installed for this DuckDB version.
    """
    import duckdb

    try:
        con.execute("LOAD httpfs")
    except duckdb.Error as exc:
        raise CatalogUnavailable(
            f"DuckDB {duckdb.__version__} cannot load its httpfs extension here, so no catalog "
            "of views over the s3:// lake can be published. Install it where downloads are "
            "allowed (python -c \"import duckdb; duckdb.execute('INSTALL httpfs')\") or use a "
            f"local lake. DuckDB said: {exc}"
        ) from exc
