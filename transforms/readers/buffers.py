"""Caller-owned output buffers for the continuous readers' ``read_counts(..., out=)``.

Streaming a plate allocates one chunk per step; a fresh 40 MB array costs its page
faults again every time (more than the copy from the page cache itself), so the
detector hands its own two alternating buffers to the reader instead.
"""

from __future__ import annotations

import numpy as np

from transforms.errors import SpecError


def rows_of(out: np.ndarray | None, n_rows: int, n_cols: int, dtype: np.dtype) -> np.ndarray:
    """The first ``n_rows`` rows of ``out``, or a new ``(n_rows, n_cols)`` array.

    Raises
    ------
    SpecError
        If ``out`` has the wrong dtype, width or layout, or too few rows.
    """
    if out is None:
        return np.empty((n_rows, n_cols), dtype=dtype)
    if out.dtype != dtype or out.ndim != 2 or out.shape[1] != n_cols:
        raise SpecError(
            f"out must be a ({n_rows}+, {n_cols}) {np.dtype(dtype)} array, "
            f"got {out.shape} {out.dtype}"
        )
    if out.shape[0] < n_rows or not out.flags.c_contiguous or not out.flags.writeable:
        raise SpecError(
            f"out must be writeable, C-contiguous and hold {n_rows} rows, got {out.shape}"
        )
    return out[:n_rows]


def fill(out: np.ndarray | None, block: np.ndarray) -> np.ndarray:
    """``block`` itself, or a copy of it in the first rows of ``out`` (see :func:`rows_of`)."""
    if out is None:
        return block
    dest = rows_of(out, block.shape[0], block.shape[1], block.dtype)
    np.copyto(dest, block)
    return dest
