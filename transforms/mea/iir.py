"""Causal IIR filters (second-order sections) on time-major (samples, channels) data.

The filter is :func:`scipy.signal.sosfilt`'s: each section in transposed direct form
II, run sample by sample, with its state carried from call to call. The loop is a
compiled kernel (numba, ``nogil``: channel groups filter in parallel threads) that
converts the input (int16 ADC counts, or floats) on the fly, runs the sections in
float64 with the channels in the inner loop (SIMD across channels), and writes float32.

Every channel is computed on its own, by the same sequence of IEEE float64 operations
(no ``fastmath``: no reassociation, no contraction into fused multiply-adds), so the
output does not depend on how the stream is cut into calls, how channels are grouped,
nor on the x86-64 CPU's vector width: bit for bit.

The kernel is :func:`transforms.mea.kernels.sos_rows` (compiled on first use, cached on disk).
"""

from __future__ import annotations

import threading
from typing import Final

import numpy as np
from numpy.lib.stride_tricks import as_strided
from scipy import signal

from transforms.errors import InvalidArgument

#: Call granularity in samples: the detector cuts the stream into whole blocks and the
#: zero-phase filter's delay is a whole number of blocks. The causal filter itself
#: does not depend on it.
DEFAULT_BLOCK_SAMPLES: Final = 32
#: Channels per lane: channel groups (threads, split plates) are cut at multiples of
#: it. The output of a channel does not depend on its group.
LANE_CHANNELS: Final = 64
#: Sample types the kernel reads as they are (native byte order); others go through float64.
_KERNEL_TYPES: Final = "bBhHiIlLqQfd"


def _flat_rows(x: np.ndarray, *, writable: bool = False) -> tuple[np.ndarray, int, int]:
    """``x`` (rows, channels) as a 1-D array, the offset of its first row and the
    signed row stride, all in elements, without a copy when the channels of each row
    are contiguous (a column slice or a reversed view of a C-contiguous array); other
    inputs are copied (read only), other outputs refused."""
    if not writable and (not x.dtype.isnative or x.dtype.char not in _KERNEL_TYPES):
        x = x.astype(np.float64)  # big-endian or float16 samples: exact in float64
    n, m = x.shape
    size = x.itemsize
    if n == 0 or m == 0:
        return np.zeros(1, x.dtype), 0, 0
    s0, s1 = x.strides
    if (m > 1 and s1 != size) or s0 % size:
        if writable:
            raise InvalidArgument("SosIIR.apply: out rows must hold contiguous channels")
        x = np.ascontiguousarray(x)
        s0 = x.strides[0]
    if n == 1:
        s0 = m * size
    stride = s0 // size
    low = x if stride >= 0 else x[::-1]  # the row at the lowest address first
    extent = (n - 1) * abs(stride) + m
    flat = as_strided(low, shape=(extent,), strides=(size,), writeable=writable)
    return flat, (0 if stride >= 0 else (n - 1) * -stride), stride


class SosIIR:
    """A causal second-order-sections filter for streams (compiled, float64 inside).

    Parameters
    ----------
    sos
        Second-order sections, shape (n_sections, 6), as from :func:`scipy.signal.butter`.
    block_samples
        Call granularity (see :data:`DEFAULT_BLOCK_SAMPLES`).

    Raises
    ------
    InvalidArgument
        If ``sos`` is not (n_sections, 6) with nonzero ``a0``, or ``block_samples`` is
        below 1.
    """

    def __init__(self, sos: np.ndarray, *, block_samples: int = DEFAULT_BLOCK_SAMPLES) -> None:
        sos64 = np.array(sos, dtype=np.float64)
        if sos64.ndim != 2 or sos64.shape[1] != 6 or len(sos64) == 0:
            raise InvalidArgument(f"SosIIR: sos must be (n_sections, 6), got {sos64.shape}")
        if not np.all(sos64[:, 3] != 0):
            raise InvalidArgument("SosIIR: every section needs a nonzero a0")
        if block_samples < 1:
            raise InvalidArgument(f"SosIIR: block_samples must be >= 1, got {block_samples}")
        sos64 /= sos64[:, 3:4]  # as sosfilt: a0 = 1
        self.sos = np.ascontiguousarray(sos64)
        self.block_samples = int(block_samples)
        self.n_state = 2 * len(sos64)

    def initial_state(self, first: np.ndarray) -> np.ndarray:
        """(n_state, channels) float64 steady state for a constant input equal to ``first``."""
        zi = signal.sosfilt_zi(self.sos).reshape(-1)  # same layout as the state rows
        return np.ascontiguousarray(zi[:, None] * np.asarray(first, dtype=np.float64)[None, :])

    def workspace(self, n_samples: int, n_channels: int) -> np.ndarray:
        """A buffer for :meth:`apply` on up to ``n_channels`` (one float64 row)."""
        del n_samples  # the kernel works row by row
        return np.empty(n_channels, np.float64)

    def apply(
        self,
        x: np.ndarray,
        state: np.ndarray,
        *,
        out: np.ndarray,
        work: np.ndarray | None = None,
    ) -> np.ndarray:
        """Filter ``x`` (samples, channels) starting from ``state``; return the new state.

        Parameters
        ----------
        x
            Input, any real dtype (int16 counts are converted on the fly); may be a
            column slice or a reversed view (read in place).
        state
            (n_state, channels) state at the first sample of ``x``.
        out
            Float32 (rows, channels), ``rows`` = ``len(x)`` or ``len(x)`` rounded up to
            whole blocks; rows past ``len(x)`` get the response to zero input (the
            returned state is then after them). Each row's channels must be contiguous
            (a column slice or a reversed view is written in place).
        work
            Optional buffer from :meth:`workspace` (reused between calls).

        Returns
        -------
        numpy.ndarray
            (n_state, channels) float64 state after the last row of ``out``.

        Raises
        ------
        InvalidArgument
            On mismatched shapes or dtypes.
        """
        n, n_ch = x.shape
        b = self.block_samples
        if state.shape != (self.n_state, n_ch):
            raise InvalidArgument(
                f"SosIIR.apply: state {state.shape}, expected {(self.n_state, n_ch)}"
            )
        if out.shape not in ((n, n_ch), (-(-n // b) * b, n_ch)) or out.dtype != np.float32:
            raise InvalidArgument(f"SosIIR.apply: out must be float32 ({n} rows, {n_ch})")
        if not out.flags.writeable:
            raise InvalidArgument("SosIIR.apply: out must be writable")
        if x.dtype.kind not in "iuf":
            raise InvalidArgument(f"SosIIR.apply: x must be real numbers, got {x.dtype}")
        z = np.array(state, dtype=np.float64, order="C")  # the kernel updates it in place
        if work is None or work.shape != (n_ch,) or work.dtype != np.float64:
            work = self.workspace(n, n_ch)
        if n_ch:
            from transforms.mea.kernels import sos_rows  # numba, on first use

            sos_rows(*_flat_rows(x), n, self.sos, z, work, *_flat_rows(out[:n], writable=True))
            if len(out) > n:  # zero input past the end
                zeros = np.zeros((len(out) - n, n_ch), x.dtype)
                rest = _flat_rows(out[n:], writable=True)
                sos_rows(*_flat_rows(zeros), len(out) - n, self.sos, z, work, *rest)
        return z


class ZeroPhaseIIR:
    """A zero-phase (backward-forward) IIR filter for streams, delayed by ``delay_samples``.

    Each :meth:`apply` runs the filter backward (anti-causally) over the new input and
    the ``delay_samples`` of input held back from the previous call, starting from a
    zero state at the newest sample, then forward (causally, its state carried exactly
    as in :class:`SosIIR`) over the backward outputs that are final: those at least
    ``delay_samples`` before the newest sample. The output stream is the zero-phase
    filtered input delayed by ``delay_samples`` (the caller shifts times back and pads
    the end of the stream). Where the backward pass starts is where its truncation error
    sits: it decays as the filter's impulse response, so ``delay_samples`` should cover
    many time constants of the lowest corner (the result then depends on the chunking
    only far below float32 resolution, not bit for bit).

    The interface is :class:`SosIIR`'s; the state rows are the forward pass's state
    followed by the held-back input (float64). The backward outputs are rounded to
    float32 before the forward pass.

    Parameters
    ----------
    sos
        Second-order sections of the filter run in both directions; the magnitude
        response of the result is its square.
    delay_samples
        Release delay, rounded up to whole blocks.
    block_samples
        Call granularity of the underlying :class:`SosIIR`.
    """

    def __init__(
        self,
        sos: np.ndarray,
        *,
        delay_samples: int,
        block_samples: int = DEFAULT_BLOCK_SAMPLES,
    ) -> None:
        if delay_samples < 1:
            raise InvalidArgument(f"ZeroPhaseIIR: delay_samples must be >= 1, got {delay_samples}")
        self.causal = SosIIR(sos, block_samples=block_samples)
        self.sos = self.causal.sos
        self.block_samples = self.causal.block_samples
        b = self.block_samples
        #: Samples the output lags the input by (a whole number of blocks).
        self.delay_samples = -(-int(delay_samples) // b) * b
        self.n_state = self.causal.n_state + self.delay_samples
        self._local = threading.local()

    def initial_state(self, first: np.ndarray) -> np.ndarray:
        """Zero forward state, and ``first`` held back as if it had lasted forever."""
        first = np.asarray(first, dtype=np.float64)
        state = np.zeros((self.n_state, len(first)), np.float64)
        state[self.causal.n_state :] = first[None, :]
        return state

    def workspace(self, n_samples: int, n_channels: int) -> np.ndarray:
        """A buffer for :meth:`apply` on up to ``n_samples`` x ``n_channels``."""
        return self.causal.workspace(n_samples + self.delay_samples, n_channels)

    def apply(
        self,
        x: np.ndarray,
        state: np.ndarray,
        *,
        out: np.ndarray,
        work: np.ndarray | None = None,
    ) -> np.ndarray:
        """Filter ``x`` (samples, channels); ``out`` gets the output ``delay_samples``
        earlier (rows as for :meth:`SosIIR.apply`). Returns the new state."""
        n = len(x)
        n_rows, n_ch = out.shape
        ns, d = self.causal.n_state, self.delay_samples
        if state.shape != (self.n_state, n_ch):
            raise InvalidArgument(
                f"ZeroPhaseIIR.apply: state {state.shape}, expected {(self.n_state, n_ch)}"
            )
        held = state[ns:]
        # backward outputs in time order: the held-back input's, then the new input's
        back = self._buffer(d + n_rows, n_ch)
        zero = np.zeros((ns, n_ch), np.float64)
        if n == n_rows:  # whole blocks: no copy of the input
            s_back = self.causal.apply(x[::-1], zero, out=back[d:][::-1], work=work)
            self.causal.apply(held[::-1], s_back, out=back[:d][::-1], work=work)
        else:  # the stream's last, partial call: pad with its last sample
            joined = np.empty((d + n_rows, n_ch), np.float64)
            joined[:d] = held
            joined[d : d + n] = x
            joined[d + n :] = x[-1] if n else held[-1]
            self.causal.apply(joined[::-1], zero, out=back[::-1], work=work)
        # the final backward outputs: those at least d samples before the newest
        fwd = self.causal.apply(back[:n_rows], state[:ns], out=out, work=work)
        new_state = np.empty((self.n_state, n_ch), np.float64)
        new_state[:ns] = fwd
        if n >= d:
            new_state[ns:] = x[n - d :]
        else:
            new_state[ns : ns + d - n] = held[n:]
            new_state[ns + d - n :] = x
        return new_state

    def _buffer(self, n_rows: int, n_ch: int) -> np.ndarray:
        # Per thread (channel groups filter in parallel), reused while the shape holds:
        # a chunk-sized array allocated per call costs more than the backward pass.
        local = self._local.__dict__
        key = (n_rows, n_ch)
        if local.get("key") != key:
            local["key"] = key
            local["buf"] = np.empty((n_rows, n_ch), np.float32)
        buf: np.ndarray = local["buf"]
        return buf
