"""Streaming threshold spike detection for MEA plates, and the MEA spike-table convention.

The detector is the classic one (Quiroga et al. 2004): a causal Butterworth band-pass
(a compiled second-order-sections kernel on the time-major data, :mod:`transforms.mea.iir`,
with its state carried from chunk to chunk), a per-channel threshold of
``k`` noise sigmas with sigma = MAD / 0.6745 estimated on an initial window of the
filtered trace, a crossing rule (the sample goes past the threshold after being inside
it), the spike placed at the filtered trace's extreme within a short window after the
crossing, a dead time after each accepted spike, and the rejection of the filter's
ringing (small same-sign ripples shortly after a large spike; see
:class:`DetectionParams`).

Chunks are processed so that the result does not depend on the chunk size: the filter
state and the last accepted spike of each channel are carried over, crossings whose
peak-search window would reach past the chunk are left for the next one (the last few
filtered samples are carried with them), so no spike is lost or doubled at a border.
Chunks hold whole filter blocks, aligned to the recording start. Channels are split
into groups filtered in parallel threads (the kernel releases the GIL), and only one
chunk of the plate is in memory at a time.

Spikes travel as a :class:`pyarrow.Table` with :data:`MEA_SPIKE_SCHEMA`: ``electrode``
(``A1_23``), ``well`` (``A1``), ``time_s`` (float64, from recording start) and
``amplitude_uv`` (float32, signed peak of the filtered trace, nullable), sorted by
``time_s``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
import pyarrow as pa
from scipy import signal

from transforms.errors import InvalidArgument
from transforms.mea.iir import LANE_CHANNELS, SosIIR, ZeroPhaseIIR
from transforms.recording.continuous import ArraySource, ContinuousBase, ContinuousSource, fill
from transforms.recording.spikes import coded_spikes_table, spikes_table

#: Schema-metadata key under which :func:`detect_spikes` stores its parameters (JSON).
PARAMS_METADATA_KEY: Final = b"neurocyte.detection_params"
#: Schema-metadata key holding the per-electrode noise sigma in µV (JSON object).
NOISE_METADATA_KEY: Final = b"neurocyte.noise_sigma_uv"

#: A streaming filter of the detector: causal or zero-phase (same interface).
StreamFilter = SosIIR | ZeroPhaseIIR

_MAD_TO_SIGMA: Final = 0.6745
_R = TypeVar("_R")
_DECIMATE: Final = 8  # the noise estimate keeps every 8th filtered sample
_NOISE_CHUNK_S: Final = 2.0  # the noise window is filtered in chunks of this length


@dataclass(frozen=True)
class DetectionParams:
    """Parameters of the threshold detector (stored with results via :meth:`as_dict`).

    Attributes
    ----------
    band_low_hz, band_high_hz
        Band-pass corners of the causal Butterworth filter.
    filter_order
        Butterworth order (the band-pass has twice as many poles).
    threshold_k
        Threshold in noise sigmas (sigma = MAD / 0.6745 of the filtered trace).
    noise_window_s
        Length of the initial window on which sigma is estimated per channel.
    dead_time_ms
        A crossing closer than this to the previous spike's peak is ignored.
    ripple_window_ms, ripple_ratio
        Filter-ringing rejection: a crossing within ``ripple_window_ms`` of the previous
        spike's peak is ignored if its peak is below ``ripple_ratio`` times that spike's
        amplitude. The causal band-pass rings: the default filter turns a trough into a
        same-sign ripple of ~13% of its depth ~1.5 ms later, which crosses a 6-sigma
        threshold once spikes are large (SNR of 20 and more) and a fixed dead time long
        enough to cover it would also drop real spikes of a burst. Only a spike less than
        a third of its predecessor is doubted; set ``ripple_ratio`` to 0 to disable.
    peak_window_ms
        The spike is the extreme of the filtered trace within this window after the
        crossing.
    polarity
        ``negative`` (troughs, default), ``positive`` or ``both``.
    profile
        The detection profile these parameters come from (:func:`profile_params`):
        ``default``, ``axis`` or ``sensitive``; ``custom`` for hand-made parameters.
    filter_design
        ``butter_bandpass``: one Butterworth band-pass of ``filter_order``
        (today's default); ``butter_cascade``: a Butterworth high-pass of
        ``filter_order`` poles at ``band_low_hz`` and a low-pass of ``lowpass_order``
        poles at ``band_high_hz`` (AxIS 2's stated poles); ``iir_kaiser``: a
        Butterworth high-pass of ``filter_order`` at ``band_low_hz`` and a
        Kaiser-window FIR low-pass (``fir_taps`` taps, ``kaiser_beta``) at
        ``band_high_hz`` (AxIS 3's ``200 Hz IIR`` / ``3 kHz Kaiser Window``).
    zero_phase, zero_phase_delay_ms
        Run the filter forward and backward (zero phase: troughs stay where and as
        deep as they are), streamed with a release delay of ``zero_phase_delay_ms``
        (:class:`~transforms.mea.iir.ZeroPhaseIIR`); spike times are corrected for it.
    """

    band_low_hz: float = 200.0
    band_high_hz: float = 3000.0
    filter_order: int = 2
    threshold_k: float = 6.0
    noise_window_s: float = 10.0
    dead_time_ms: float = 1.0
    ripple_window_ms: float = 3.0
    ripple_ratio: float = 0.3
    peak_window_ms: float = 0.5
    polarity: Literal["negative", "positive", "both"] = "negative"
    profile: str = "default"
    filter_design: Literal["butter_bandpass", "butter_cascade", "iir_kaiser"] = "butter_bandpass"
    lowpass_order: int = 2
    fir_taps: int = 31
    kaiser_beta: float = 5.0
    zero_phase: bool = False
    zero_phase_delay_ms: float = 40.0

    def __post_init__(self) -> None:
        if not 0 < self.band_low_hz < self.band_high_hz:
            raise InvalidArgument(
                f"band must satisfy 0 < low < high, got {self.band_low_hz}, {self.band_high_hz} Hz"
            )
        if not 1 <= self.filter_order <= 8:
            raise InvalidArgument(f"filter_order must be 1-8, got {self.filter_order}")
        if not (math.isfinite(self.threshold_k) and self.threshold_k > 0):
            raise InvalidArgument(f"threshold_k must be positive, got {self.threshold_k}")
        if not self.noise_window_s > 0:
            raise InvalidArgument(f"noise_window_s must be positive, got {self.noise_window_s}")
        if not (self.dead_time_ms >= 0 and self.peak_window_ms > 0):
            raise InvalidArgument("dead_time_ms must be >= 0 and peak_window_ms > 0")
        if not (self.ripple_window_ms >= 0 and 0 <= self.ripple_ratio < 1):
            raise InvalidArgument("ripple_window_ms must be >= 0 and 0 <= ripple_ratio < 1")
        if self.polarity not in ("negative", "positive", "both"):
            raise InvalidArgument(f"polarity must be negative, positive or both: {self.polarity!r}")
        if self.filter_design not in ("butter_bandpass", "butter_cascade", "iir_kaiser"):
            raise InvalidArgument(f"unknown filter_design {self.filter_design!r}")
        if not 1 <= self.lowpass_order <= 8:
            raise InvalidArgument(f"lowpass_order must be 1-8, got {self.lowpass_order}")
        if not (3 <= self.fir_taps <= 255 and self.fir_taps % 2 == 1 and self.kaiser_beta >= 0):
            raise InvalidArgument(
                f"fir_taps must be odd, 3-255, and kaiser_beta >= 0 ({self.fir_taps}, "
                f"{self.kaiser_beta})"
            )
        if not (math.isfinite(self.zero_phase_delay_ms) and self.zero_phase_delay_ms > 0):
            raise InvalidArgument(
                f"zero_phase_delay_ms must be positive, got {self.zero_phase_delay_ms}"
            )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def sos(self, sampling_rate_hz: float) -> np.ndarray:
        """The band-pass as second-order sections at ``sampling_rate_hz``."""
        if not self.band_high_hz < sampling_rate_hz / 2:
            raise InvalidArgument(
                f"band_high_hz {self.band_high_hz} must be below Nyquist "
                f"({sampling_rate_hz / 2} Hz)"
            )
        fs = sampling_rate_hz
        if self.filter_design == "butter_bandpass":
            return np.asarray(
                signal.butter(
                    self.filter_order,
                    [self.band_low_hz, self.band_high_hz],
                    btype="bandpass",
                    fs=fs,
                    output="sos",
                )
            )
        high = signal.butter(self.filter_order, self.band_low_hz, "highpass", fs=fs, output="sos")
        if self.filter_design == "butter_cascade":
            low = signal.butter(
                self.lowpass_order, self.band_high_hz, "lowpass", fs=fs, output="sos"
            )
        else:
            taps = signal.firwin(
                self.fir_taps, self.band_high_hz, window=("kaiser", self.kaiser_beta), fs=fs
            )
            low = signal.tf2sos(taps, [1.0])
        return np.vstack([high, low])

    def output_delay_samples(self, sampling_rate_hz: float) -> int:
        """Samples the filtered trace lags the input by, corrected in spike times: the
        zero-phase filter's release delay, a Kaiser FIR's constant group delay
        ((taps - 1) / 2), else 0 (the causal Butterworth filters are left as they are)."""
        if self.zero_phase:
            filt = self.make_filter(sampling_rate_hz)
            return filt.delay_samples if isinstance(filt, ZeroPhaseIIR) else 0
        if self.filter_design == "iir_kaiser":
            return (self.fir_taps - 1) // 2
        return 0

    def make_filter(self, sampling_rate_hz: float) -> SosIIR | ZeroPhaseIIR:
        """The streaming filter: causal (:class:`~transforms.mea.iir.SosIIR`) or zero-phase."""
        sos = self.sos(sampling_rate_hz)
        if not self.zero_phase:
            return SosIIR(sos)
        delay = max(1, round(self.zero_phase_delay_ms * 1e-3 * sampling_rate_hz))
        return ZeroPhaseIIR(sos, delay_samples=delay)


class _ChannelGroup:
    """Detector state of a group of channels: filter state, threshold, carried tail."""

    def __init__(
        self,
        local_cols: np.ndarray,
        block_cols: np.ndarray,
        filt: StreamFilter,
        state: np.ndarray,
        threshold: np.ndarray,
        sign: float,
        both: bool,
        window: int,
        dead: int,
        ripple: int,
        ripple_ratio: float,
    ) -> None:
        self.local_cols = local_cols  # positions among the detector's selected columns
        self.block_cols = block_cols  # columns of the blocks handed to step()
        self.filt = filt
        self.state = state
        self.threshold = np.ascontiguousarray(threshold, dtype=np.float32)
        self.sign = sign  # +1: look for maxima of y, -1: minima (in stored units)
        self.both = both
        self.window = window
        self.dead = dead
        self.ripple = ripple
        self.ripple_ratio = ripple_ratio
        n = len(local_cols)
        self.tail = np.zeros((1, n), dtype=np.float32)  # y at global sample p - 1
        self.p = 0  # first global sample whose crossing has not been examined
        self.last_peak = np.full(n, -(1 << 40), dtype=np.int64)
        self.last_amp = np.zeros(n, dtype=np.float32)  # |amplitude| of the last kept spike
        self.work: np.ndarray | None = None
        self.ybuf: np.ndarray | None = None
        self.cross_rows = np.empty(1 << 14, dtype=np.int64)  # grown as needed
        self.cross_chs = np.empty(1 << 14, dtype=np.int64)

    def _score(self, y: np.ndarray) -> np.ndarray:
        return np.abs(y) if self.both else y * np.float32(self.sign)

    def step(self, block: np.ndarray, end: int, final: bool) -> tuple[np.ndarray, ...]:
        """Filter ``block`` (samples, all columns) ending at global sample ``end``."""
        sub = _columns(block, self.block_cols)
        n_rows, n_ch = sub.shape
        b = self.filt.block_samples
        padded = -(-n_rows // b) * b
        w = self.window
        if self.ybuf is None or self.ybuf.shape[0] != w + padded:
            self.ybuf = np.empty((w + padded, n_ch), dtype=np.float32)
            self.work = self.filt.workspace(padded, n_ch)
        # filtered rows go after room for the carried tail: no concatenation copy
        self.state = self.filt.apply(sub, self.state, out=self.ybuf[w:], work=self.work)
        n_tail = self.tail.shape[0]
        self.ybuf[w - n_tail : w] = self.tail
        buf = self.ybuf[w - n_tail : w + n_rows]
        base = self.p - 1  # global sample of buf[0]
        limit = end if final else end - w + 1
        limit = max(limit, self.p)
        ch, row = self._crossings(buf[: limit - base])
        out = self._peaks(buf, ch, row, base)
        self.tail = buf[limit - 1 - base :].copy()
        self.p = limit
        return out

    def _crossings(self, seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(channel, row) of the rows ``r >= 1`` of ``seg`` past the threshold whose row
        ``r - 1`` is inside it, sorted by channel, then row."""
        from transforms.mea.kernels import crossings  # numba, on first use

        sign = np.float32(self.sign)
        while True:
            n = crossings(seg, self.threshold, sign, self.both, self.cross_rows, self.cross_chs)
            if n >= 0:
                break
            self.cross_rows = np.empty(4 * len(self.cross_rows), dtype=np.int64)
            self.cross_chs = np.empty(4 * len(self.cross_chs), dtype=np.int64)
        ch, row = self.cross_chs[:n], self.cross_rows[:n]
        order = np.argsort(ch, kind="stable")  # found row by row: rows ascend per channel
        return ch[order], row[order]

    def _peaks(
        self, buf: np.ndarray, ch: np.ndarray, local: np.ndarray, base: int
    ) -> tuple[np.ndarray, ...]:
        if len(ch) == 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, np.empty(0, dtype=np.float32)
        idx = local[:, None] + np.arange(self.window)
        np.minimum(idx, buf.shape[0] - 1, out=idx)  # only the final chunk is short
        win = buf[idx, ch[:, None]]
        peak_local = local + np.argmax(self._score(win), axis=1)
        amp = buf[peak_local, ch]
        cross = local + base
        peak = peak_local + base
        keep = self._dead_time(ch, cross, peak, np.abs(amp))
        return ch[keep], peak[keep], amp[keep]

    def _dead_time(
        self, ch: np.ndarray, cross: np.ndarray, peak: np.ndarray, mag: np.ndarray
    ) -> np.ndarray:
        # Crossings come sorted by (channel, sample). A crossing is dropped if it falls
        # within the dead time of the last kept peak of its channel, or within the ripple
        # window of it with a peak below ripple_ratio of that spike. Only crossings that
        # could be dropped against *some* earlier candidate (a superset) are resolved one
        # by one, in order, against the last kept spike.
        order_key = ch.astype(np.int64) << 40
        prev_peak = np.maximum.accumulate(order_key + peak) - order_key
        # running max of |amplitude| within each channel: offset channels apart
        span = 2.0 * float(max(mag.max(), self.last_amp.max())) + 1.0
        mag_key = ch.astype(np.float64) * span
        prev_mag = (np.maximum.accumulate(mag_key + mag) - mag_key) * (1 + 1e-9)
        first = np.ones(len(ch), dtype=bool)
        first[1:] = ch[1:] != ch[:-1]
        carried_peak = self.last_peak[ch]
        carried_mag = self.last_amp[ch].astype(np.float64)
        shifted_peak = np.r_[carried_peak[:1], prev_peak[:-1]]
        shifted_mag = np.r_[carried_mag[:1], prev_mag[:-1]]
        prior = np.where(first, carried_peak, np.maximum(carried_peak, shifted_peak))
        prior_mag = np.where(first, carried_mag, np.maximum(carried_mag, shifted_mag))
        suspect = (cross < prior + self.dead) | (
            (cross < prior + self.ripple) & (mag < self.ripple_ratio * prior_mag)
        )
        keep = np.ones(len(ch), dtype=bool)
        for k in np.flatnonzero(suspect).tolist():
            c = ch[k]
            j = k - 1
            while j >= 0 and ch[j] == c and not keep[j]:
                j -= 1
            if j >= 0 and ch[j] == c:
                last, last_mag = peak[j], mag[j]
            else:
                last, last_mag = self.last_peak[c], self.last_amp[c]
            dt = cross[k] - last
            if dt < self.dead or (dt < self.ripple and mag[k] < self.ripple_ratio * last_mag):
                keep[k] = False
        kept = np.flatnonzero(keep)
        if len(kept):
            # the last kept spike of each channel seen in this chunk
            kc = ch[kept]
            ends = np.flatnonzero(np.r_[kc[1:] != kc[:-1], True])
            self.last_peak[kc[ends]] = peak[kept[ends]]
            self.last_amp[kc[ends]] = mag[kept[ends]]
        return keep


def estimate_noise(
    source: ContinuousSource,
    *,
    columns: np.ndarray,
    params: DetectionParams,
    filt: StreamFilter,
    n_threads: int = 1,
) -> np.ndarray:
    """Per-column noise sigma (MAD / 0.6745) of the filtered trace, in stored units.

    Uses the first ``params.noise_window_s`` seconds (all of a shorter recording),
    skipping the first 5% of the window where the filter may still settle, and keeping
    every 8th sample after that; the window is filtered in chunks of two seconds.
    """
    fs = source.sampling_rate_hz
    n = min(source.n_samples, max(1, round(params.noise_window_s * fs)))
    parts = _lane_groups(len(columns), n_threads)
    first = source.read_counts(0, 1, columns=columns)[0]
    states = [filt.initial_state(first[part]) for part in parts]
    kept: list[list[np.ndarray]] = [[] for _ in parts]
    skip = n // 20  # the filter may still settle there
    b = filt.block_samples
    step = -(-min(n, round(_NOISE_CHUNK_S * fs)) // b) * b  # whole blocks
    bufs = [np.empty((step, len(part)), dtype=np.float32) for part in parts]
    works = [filt.workspace(step, len(part)) for part in parts]
    reader = _ChunkReader(source, columns, n=n, step=step, dtype=first.dtype)
    cols = [reader.block_cols[part] for part in parts]

    def run(i: int, block: np.ndarray, k: int, _stop: int) -> None:
        # Keep every 8th filtered sample (global index), plenty for a median.
        y = bufs[i][: -(-len(block) // b) * b]
        states[i] = filt.apply(_columns(block, cols[i]), states[i], out=y, work=works[i])
        start = max(skip - k, 0)
        start += (-(k + start)) % _DECIMATE
        kept[i].append(y[start : len(block) : _DECIMATE].copy())

    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        for _ in reader.map_chunks(pool, run, len(parts)):
            pass
        sigmas = list(pool.map(lambda ys: _mad_sigma(np.concatenate(ys, axis=0).T), kept))
    return np.concatenate(sigmas) if sigmas else np.zeros(0)


def _columns(block: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``block[:, cols]``, as a view when the columns are consecutive."""
    if len(cols) and np.all(np.diff(cols) == 1):
        return block[:, int(cols[0]) : int(cols[-1]) + 1]
    return block[:, cols]


def _lane_groups(n_columns: int, n_groups: int) -> list[np.ndarray]:
    """Split column indices into at most ``n_groups`` runs of whole filter lanes."""
    lanes = np.array_split(np.arange(n_columns), range(LANE_CHANNELS, n_columns, LANE_CHANNELS))
    runs = np.array_split(np.arange(len(lanes)), max(1, min(n_groups, len(lanes))))
    return [np.concatenate([lanes[i] for i in run]) for run in runs if len(run)]


def _mad_sigma(y: np.ndarray) -> np.ndarray:
    y = np.ascontiguousarray(y)  # (channels, samples)
    med = np.median(y, axis=1, keepdims=True)
    np.subtract(y, med, out=y)
    np.abs(y, out=y)
    return np.median(y, axis=1) / _MAD_TO_SIGMA


class _Window(Protocol):
    array: np.ndarray

    def close(self) -> None: ...


@runtime_checkable
class _MappableSource(Protocol):
    """A source that can expose a window of the file itself (:class:`AxionFile`)."""

    def map_counts(self, start_sample: int, stop_sample: int) -> _Window: ...


def _maps(src: object) -> bool:
    """True if :func:`_window` can hand out windows of every column without a read copy."""
    if isinstance(src, _PaddedSource):
        return _maps(src.inner)
    return isinstance(src, (_MappableSource, ArraySource))


def _window(src: object, start: int, stop: int) -> _Window:
    """Rows ``[start, stop)`` of every column: a file mapping, an array view, or (past
    the end of a padded source) the last rows with the padding appended."""
    if isinstance(src, _PaddedSource):
        n = src.inner.n_samples
        if stop <= n:
            return _window(src.inner, start, stop)
        lo = min(start, n - 1)
        part = _window(src.inner, lo, n)
        try:
            real = np.array(part.array)
        finally:
            part.close()
        keep = real[start - lo :] if start < n else real[:0]
        pad = np.repeat(real[-1:], stop - max(start, n), axis=0)
        return _Buffer(np.concatenate([keep, pad], axis=0))
    if isinstance(src, ArraySource):
        return _Buffer(src.data[start:stop])
    return src.map_counts(start, stop)  # type: ignore[attr-defined, no-any-return]


class _Buffer:
    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def close(self) -> None:
        """Nothing to release: the buffer is reused."""


class _ChunkReader:
    """Consecutive chunks of a source, each processed while the next one is read.

    A mappable source's chunks are views of the file or array (every column; no read copy);
    any other source is read into two alternating buffers of the selected columns,
    so no chunk-sized array is allocated per step.
    """

    def __init__(
        self, src: ContinuousSource, cols: np.ndarray, *, n: int, step: int, dtype: np.dtype
    ) -> None:
        self._src = src
        self._cols = cols
        self._n = n
        self._step = step
        self._mapped = _maps(src)
        #: The columns of the selection within the chunks handed out.
        self.block_cols = cols if self._mapped else np.arange(len(cols))
        rows = min(n, step)
        self._buffers = [] if self._mapped else [np.empty((rows, len(cols)), dtype) for _ in "ab"]

    def _open(self, start: int, stop: int) -> _Window:
        if self._mapped:
            return _window(self._src, start, stop)
        self._buffers.reverse()
        return _Buffer(self._src.read_counts(start, stop, columns=self._cols, out=self._buffers[0]))

    def map_chunks(
        self,
        pool: ThreadPoolExecutor,
        work: Callable[[int, np.ndarray, int, int], _R],
        n_tasks: int,
    ) -> Iterator[list[_R]]:
        """Per chunk ``[start, stop)`` of the first ``n`` samples, in order, the results of
        ``work(i, chunk, start, stop)`` for ``i < n_tasks``, run in ``pool``."""
        n, step = self._n, self._step
        chunk = self._open(0, min(n, step))
        try:
            for start in range(0, n, step):
                stop = min(n, start + step)
                futures = [pool.submit(work, i, chunk.array, start, stop) for i in range(n_tasks)]
                try:  # the next chunk is read (or mapped) while this one is processed
                    upcoming = self._open(stop, min(n, stop + step)) if stop < n else None
                finally:
                    wait(futures)  # nothing may still read the chunk when it is closed
                chunk.close()
                if upcoming is not None:
                    chunk = upcoming
                yield [fut.result() for fut in futures]
        finally:
            chunk.close()


def detect_spikes(
    source: ContinuousSource | np.ndarray,
    *,
    params: DetectionParams | None = None,
    sampling_rate_hz: float | None = None,
    electrodes: Sequence[str] | None = None,
    wells: Sequence[str] | None = None,
    chunk_s: float = 2.0,
    n_threads: int = 2,
) -> pa.Table:
    """Detect spikes on every selected channel of a recording, streaming in chunks.

    Parameters
    ----------
    source
        An opened recording (:class:`~transforms.readers.axion.AxionFile`,
        :class:`~transforms.readers.nwb_ecephys.NwbEcephysFile`) or a (samples,
        channels) array in µV.
    params
        Detector parameters (default :class:`DetectionParams`).
    sampling_rate_hz
        Required for an array source, ignored otherwise.
    electrodes
        For an array: the names of its columns (required). For a file: an optional
        subset of electrodes to analyse.
    wells
        Optional subset of wells (file sources).
    chunk_s
        Chunk length; the result does not depend on it (bit for bit).
    n_threads
        Channel groups filtered in parallel.

    Returns
    -------
    pyarrow.Table
        :data:`MEA_SPIKE_SCHEMA`, sorted by ``time_s``; the schema metadata hold the
        parameters and the per-electrode noise sigma (µV) as JSON.
    """
    params = params or DetectionParams()
    if isinstance(source, np.ndarray):
        if sampling_rate_hz is None or electrodes is None:
            raise InvalidArgument("detect_spikes on an array needs sampling_rate_hz and electrodes")
        src: ContinuousSource = ArraySource(source, float(sampling_rate_hz), electrodes)
        cols = src.columns(wells=wells)
    else:
        src = source
        cols = src.columns(electrodes=electrodes, wells=wells)
    if not (math.isfinite(chunk_s) and chunk_s > 0) or n_threads < 1:
        raise InvalidArgument(
            f"chunk_s must be positive and n_threads >= 1 ({chunk_s}, {n_threads})"
        )
    fs = src.sampling_rate_hz
    filt = params.make_filter(fs)
    names = np.array([src.electrodes[int(c)] for c in cols], dtype=object)
    gain = src.voltage_scale_uv_per_count
    if len(cols) == 0 or src.n_samples == 0:
        return _with_metadata(spikes_table([], []), params, names, np.zeros(0), gain)
    delay = params.output_delay_samples(fs)
    if delay:  # the trace lags by `delay`: read that much past the end (edge-padded)
        src = _PaddedSource(src, delay)
    return _detect(src, cols, names, gain, params, filt, chunk_s, n_threads, delay)


def _detect(
    src: ContinuousSource,
    cols: np.ndarray,
    names: np.ndarray,
    gain: float,
    params: DetectionParams,
    filt: StreamFilter,
    chunk_s: float,
    n_threads: int,
    delay: int = 0,
) -> pa.Table:
    fs = src.sampling_rate_hz
    sigma = estimate_noise(src, columns=cols, params=params, filt=filt, n_threads=n_threads)
    # A flat channel has sigma 0: an infinite threshold keeps it silent.
    thr = np.where(sigma > 0, params.threshold_k * sigma, np.inf).astype(np.float32)
    pol = {"negative": -1.0, "positive": 1.0, "both": 1.0}[params.polarity]
    sign = pol * math.copysign(1.0, gain)  # a negative volts-per-count flips the trace
    window = max(1, round(params.peak_window_ms * 1e-3 * fs))
    dead = round(params.dead_time_ms * 1e-3 * fs)
    ripple = round(params.ripple_window_ms * 1e-3 * fs)
    b = filt.block_samples
    # whole filter blocks per chunk, so that blocks sit at the same samples for any chunk_s
    step = -(-max(window + 1, round(chunk_s * fs)) // b) * b
    first = src.read_counts(0, 1, columns=cols)[0]
    n = src.n_samples
    reader = _ChunkReader(src, cols, n=n, step=step, dtype=first.dtype)
    groups = []
    for part in _lane_groups(len(cols), n_threads):
        groups.append(
            _ChannelGroup(
                part,
                reader.block_cols[part],
                filt,
                filt.initial_state(first[part]),
                thr[part],
                sign,
                params.polarity == "both",
                window,
                dead,
                ripple,
                params.ripple_ratio,
            )
        )

    def run(i: int, block: np.ndarray, _start: int, stop: int) -> tuple[np.ndarray, ...]:
        ch, peak, amp = groups[i].step(block, stop, stop >= n)
        return groups[i].local_cols[ch], peak, amp

    results: list[tuple[np.ndarray, ...]] = []
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        for chunk_results in reader.map_chunks(pool, run, len(groups)):
            results += chunk_results
    col = np.concatenate([r[0] for r in results])
    peak = np.concatenate([r[1] for r in results])
    amp = np.concatenate([r[2] for r in results]).astype(np.float64) * gain
    if delay:  # the filtered trace lags by `delay`; drop what lies outside the recording
        peak = peak - delay
        inside = (peak >= 0) & (peak < n - delay)
        col, peak, amp = col[inside], peak[inside], amp[inside]
    table = coded_spikes_table(pa.array(names, pa.string()), col, peak / fs, amp.astype(np.float32))
    return _with_metadata(table, params, names, sigma, gain)


def _with_metadata(
    table: pa.Table, params: DetectionParams, names: np.ndarray, sigma: np.ndarray, gain: float
) -> pa.Table:
    noise = {str(n): float(s) * abs(gain) for n, s in zip(names, sigma, strict=True)}
    return table.replace_schema_metadata(
        {
            PARAMS_METADATA_KEY: json.dumps(params.as_dict()).encode(),
            NOISE_METADATA_KEY: json.dumps(noise).encode(),
        }
    )


class _PaddedSource(ContinuousBase):
    """A source read ``extra`` samples past its end, repeating its last sample."""

    def __init__(self, src: ContinuousSource, extra: int) -> None:
        self.inner = src
        self._src = src
        self.sampling_rate_hz = src.sampling_rate_hz
        self.voltage_scale_uv_per_count = src.voltage_scale_uv_per_count
        self.electrodes = src.electrodes
        self.n_samples = src.n_samples + extra
        self.source_name = getattr(src, "source_name", "recording")

    def read_counts(
        self,
        start_sample: int,
        stop_sample: int,
        *,
        columns: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        n = self._src.n_samples
        stop = min(stop_sample, self.n_samples)
        if stop <= n:
            return self._src.read_counts(start_sample, stop, columns=columns, out=out)
        real = self._src.read_counts(min(start_sample, n - 1), n, columns=columns)
        if start_sample >= n:
            real = real[-1:]
        pad = np.repeat(real[-1:], stop - max(start_sample, n), axis=0)
        block = np.concatenate([real if start_sample < n else real[:0], pad], axis=0)
        return fill(out, block)


#: The detection profiles (:func:`profile_params`).
PROFILES: Final = ("default", "axis", "sensitive")

#: ``sensitive``: a zero-phase Butterworth band-pass (order 2 run forward and backward)
#: at 150-3000 Hz keeps 92 % of the synthetic spike's trough (``default``'s causal
#: 200-3000 Hz filter keeps 69 %) and removes the 1/f part of the noise; threshold 5 sigma.
SENSITIVE: Final = DetectionParams(
    band_low_hz=150.0,
    band_high_hz=3000.0,
    filter_order=2,
    threshold_k=5.0,
    noise_window_s=2.0,
    profile="sensitive",
    zero_phase=True,
)


def _section(meta: Mapping[str, Any], prefix: str) -> dict[str, str]:
    sections = meta.get("sections") or {}
    for title, values in sections.items():
        if str(title).lower().startswith(prefix):
            return {str(k): str(v) for k, v in values.items()}
    return {}


_FREQUENCY: Final = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*(hz|khz)\b", re.IGNORECASE)


def _hz(text: str | None) -> float | None:
    """``200 Hz`` / ``3 kHz Kaiser Window`` / ``3000 Hz`` in Hz (None without a frequency)."""
    m = _FREQUENCY.match(text or "")
    if not m:
        return None
    return float(m.group(1)) * (1e3 if m.group(2).lower() == "khz" else 1.0)


def axis_params(meta: Mapping[str, Any], *, source: str = "recording") -> DetectionParams:
    """The detector a recording declares in its AxIS settings (``profile='axis'``).

    * AxIS 2 (``Digital Filter Settings``): Butterworth high-pass and low-pass with
      the stated poles and cutoff frequencies (AxIS names the cutoffs
      ``High Pass Cutoff Freq.`` / ``Low Pass Cutoff Freq.``; the lower one is the
      high-pass corner), causal;
    * AxIS 3 (``Digital High Pass Filter`` ``200 Hz IIR``, ``Digital Low Pass Filter``
      ``3 kHz Kaiser Window``): a Butterworth high-pass of order 2 (AxIS states no
      order) and a 31-tap Kaiser-window FIR low-pass (beta 5; AxIS states neither), causal,
      spike times corrected for the FIR's constant group delay (15 samples);
    * the threshold is the ``Spike Detector Settings`` ``Threshold`` in noise sigmas,
      and the dead time its ``Post-Spike Duration`` where stated.

    Parameters
    ----------
    meta
        Header metadata (:func:`transforms.formats.axis_settings.header_metadata`, as
        ``plate_metadata()`` of a ``.raw`` returns it).

    Raises
    ------
    InvalidArgument
        If the recording declares no filter or no threshold.
    """
    threshold = meta.get("detector_threshold")
    if threshold is None:
        raise InvalidArgument(
            f"{source}: detection profile 'axis' needs the recording's spike detector "
            "settings (Spike Detector Settings/Threshold), which it does not declare"
        )
    extra: dict[str, Any] = {"threshold_k": float(threshold), "profile": "axis"}
    post = meta.get("post_spike_ms")
    if post is not None:
        extra["dead_time_ms"] = float(post)
    digital = _section(meta, "digital filter")
    if digital:
        poles: dict[float, int] = {}
        for side in ("High Pass", "Low Pass"):
            f = _hz(digital.get(f"{side} Cutoff Freq.") or digital.get(f"{side} Cutoff"))
            n = digital.get(f"{side} Poles")
            if (
                f is None
                or n is None
                or "butterworth" not in digital.get(f"{side} Filter", "butterworth").lower()
            ):
                raise InvalidArgument(f"{source}: unsupported AxIS filter settings {digital}")
            poles[f] = int(float(n))
        low, high = min(poles), max(poles)
        return DetectionParams(
            band_low_hz=low,
            band_high_hz=high,
            filter_order=poles[low],
            lowpass_order=poles[high],
            filter_design="butter_cascade",
            **extra,
        )
    hp, lp = meta.get("high_pass_filter") or "", meta.get("low_pass_filter") or ""
    f_hp, f_lp = _hz(hp), _hz(lp)
    if f_hp is not None and f_lp is not None and "kaiser" in lp.lower():
        return DetectionParams(
            band_low_hz=f_hp, band_high_hz=f_lp, filter_design="iir_kaiser", **extra
        )
    raise InvalidArgument(
        f"{source}: detection profile 'axis' needs the recording's filter settings "
        f"(AxIS 2 Digital Filter Settings, or AxIS 3 IIR high-pass and Kaiser low-pass); "
        f"it declares high-pass {hp or 'none'!r}, low-pass {lp or 'none'!r}"
    )


def profile_params(
    profile: str, *, metadata: Mapping[str, Any] | None = None, source: str = "recording"
) -> DetectionParams:
    """The detector parameters of a profile.

    ``default``: today's detector (:class:`DetectionParams` defaults); ``axis``: the
    detector the recording declares (:func:`axis_params`); ``sensitive``: a
    zero-phase band-pass that keeps >= 90 % of the spike trough (:data:`SENSITIVE`).

    Raises
    ------
    InvalidArgument
        An unknown profile, or ``axis`` for a recording that declares no detector.
    """
    if profile == "default":
        return DetectionParams()
    if profile == "sensitive":
        return SENSITIVE
    if profile == "axis":
        return axis_params(metadata or {}, source=source)
    raise InvalidArgument(f"unknown detection profile {profile!r}; known: {', '.join(PROFILES)}")
