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
    out[ok] = first_where(x, s, e, np.equal, thresholds=ext)
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
    if idx[-1] >= x.size:  # reduceat needs in-range indices
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
    n = origin.size
    out = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return out
    step = np.arange(_PROBE, dtype=np.int64)
    if backward:
        idx = origin[:, None] - step[None, :]
        valid = idx > limit[:, None]
        span = origin - limit
    else:
        idx = origin[:, None] + step[None, :]
        valid = idx < limit[:, None]
        span = limit - origin
    vals = x[np.clip(idx, 0, x.size - 1)]
    hit = (cond(vals) if thresholds is None else cond(vals, thresholds[:, None])) & valid
    found = hit.any(axis=1)
    k = hit.argmax(axis=1)
    out[found] = idx[found, k[found]]
    for i in np.flatnonzero(~found & (span > _PROBE)):
        seg = x[limit[i] + 1 : origin[i] + 1][::-1] if backward else x[origin[i] : limit[i]]
        c = cond(seg) if thresholds is None else cond(seg, thresholds[i])
        nz = np.flatnonzero(c)
        if nz.size:
            out[i] = origin[i] - nz[0] if backward else origin[i] + nz[0]
    return out
