"""Vectorised searches over many index segments of one flat array.

Spike features are all of the form "argmax of x over [start, end)" or "first
sample in [start, end) where a condition holds", for a few hundred segments at
a time. These helpers do them in a handful of numpy calls instead of a Python
loop per spike.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: An element-wise test: ``cond(values)`` or ``cond(values, thresholds)`` giving
#: booleans. Numpy comparison ufuncs (``np.less_equal``) have overloaded call
#: signatures that no precise ``Callable`` spells, hence the ellipsis.
Comparison = Callable[..., np.ndarray]

#: Samples examined at once by the short-range searches before falling back
#: to an exact per-segment scan.
_PROBE = 96


def seg_argext(x: np.ndarray, starts: np.ndarray, ends: np.ndarray, *, largest: bool) -> np.ndarray:
    """Index of the first maximum (``largest``) or minimum of ``x[s:e]`` per segment.

    Empty segments give -1, as do segments that are all NaN. The extreme
    value comes from one ``reduceat`` over ``x`` itself (no gathered copy of
    the segments, which can span whole sweeps); its position from the
    probe-then-scan search of :func:`first_where`, since peaks sit a few
    samples after their segment's start.
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    out = np.full(starts.shape, -1, dtype=np.int64)
    ok = ends > starts
    if not ok.any():
        return out
    s, e = starts[ok], ends[ok]
    ufunc = np.fmax if largest else np.fmin  # ignore NaN like a finite search would
    xr = x if e.max() < x.size else np.append(x, np.nan)  # reduceat needs in-range indices
    idx = np.empty(2 * s.size, dtype=np.int64)
    idx[0::2] = s
    idx[1::2] = e
    ext = ufunc.reduceat(xr, idx)[0::2]
    # NaN (all-NaN segment) never compares equal: -1, as documented
    pos = _probe(x, s, e, np.equal, ext, backward=False)
    # Segments whose extreme lies past the probe: one argmax/argmin each (it
    # stops at the first NaN, so a NaN-holding segment takes the equality scan).
    arg = np.ndarray.argmax if largest else np.ndarray.argmin
    for i in np.flatnonzero((pos < 0) & (e - s > _PROBE)):
        a = int(s[i])
        j = a + int(arg(x[a : e[i]]))
        pos[i] = j if x[j] == ext[i] else _scan(x, a, int(e[i]), np.equal, ext[i], backward=False)
    out[ok] = pos
    return out


def seg_min(x: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Minimum of ``x[s:e]`` per segment; +inf for empty segments."""
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    out = np.full(starts.shape, np.inf)
    ok = ends > starts
    if not ok.any():
        return out
    s, e = starts[ok], ends[ok]
    idx = np.empty(2 * s.size, dtype=np.int64)
    idx[0::2] = s
    idx[1::2] = e
    if e.max() >= x.size:  # reduceat needs in-range indices (any segment, not the last)
        x = np.append(x, np.nan)
    out[ok] = np.fmin.reduceat(x, idx)[0::2]
    return out


def first_where(
    x: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    cond: Comparison,
    *,
    thresholds: np.ndarray | None = None,
) -> np.ndarray:
    """First index ``j`` in ``[s, e)`` with ``cond(x[j], thr)`` true, else -1.

    ``cond`` takes the gathered values (and, if ``thresholds`` is given, a
    per-segment threshold broadcast as a column) and returns booleans. Most
    hits are within a few samples of ``s``: those are found with one gather;
    the rest get an exact scan.
    """
    return _search(x, starts, ends, cond, thresholds, backward=False)


def last_where(
    x: np.ndarray,
    lows: np.ndarray,
    highs: np.ndarray,
    cond: Comparison,
    *,
    thresholds: np.ndarray | None = None,
) -> np.ndarray:
    """Largest index ``j`` in ``(low, high]`` with the condition true, else -1."""
    return _search(x, highs, lows, cond, thresholds, backward=True)


def _search(
    x: np.ndarray,
    origin: np.ndarray,
    limit: np.ndarray,
    cond: Comparison,
    thresholds: np.ndarray | None,
    *,
    backward: bool,
) -> np.ndarray:
    origin = np.asarray(origin, dtype=np.int64)
    limit = np.asarray(limit, dtype=np.int64)
    out = _probe(x, origin, limit, cond, thresholds, backward=backward)
    span = origin - limit if backward else limit - origin
    for i in np.flatnonzero((out < 0) & (span > _PROBE)):
        thr = None if thresholds is None else thresholds[i]
        out[i] = _scan(x, int(origin[i]), int(limit[i]), cond, thr, backward=backward)
    return out


def _probe(
    x: np.ndarray,
    origin: np.ndarray,
    limit: np.ndarray,
    cond: Comparison,
    thresholds: np.ndarray | None,
    *,
    backward: bool,
) -> np.ndarray:
    """The search of :func:`_search` within ``_PROBE`` samples of each origin, else -1."""
    n = origin.size
    out = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return out
    step = np.arange(_PROBE, dtype=np.int64)
    if backward:
        idx = origin[:, None] - step[None, :]
        valid = idx > limit[:, None]
    else:
        idx = origin[:, None] + step[None, :]
        valid = idx < limit[:, None]
    vals = x[np.clip(idx, 0, x.size - 1)]
    hit = (cond(vals) if thresholds is None else cond(vals, thresholds[:, None])) & valid
    found = hit.any(axis=1)
    k = hit.argmax(axis=1)
    out[found] = idx[found, k[found]]
    return out


def _scan(
    x: np.ndarray, origin: int, limit: int, cond: Comparison, thr: object, *, backward: bool
) -> int:
    """Exact search of one segment: ``(limit, origin]`` backward, ``[origin, limit)`` forward."""
    seg = x[limit + 1 : origin + 1][::-1] if backward else x[origin:limit]
    c = cond(seg) if thr is None else cond(seg, thr)
    j = int(c.argmax())  # first True (argmax of booleans stops there)
    if not c[j]:
        return -1
    return origin - j if backward else origin + j
