"""Compiled kernels for the MEA detector: how they are compiled and cached.

Kernels are compiled with numba on first use, ``nogil`` (channel groups run them in
parallel threads) and without ``fastmath`` (IEEE arithmetic, no reassociation nor
fused multiply-adds: the same numbers on every x86-64 CPU). They are cached on disk
(``cache=True``): next to the package, or, where it is read-only, in
``$NUMBA_CACHE_DIR`` (else numba's per-user cache directory).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

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
