"""A cheap change detector for landed source files: size, times, inode and sampled blocks.

Raw access (:mod:`transforms.serve.raw`) serves windows of a source file long after it
was ingested; hashing a multi-GB plate before every millisecond read is too slow, and
checking the size alone misses a same-size overwrite. A :class:`Fingerprint` is the
file's size, ``mtime`` and ``ctime`` (ns; any write moves ``ctime``, which no user can
set back), inode, and the SHA-256 of :data:`N_BLOCKS` blocks of :data:`BLOCK_BYTES` spread
evenly over the file (the first and the last included). It is taken when a file is
staged (right after its content hash) and stored as
``<lake>/_fingerprints/<file_id>/<hash of the path>.json``; a reader whose fingerprint
differs, or who finds none, hashes the whole file before serving it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from transforms import spec
from transforms.errors import NeurocyteError
from transforms.lake import storage

#: Blocks sampled per file, and their size: 1 MiB read whatever the file's size.
N_BLOCKS: Final = 16
BLOCK_BYTES: Final = 64 * 1024
FINGERPRINT_DIR: Final = "_fingerprints"


@dataclass(frozen=True)
class Fingerprint:
    """What a file looks like now, cheaply (see the module docstring)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    sample_sha256: str

    @classmethod
    def of(cls, path: str | Path, st: os.stat_result | None = None) -> Fingerprint:
        """The fingerprint of ``path`` (``st``: its ``lstat`` when already taken).

        Raises
        ------
        OSError
            If the file cannot be read.
        """
        st = os.lstat(path) if st is None else st
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, sample_digest(path))


def sample_digest(path: str | Path) -> str:
    """SHA-256 of :data:`N_BLOCKS` evenly spread blocks of the file (and its size)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        h.update(size.to_bytes(8, "little"))
        last = max(size - BLOCK_BYTES, 0)
        offsets = sorted({round(k * last / (N_BLOCKS - 1)) for k in range(N_BLOCKS)})
        for offset in offsets:
            fh.seek(offset)
            h.update(fh.read(BLOCK_BYTES))
    return h.hexdigest()


def _uri(path: str | Path, file_id: str, lake: str | None) -> str:
    key = hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()
    root = spec.lake_root(lake)
    return storage.join(root, FINGERPRINT_DIR, spec.check_file_id(file_id), f"{key[:32]}.json")


def remember(
    path: str | Path, fingerprint: Fingerprint, *, file_id: str, lake: str | None = None
) -> bool:
    """Store that ``path`` held content ``file_id`` while it looked like ``fingerprint``.

    Best effort: False (nothing stored) if the lake cannot be written; readers then
    hash the file once more.
    """
    try:
        storage.write_bytes(_uri(path, file_id, lake), json.dumps(asdict(fingerprint)).encode())
    except (OSError, NeurocyteError):
        return False
    return True


def recall(path: str | Path, *, file_id: str, lake: str | None = None) -> Fingerprint | None:
    """The fingerprint stored for ``path`` holding ``file_id``, or None."""
    try:
        doc = json.loads(storage.read_bytes(_uri(path, file_id, lake)))
        return Fingerprint(**doc)
    except (OSError, NeurocyteError, ValueError, TypeError):
        return None
