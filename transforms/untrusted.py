"""The landing zone is untrusted: no-follow file access, bounded listing, escaped text.

Anyone who can drop a file into the landing zone can also drop a symbolic link, a
link loop, a FIFO, a name holding a newline or a multi-megabyte plate map. The rules
stated here hold wherever a landing file is listed, opened or described:

* **A symbolic link is never followed.** Listing reports it (:attr:`Listing.links`)
  instead of descending into it or reading its target; opening a landing file uses
  ``O_NOFOLLOW``; a link (file or directory) is refused with :func:`refusal`, a
  reason that names the link and never its target's content.
* **Listing is bounded** (:func:`walk`): no loops (links are not followed), at most
  ``max_depth`` folders deep, ``max_entries`` entries and ``budget_s`` seconds, else a
  :class:`~transforms.errors.SpecError` saying which limit was hit.
* **Paths stay inside the landing root** after resolution (:func:`check_inside`).
* **Text from a file is never echoed**: a name is escaped (:func:`escape`) before it
  reaches a log line or the CLI, an excerpt is short and escaped (:func:`excerpt`), and a
  reason stored in ``ingest_log`` is capped at :data:`REASON_MAX_CHARS`
  (:func:`cap_reason`).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

from transforms.errors import SpecError

#: Longest reason stored in ``ingest_log`` (characters); the full text goes to a file.
REASON_MAX_CHARS: Final = 4096
#: Longest excerpt of file content or of a value a reason may quote (characters).
EXCERPT_MAX_CHARS: Final = 80
#: Folder depth below the listed root a landing zone may have (<lab>/<condition>/<timepoint>/ is 3).
MAX_DEPTH: Final = 16
#: Entries (files, folders, links) one listing may visit.
MAX_ENTRIES: Final = 200_000
#: Seconds one listing may take.
LISTING_BUDGET_S: Final = 120.0
#: Longest file name (bytes, UTF-8) the lake accepts: names are stored and shown, and
#: derived names (``<name>.meta.json``, temporary copies) must still fit the 255-byte
#: limit of common file systems.
MAX_NAME_BYTES: Final = 240


def escape(text: str) -> str:
    r"""``text`` with every non-printable character escaped (``\n``, ``\x1b``, ``\u2028``).

    A name holding a newline or a terminal escape then prints as one inert line: it
    cannot forge another log line nor recolour a terminal.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def excerpt(text: str | bytes, *, limit: int = EXCERPT_MAX_CHARS) -> str:
    """A short, escaped, quoted excerpt of content for a reason (``'abc'…(+95 chars)``).

    Python's ``repr`` of at most ``limit`` characters: quoted, every non-printable
    character escaped.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    more = f"…(+{len(text) - limit} chars)" if len(text) > limit else ""
    return repr(text[:limit]) + more


def cap_reason(reason: str, *, limit: int = REASON_MAX_CHARS) -> tuple[str, bool]:
    """``(reason, False)`` if it fits ``limit`` characters, else ``(its head, True)``.

    The head keeps the start of the message (which names the file and the error);
    the caller stores the full text elsewhere and appends where.
    """
    if len(reason) <= limit:
        return reason, False
    return reason[:limit], True


def name_fits(name: str) -> bool:
    """Whether :func:`check_name` accepts ``name``."""
    return len(name.encode("utf-8", errors="surrogateescape")) <= MAX_NAME_BYTES and (
        "\x00" not in name
    )


def check_name(name: str, *, source: str = "") -> str:
    """``name`` if it is a file name the lake can store and derive names from.

    Raises
    ------
    SpecError
        If it is longer than :data:`MAX_NAME_BYTES` bytes (UTF-8) or holds a NUL.
    """
    size = len(name.encode("utf-8", errors="surrogateescape"))
    if not name_fits(name):
        raise SpecError(
            f"{escape(source or name[:60])}: file name of {size} bytes refused: at most "
            f"{MAX_NAME_BYTES} bytes (derived names must fit the file system's 255)"
        )
    return name


def refusal(path: str | Path) -> str:
    """The reason a symbolic link in the landing zone is refused (never its target)."""
    return (
        f"{escape(Path(path).name)}: refused: a symbolic link (landing-zone entries must be "
        "regular files or folders; links are never followed, their target is not read)"
    )


def lstat_regular(path: str | Path) -> os.stat_result:
    """``lstat`` of a landing file that must be a regular file, not a link.

    Raises
    ------
    SpecError
        If ``path`` is missing, a symbolic link, or not a regular file (a folder,
        FIFO, socket, device).
    """
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise SpecError(f"{escape(str(path))}: no such file ({exc.strerror})") from exc
    if stat.S_ISLNK(st.st_mode):
        raise SpecError(refusal(path))
    if not stat.S_ISREG(st.st_mode):
        raise SpecError(f"{escape(Path(path).name)}: refused: not a regular file")
    return st


def check_inside(path: str | Path, root: str | Path) -> Path:
    """``path`` (absolute) if, below ``root``, none of its components is a link.

    A path outside ``root`` is checked only for being a link itself (a file an
    operator named explicitly). A path below ``root`` must resolve to the same
    place below the resolved root: a linked folder anywhere between the root and
    the file is refused, so every path used stays inside the landing root.

    Raises
    ------
    SpecError
        If a component is a symbolic link.
    """
    absolute = Path(os.path.abspath(path))
    base = Path(os.path.abspath(root))
    if os.path.islink(absolute):
        raise SpecError(refusal(absolute))
    try:
        rel = absolute.relative_to(base)
    except ValueError:
        return absolute
    real_base = Path(os.path.realpath(base))
    if Path(os.path.realpath(absolute)) != real_base.joinpath(rel):
        raise SpecError(
            f"{escape(absolute.name)}: refused: a folder between the landing root and the "
            "file is a symbolic link (links are never followed)"
        )
    return absolute


@contextmanager
def open_nofollow(path: str | Path) -> Iterator[BinaryIO]:
    """Open a landing file for reading without following a link (``O_NOFOLLOW``).

    Also non-blocking at open, so a FIFO cannot hang the reader; a non-regular file
    is refused.

    Raises
    ------
    SpecError
        If ``path`` is a link, missing or not a regular file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if os.path.islink(path):
            raise SpecError(refusal(path)) from exc
        raise SpecError(f"{escape(str(path))}: cannot open ({exc.strerror})") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SpecError(f"{escape(Path(path).name)}: refused: not a regular file")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as fh:
        yield fh


def read_nofollow(path: str | Path, *, max_bytes: int) -> bytes:
    """The bytes of a small landing file (sidecar, plate map), at most ``max_bytes``.

    Raises
    ------
    SpecError
        If the file is a link, not regular, or larger than ``max_bytes``.
    """
    with open_nofollow(path) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SpecError(
            f"{escape(Path(path).name)}: larger than {max_bytes} bytes: refused (not read)"
        )
    return data


@dataclass(frozen=True)
class Entry:
    """One listed file or link: path, size and change time (``max(mtime, ctime)``)."""

    path: Path
    size: int
    mtime: float


@dataclass
class Listing:
    """What :func:`walk` found: regular files, and links it did not follow."""

    files: list[Entry] = field(default_factory=list)
    links: list[Entry] = field(default_factory=list)


def walk(
    root: str | Path,
    *,
    max_depth: int = MAX_DEPTH,
    max_entries: int = MAX_ENTRIES,
    budget_s: float = LISTING_BUDGET_S,
    hidden: bool = False,
) -> Listing:
    """Every regular file and every symbolic link below ``root``, links not followed.

    Hidden entries (``.``-prefixed: partial uploads, ``.git``) are skipped unless
    ``hidden``. FIFOs,
    sockets and devices are skipped. A root that is itself a link is listed as one
    link. The walk is bounded: it never loops (links are not followed), and it stops
    with an error past ``max_depth`` folders, ``max_entries`` entries or ``budget_s``
    seconds.

    Raises
    ------
    SpecError
        If a bound is exceeded (the message names the bound and where).
    """
    out = Listing()
    root = Path(os.path.abspath(root))
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return out
    if stat.S_ISLNK(st.st_mode):
        out.links.append(Entry(root, 0, max(st.st_mtime, st.st_ctime)))
        return out
    if stat.S_ISREG(st.st_mode):
        out.files.append(Entry(root, st.st_size, max(st.st_mtime, st.st_ctime)))
        return out
    deadline = time.monotonic() + budget_s
    seen = 0
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed while listing
        except PermissionError as exc:
            raise SpecError(f"{escape(str(folder))}: cannot list ({exc.strerror})") from exc
        for entry in entries:
            seen += 1
            if seen > max_entries:
                raise SpecError(
                    f"{escape(str(root))}: listing stopped after {max_entries} entries "
                    "(the landing zone holds too many files for one scan)"
                )
            if time.monotonic() > deadline:
                raise SpecError(
                    f"{escape(str(root))}: listing exceeded its time budget of {budget_s:g} s"
                )
            if entry.name.startswith(".") and not hidden:
                continue
            try:
                est = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            path = Path(entry.path)
            when = max(est.st_mtime, est.st_ctime)
            if stat.S_ISLNK(est.st_mode):
                out.links.append(Entry(path, 0, when))
            elif stat.S_ISDIR(est.st_mode):
                if depth + 1 > max_depth:
                    raise SpecError(
                        f"{escape(str(path))}: more than {max_depth} folders below "
                        f"{escape(str(root))}: refused (listing is bounded)"
                    )
                stack.append((path, depth + 1))
            elif stat.S_ISREG(est.st_mode):
                out.files.append(Entry(path, est.st_size, when))
    out.files.sort(key=lambda e: str(e.path))
    out.links.sort(key=lambda e: str(e.path))
    return out
