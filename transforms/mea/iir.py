"""A causal IIR filter as block matrix products on time-major (samples, channels) data.

A linear filter with state ``s`` (the stacked transposed-direct-form-II states of its
second-order sections, as in :func:`scipy.signal.sosfilt`) maps a block of ``B`` input
samples and the state at the block start affinely to the block's outputs and the state
at its end::

    y_k     = A x_k + C s_k        (B outputs)
    s_{k+1} = D x_k + E s_k        (n_state values)

so a whole run of blocks is one batched matrix product (``[A | C]`` times the stacked
``[x_k; s_k]`` of every block, done by BLAS on (B + n_state, channels) slabs: no
transpose) once the states ``s_k`` are known; these come from a short sequential loop
of small products ``[D | E] [x_k; s_k]``, one per block. The matrices are computed in
float64 by running ``sosfilt`` on unit inputs and states, then stored in float32.

Blocks are aligned to the start of the stream, so results do not depend on how the
stream is cut into calls as long as every call but the last covers whole blocks; they
do not depend on how channels are split between calls either, as long as the splits
fall on multiples of :data:`LANE_CHANNELS` (bit for bit, with OpenBLAS).
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable, Iterator
from typing import Final

import numpy as np
from scipy import signal

from transforms.errors import InvalidArgument

#: Default block length in samples: larger blocks cost more multiply-adds per sample
#: (B + n_state), smaller ones more Python-level steps in the state loop.
DEFAULT_BLOCK_SAMPLES: Final = 32
#: Channels per output product. BLAS rounding depends on the matrix width (its kernels
#: treat the last columns apart), so outputs are computed in lanes of a fixed width; the
#: state loop runs on a width padded to a multiple of 8, which OpenBLAS treats alike.
LANE_CHANNELS: Final = 64
_STATE_PAD: Final = 8


class BlockIIR:
    """A second-order-sections filter applied as block matrix products (float32).

    Parameters
    ----------
    sos
        Second-order sections, shape (n_sections, 6), as from :func:`scipy.signal.butter`.
    block_samples
        Block length ``B``.

    Raises
    ------
    InvalidArgument
        If ``sos`` is not (n_sections, 6) or ``block_samples`` is below 1.
    """

    def __init__(self, sos: np.ndarray, *, block_samples: int = DEFAULT_BLOCK_SAMPLES) -> None:
        sos64 = np.asarray(sos, dtype=np.float64)
        if sos64.ndim != 2 or sos64.shape[1] != 6 or len(sos64) == 0:
            raise InvalidArgument(f"BlockIIR: sos must be (n_sections, 6), got {sos64.shape}")
        if block_samples < 1:
            raise InvalidArgument(f"BlockIIR: block_samples must be >= 1, got {block_samples}")
        b = int(block_samples)
        n_state = 2 * len(sos64)
        self.sos = sos64
        self.block_samples = b
        self.n_state = n_state
        zero = np.zeros((len(sos64), 2))
        a = np.empty((b, b))
        d = np.empty((n_state, b))
        c = np.empty((b, n_state))
        e = np.empty((n_state, n_state))
        impulse = np.zeros(b)
        impulse[0] = 1.0
        y, zf = signal.sosfilt(sos64, impulse, zi=zero)
        for j in range(b):  # time invariance: column j is the impulse response shifted by j
            a[:, j] = np.r_[np.zeros(j), y[: b - j]]
            _, zf = signal.sosfilt(sos64, np.r_[np.zeros(j), 1.0, np.zeros(b - j - 1)], zi=zero)
            d[:, j] = zf.ravel()
        for k in range(n_state):
            unit = np.zeros(n_state)
            unit[k] = 1.0
            y, zf = signal.sosfilt(sos64, np.zeros(b), zi=unit.reshape(zero.shape))
            c[:, k] = y
            e[:, k] = zf.ravel()
        #: (B, B + n_state): outputs of a block from [x_k; s_k].
        self.output_matrix = np.ascontiguousarray(np.hstack([a, c]), dtype=np.float32)
        #: (n_state, B + n_state): state at the block end from [x_k; s_k].
        self.state_matrix = np.ascontiguousarray(np.hstack([d, e]), dtype=np.float32)

    def initial_state(self, first: np.ndarray) -> np.ndarray:
        """(n_state, channels) steady state for a constant input equal to ``first``."""
        zi = signal.sosfilt_zi(self.sos).reshape(-1)  # same layout as the state vector
        return np.ascontiguousarray(
            zi[:, None] * np.asarray(first, dtype=np.float64)[None, :], dtype=np.float32
        )

    def workspace(self, n_samples: int, n_channels: int) -> np.ndarray:
        """A buffer for :meth:`apply` on up to ``n_samples`` x ``n_channels``."""
        n_blocks = -(-n_samples // self.block_samples)
        width = -(-n_channels // _STATE_PAD) * _STATE_PAD
        work = np.empty((n_blocks + 1, self.block_samples + self.n_state, width), np.float32)
        work[:, :, n_channels:] = 0.0  # padding channels stay zero
        return work

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
            Input block, any real dtype (int16 counts are converted on the fly); may be
            a strided column slice.
        state
            (n_state, channels) state at the first sample of ``x``.
        out
            C-contiguous float32 (rows, channels) with ``rows`` = ``len(x)`` rounded up to
            whole blocks; receives the output (rows past ``len(x)`` are the response to
            zero padding).
        work
            Optional buffer from :meth:`workspace` (reused between calls).

        Returns
        -------
        numpy.ndarray
            (n_state, channels) float32 state after the last block. When ``len(x)`` is not
            a multiple of the block length the input is zero-padded and this state is
            only meaningful as the end of the stream.

        Raises
        ------
        InvalidArgument
            On mismatched shapes.
        """
        n, n_ch = x.shape
        b, ns = self.block_samples, self.n_state
        n_blocks = -(-n // b)
        if state.shape != (ns, n_ch):
            raise InvalidArgument(f"BlockIIR.apply: state {state.shape}, expected {(ns, n_ch)}")
        if out.shape != (n_blocks * b, n_ch) or out.dtype != np.float32:
            raise InvalidArgument(f"BlockIIR.apply: out must be float32 {(n_blocks * b, n_ch)}")
        if not out.flags.c_contiguous:
            raise InvalidArgument("BlockIIR.apply: out must be C-contiguous")
        width = -(-n_ch // _STATE_PAD) * _STATE_PAD
        if work is None or work.shape[0] < n_blocks + 1 or work.shape[1:] != (b + ns, width):
            work = self.workspace(n, n_ch)
        zp = work[: n_blocks + 1]  # padded width, for the state loop
        z = zp[:, :, :n_ch]
        full = n // b
        if full:
            np.copyto(z[:full, :b], x[: full * b].reshape(full, b, n_ch), casting="unsafe")
        if n_blocks > full:  # a last partial block: zero-padded
            z[full, :b] = 0.0
            np.copyto(z[full, : n - full * b], x[full * b :], casting="unsafe")
        z[0, b:] = state
        m = self.state_matrix
        for k in range(n_blocks):  # the only sequential part: n_state values per channel
            np.matmul(m, zp[k], out=zp[k + 1, b:])
        y = out.reshape(n_blocks, b, n_ch)
        for c in range(0, n_ch, LANE_CHANNELS):
            lane = slice(c, min(n_ch, c + LANE_CHANNELS))
            np.matmul(self.output_matrix, z[:n_blocks, :, lane], out=y[:, :, lane])
        return z[n_blocks, b:].copy()


def _openblas_threads_api() -> tuple[Callable[[], int], Callable[[int], object]] | None:
    # NumPy wheels bundle scipy-openblas; find the loaded copy and its thread setters.
    try:
        with open("/proc/self/maps") as fh:
            paths = {ln.split()[-1] for ln in fh if "openblas" in ln and "/" in ln}
    except OSError:
        return None
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "")):
            getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if getter is not None and setter is not None:
                getter.restype = ctypes.c_int
                setter.argtypes = [ctypes.c_int]
                return getter, setter
    return None


@contextlib.contextmanager
def blas_threads(n_threads: int) -> Iterator[bool]:
    """Limit OpenBLAS (as bundled with NumPy) to ``n_threads`` inside the block.

    Yields whether the limit could be applied (False for another BLAS, which then keeps
    its own setting). The previous setting is restored on exit.
    """
    api = _openblas_threads_api()
    if api is None:
        yield False
        return
    getter, setter = api
    before = int(getter())
    setter(int(n_threads))
    try:
        yield True
    finally:
        setter(before)


class ZeroPhaseIIR:
    """A zero-phase (backward-forward) IIR filter for streams, delayed by ``delay_samples``.

    Each :meth:`apply` runs the filter backward (anti-causally) over the new input and
    the ``delay_samples`` of input held back from the previous call, starting from a
    zero state at the newest sample, then forward (causally, its state carried exactly
    as in :class:`BlockIIR`) over the backward outputs that are final: those at least
    ``delay_samples`` before the newest sample. The output stream is the zero-phase
    filtered input delayed by ``delay_samples`` (the caller shifts times back and pads
    the end of the stream). Where the backward pass starts is where its truncation error
    sits: it decays as the filter's impulse response, so ``delay_samples`` should cover
    many time constants of the lowest corner (the result then depends on the chunking
    only far below float32 resolution, not bit for bit).

    The interface is :class:`BlockIIR`'s; the state rows are the forward pass's state
    followed by the held-back input.

    Parameters
    ----------
    sos
        Second-order sections of the filter run in both directions; the magnitude
        response of the result is its square.
    delay_samples
        Release delay, rounded up to whole blocks.
    block_samples
        Block length of the underlying :class:`BlockIIR`.
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
        self.causal = BlockIIR(sos, block_samples=block_samples)
        self.sos = self.causal.sos
        self.block_samples = self.causal.block_samples
        b = self.block_samples
        #: Samples the output lags the input by (a whole number of blocks).
        self.delay_samples = -(-int(delay_samples) // b) * b
        self.n_state = self.causal.n_state + self.delay_samples
        self._local = threading.local()

    def initial_state(self, first: np.ndarray) -> np.ndarray:
        """Zero forward state, and ``first`` held back as if it had lasted forever."""
        first = np.asarray(first, dtype=np.float32)
        state = np.zeros((self.n_state, len(first)), np.float32)
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
        earlier (rows as for :meth:`BlockIIR.apply`). Returns the new state."""
        n = len(x)
        n_rows, n_ch = out.shape
        ns, d = self.causal.n_state, self.delay_samples
        if state.shape != (self.n_state, n_ch):
            raise InvalidArgument(
                f"ZeroPhaseIIR.apply: state {state.shape}, expected {(self.n_state, n_ch)}"
            )
        held = state[ns:]
        back = self._buffer(d + n_rows, n_ch)  # backward outputs, newest sample first
        zero = np.zeros((ns, n_ch), np.float32)
        if n == n_rows:  # whole blocks: no copy of the input
            s_back = self.causal.apply(x[::-1], zero, out=back[:n_rows], work=work)
            self.causal.apply(held[::-1], s_back, out=back[n_rows:], work=work)
        else:  # the stream's last, partial call: pad with its last sample
            joined = np.empty((d + n_rows, n_ch), np.float32)
            joined[:d] = held
            joined[d : d + n] = x
            joined[d + n :] = x[-1] if n else held[-1]
            self.causal.apply(joined[::-1], zero, out=back, work=work)
        # back[k] is the sample k before the newest; the final ones, oldest first:
        final = back[d : d + n_rows][::-1]
        fwd = self.causal.apply(final, np.ascontiguousarray(state[:ns]), out=out, work=work)
        new_state = np.empty((self.n_state, n_ch), np.float32)
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
