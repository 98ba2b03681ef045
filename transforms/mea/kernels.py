"""Compiled kernels of the MEA detector, and how they are compiled and cached.

Kernels are compiled with numba on first use, ``nogil`` (channel groups run them in
parallel threads) and without ``fastmath`` (IEEE arithmetic, no reassociation nor
fused multiply-adds: the same numbers on every x86-64 CPU). They are cached on disk
(``cache=True``): next to the package, or, where it is read-only, in
``$NUMBA_CACHE_DIR`` (else numba's per-user cache directory). This module imports
numba: its users import it when they first filter, so importing the detector (for
its parameters, say) costs no numba import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from numba import njit

_log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def compiled(fn: F) -> F:
    """``njit(nogil=True, cache=True)``, uncached where no cache directory is writable."""
    try:
        return cast(F, njit(nogil=True, cache=True)(fn))
    except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
        _log.warning("numba cache unavailable (%s); set NUMBA_CACHE_DIR", exc)
        return cast(F, njit(nogil=True)(fn))


@compiled
def _one_section(src: np.ndarray, dst: np.ndarray, z: np.ndarray, sos: np.ndarray, s: int) -> None:
    b0, b1, b2, a1, a2 = sos[s, 0], sos[s, 1], sos[s, 2], sos[s, 4], sos[s, 5]
    z0, z1 = z[2 * s], z[2 * s + 1]
    for c in range(dst.shape[0]):
        v = src[c]
        y = b0 * v + z0[c]
        z0[c] = b1 * v - a1 * y + z1[c]
        z1[c] = b2 * v - a2 * y
        dst[c] = y


@compiled
def _two_sections(src: np.ndarray, dst: np.ndarray, z: np.ndarray, sos: np.ndarray, s: int) -> None:
    b0, b1, b2, a1, a2 = sos[s, 0], sos[s, 1], sos[s, 2], sos[s, 4], sos[s, 5]
    d0, d1, d2, e1, e2 = sos[s + 1, 0], sos[s + 1, 1], sos[s + 1, 2], sos[s + 1, 4], sos[s + 1, 5]
    z0, z1, z2, z3 = z[2 * s], z[2 * s + 1], z[2 * s + 2], z[2 * s + 3]
    for c in range(dst.shape[0]):
        v = src[c]
        y = b0 * v + z0[c]
        z0[c] = b1 * v - a1 * y + z1[c]
        z1[c] = b2 * v - a2 * y
        w = d0 * y + z2[c]
        z2[c] = d1 * y - e1 * w + z3[c]
        z3[c] = d2 * y - e2 * w
        dst[c] = w


@compiled
def sos_rows(
    src: np.ndarray,
    src_start: int,
    src_stride: int,
    n_rows: int,
    sos: np.ndarray,
    z: np.ndarray,
    row: np.ndarray,
    dst: np.ndarray,
    dst_start: int,
    dst_stride: int,
) -> None:
    """Filter rows ``src[src_start + i * src_stride :][:m]``, ``i < n_rows``, into
    ``dst[dst_start + i * dst_stride :][:m]``, with ``m = len(row)`` channels.

    ``z`` (2 * sections, m) float64 is the state, updated in place; ``row`` (m,) float64
    holds a row between pairs of sections when there are more than two.
    """
    m = row.shape[0]
    n_sections = sos.shape[0]
    for i in range(n_rows):
        lo = src_start + i * src_stride
        x = src[lo : lo + m]
        lo = dst_start + i * dst_stride
        y = dst[lo : lo + m]
        if n_sections == 1:
            _one_section(x, y, z, sos, 0)
        elif n_sections == 2:
            _two_sections(x, y, z, sos, 0)
        else:
            s = n_sections % 2
            if s:
                _one_section(x, row, z, sos, 0)
            else:
                _two_sections(x, row, z, sos, 0)
                s = 2
            while s < n_sections:
                _two_sections(row, row, z, sos, s)  # in place: each value read before written
                s += 2
            for c in range(m):
                y[c] = row[c]


@compiled
def crossings(
    y: np.ndarray,
    threshold: np.ndarray,
    sign: np.float32,
    both: bool,
    rows: np.ndarray,
    chs: np.ndarray,
) -> int:
    """Threshold crossings of ``y`` (rows, channels) float32: the ``(r, c)``, ``r >= 1``,
    where ``y[r, c]`` is past ``threshold[c]`` (``sign * y > threshold``, or
    ``|y| > threshold`` for ``both``) and ``y[r - 1, c]`` is not, row by row, into
    ``rows`` and ``chs``. Returns their number, or -1 if they do not fit."""
    n_rows, m = y.shape
    cap = len(rows)
    n = 0
    for r in range(1, n_rows):
        cur = y[r]
        prev = y[r - 1]
        hits = 0  # a vectorised count first: most rows have no crossing
        if both:
            for c in range(m):
                hits += (abs(cur[c]) > threshold[c]) and not (abs(prev[c]) > threshold[c])
        else:
            for c in range(m):
                hits += (sign * cur[c] > threshold[c]) and not (sign * prev[c] > threshold[c])
        if hits == 0:
            continue
        if n + hits > cap:
            return -1
        for c in range(m):
            if both:
                now, before = abs(cur[c]), abs(prev[c])
            else:
                now, before = sign * cur[c], sign * prev[c]
            if now > threshold[c] and not (before > threshold[c]):
                rows[n] = r
                chs[n] = c
                n += 1
    return n
