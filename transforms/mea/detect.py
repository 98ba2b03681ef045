"""Streaming threshold spike detection for MEA plates, and the MEA spike-table convention.

The detector is the classic one (Quiroga et al. 2004): a causal Butterworth band-pass
(``sosfilt`` with its state carried from chunk to chunk), a per-channel threshold of
``k`` noise sigmas with sigma = MAD / 0.6745 estimated on an initial window of the
filtered trace, a crossing rule (the sample goes past the threshold after being inside
it), the spike placed at the filtered trace's extreme within a short window after the
crossing, and a dead time after each accepted spike.

Chunks are processed so that the result does not depend on the chunk size: the filter
state and the last accepted spike of each channel are carried over, crossings whose
peak-search window would reach past the chunk are left for the next one (the last few
filtered samples are carried with them), so no spike is lost or doubled at a border.
Channels are split into groups filtered in parallel threads (``sosfilt`` releases the
GIL), and only one chunk of the plate is in memory at a time.

Spikes travel as a :class:`pyarrow.Table` with :data:`MEA_SPIKE_SCHEMA`: ``electrode``
(``A1_23``), ``well`` (``A1``), ``time_s`` (float64, from recording start) and
``amplitude_uv`` (float32, signed peak of the filtered trace, nullable), sorted by
``time_s``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Final, Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import signal

from transforms.errors import SpecError

MEA_SPIKE_SCHEMA: Final = pa.schema(
    [
        pa.field("electrode", pa.string(), nullable=False),
        pa.field("well", pa.string(), nullable=False),
        pa.field("time_s", pa.float64(), nullable=False),
        pa.field("amplitude_uv", pa.float32(), nullable=True),
    ]
)

#: Schema-metadata key under which :func:`detect_spikes` stores its parameters (JSON).
PARAMS_METADATA_KEY: Final = b"neurocyte.detection_params"
#: Schema-metadata key holding the per-electrode noise sigma in µV (JSON object).
NOISE_METADATA_KEY: Final = b"neurocyte.noise_sigma_uv"

_MAD_TO_SIGMA: Final = 0.6745


def spikes_table(
    electrode: Sequence[str] | np.ndarray,
    time_s: Sequence[float] | np.ndarray,
    amplitude_uv: Sequence[float] | np.ndarray | None = None,
) -> pa.Table:
    """Build a spike table in the MEA convention, sorted by ``time_s`` then electrode.

    Parameters
    ----------
    electrode
        Electrode names (``A1_23``); the well is the part before ``_``.
    time_s
        Spike times in seconds from the recording start.
    amplitude_uv
        Signed amplitudes in µV; NaN or ``None`` entries become nulls.

    Raises
    ------
    SpecError
        If the arrays differ in length or an electrode name has no well part.
    """
    names = pa.array(np.asarray(electrode, dtype=object), type=pa.string())
    times = np.asarray(time_s, dtype=np.float64)
    if len(names) != len(times):
        raise SpecError(f"spikes_table: {len(names)} electrodes but {len(times)} times")
    if amplitude_uv is None:
        amps = pa.nulls(len(times), type=pa.float32())
    else:
        a = np.asarray(amplitude_uv, dtype=np.float32)
        if len(a) != len(times):
            raise SpecError(f"spikes_table: {len(a)} amplitudes but {len(times)} times")
        amps = pa.array(a, mask=np.isnan(a), type=pa.float32())
    parts = pc.split_pattern(names, "_", max_splits=1)
    if len(names) and pc.any(pc.not_equal(pc.list_value_length(parts), 2)).as_py():
        raise SpecError("spikes_table: electrode names must look like 'A1_23'")
    wells = pc.list_element(parts, 0) if len(names) else pa.array([], pa.string())
    table = pa.table([names, wells, pa.array(times), amps], schema=MEA_SPIKE_SCHEMA)
    if len(table) > 1:
        table = table.sort_by([("time_s", "ascending"), ("electrode", "ascending")])
    return table


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
    peak_window_ms
        The spike is the extreme of the filtered trace within this window after the
        crossing.
    polarity
        ``negative`` (troughs, default), ``positive`` or ``both``.
    """

    band_low_hz: float = 200.0
    band_high_hz: float = 3000.0
    filter_order: int = 2
    threshold_k: float = 6.0
    noise_window_s: float = 10.0
    dead_time_ms: float = 1.0
    peak_window_ms: float = 0.5
    polarity: Literal["negative", "positive", "both"] = "negative"

    def __post_init__(self) -> None:
        if not 0 < self.band_low_hz < self.band_high_hz:
            raise SpecError(
                f"band must satisfy 0 < low < high, got {self.band_low_hz}, {self.band_high_hz} Hz"
            )
        if not 1 <= self.filter_order <= 8:
            raise SpecError(f"filter_order must be 1-8, got {self.filter_order}")
        if not (math.isfinite(self.threshold_k) and self.threshold_k > 0):
            raise SpecError(f"threshold_k must be positive, got {self.threshold_k}")
        if not self.noise_window_s > 0:
            raise SpecError(f"noise_window_s must be positive, got {self.noise_window_s}")
        if not (self.dead_time_ms >= 0 and self.peak_window_ms > 0):
            raise SpecError("dead_time_ms must be >= 0 and peak_window_ms > 0")
        if self.polarity not in ("negative", "positive", "both"):
            raise SpecError(f"polarity must be negative, positive or both: {self.polarity!r}")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def sos(self, sampling_rate_hz: float) -> np.ndarray:
        """The band-pass as second-order sections at ``sampling_rate_hz``."""
        if not self.band_high_hz < sampling_rate_hz / 2:
            raise SpecError(
                f"band_high_hz {self.band_high_hz} must be below Nyquist "
                f"({sampling_rate_hz / 2} Hz)"
            )
        return np.asarray(
            signal.butter(
                self.filter_order,
                [self.band_low_hz, self.band_high_hz],
                btype="bandpass",
                fs=sampling_rate_hz,
                output="sos",
            )
        )


class ContinuousSource(Protocol):
    """What the detector needs from a recording (AxionFile, NwbEcephysFile)."""

    sampling_rate_hz: float
    voltage_scale_uv_per_count: float
    n_samples: int
    electrodes: tuple[str, ...]

    def columns(
        self, *, electrodes: Sequence[str] | None = None, wells: Sequence[str] | None = None
    ) -> np.ndarray: ...

    def read_counts(
        self, start_sample: int, stop_sample: int, *, columns: np.ndarray | None = None
    ) -> np.ndarray: ...


class _ArraySource:
    """An in-memory (samples, channels) µV array seen through the source protocol."""

    def __init__(self, data: np.ndarray, sampling_rate_hz: float, electrodes: Sequence[str]):
        if data.ndim != 2:
            raise SpecError(f"detect_spikes: expected (samples, channels), got {data.shape}")
        if len(electrodes) != data.shape[1]:
            raise SpecError(
                f"detect_spikes: {data.shape[1]} columns but {len(electrodes)} electrode names"
            )
        self.data = data
        self.sampling_rate_hz = sampling_rate_hz
        self.voltage_scale_uv_per_count = 1.0
        self.n_samples = data.shape[0]
        self.electrodes = tuple(electrodes)

    def columns(
        self, *, electrodes: Sequence[str] | None = None, wells: Sequence[str] | None = None
    ) -> np.ndarray:
        from transforms.readers.axion import _select_columns

        return _select_columns(self.electrodes, electrodes, wells, "array")

    def read_counts(
        self, start_sample: int, stop_sample: int, *, columns: np.ndarray | None = None
    ) -> np.ndarray:
        block = self.data[max(0, start_sample) : min(self.n_samples, stop_sample)]
        return block if columns is None else block[:, columns]


class _ChannelGroup:
    """Detector state of a group of channels: filter state, threshold, carried tail."""

    def __init__(
        self,
        local_cols: np.ndarray,
        sos: np.ndarray,
        zi: np.ndarray,
        threshold: np.ndarray,
        sign: float,
        both: bool,
        window: int,
        dead: int,
    ) -> None:
        self.local_cols = local_cols
        self.contiguous = bool(len(local_cols) and np.all(np.diff(local_cols) == 1))
        self.sos = sos
        self.zi = zi
        self.threshold = threshold
        self.sign = sign  # +1: look for maxima of y, -1: minima (in stored units)
        self.both = both
        self.window = window
        self.dead = dead
        n = len(local_cols)
        self.tail = np.zeros((n, 1), dtype=np.float32)  # y at global sample p - 1
        self.p = 0  # first global sample whose crossing has not been examined
        self.last_peak = np.full(n, -(1 << 40), dtype=np.int64)

    def _score(self, y: np.ndarray) -> np.ndarray:
        return np.abs(y) if self.both else y * np.float32(self.sign)

    def step(self, block: np.ndarray, end: int, final: bool) -> tuple[np.ndarray, ...]:
        """Filter ``block`` (samples, all columns) ending at global sample ``end``."""
        if self.contiguous:
            sub = block[:, int(self.local_cols[0]) : int(self.local_cols[-1]) + 1]
        else:
            sub = block[:, self.local_cols]
        x = _transpose_f32(sub)
        y, self.zi = signal.sosfilt(self.sos, x, axis=1, zi=self.zi)
        buf = np.concatenate([self.tail, y], axis=1) if self.tail.shape[1] else y
        base = self.p - 1  # global sample of buf[:, 0]
        limit = end if final else end - self.window + 1
        limit = max(limit, self.p)
        seg = buf[:, : limit - base]
        thr = self.threshold[:, None]
        if self.both:
            above = np.abs(seg) > thr
        elif self.sign > 0:
            above = seg > thr
        else:
            above = seg < -thr
        cross = above[:, 1:] & ~above[:, :-1]
        # 1-D flatnonzero is several times faster than 2-D nonzero on a sparse mask
        ch, j = np.divmod(np.flatnonzero(cross), cross.shape[1])
        out = self._peaks(buf, ch, j + 1, base)
        self.tail = buf[:, limit - 1 - base :].copy()
        self.p = limit
        return out

    def _peaks(
        self, buf: np.ndarray, ch: np.ndarray, local: np.ndarray, base: int
    ) -> tuple[np.ndarray, ...]:
        if len(ch) == 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, np.empty(0, dtype=np.float32)
        idx = local[:, None] + np.arange(self.window)
        np.minimum(idx, buf.shape[1] - 1, out=idx)  # only the final chunk is short
        win = buf[ch[:, None], idx]
        peak_local = local + np.argmax(self._score(win), axis=1)
        amp = buf[ch, peak_local]
        cross = local + base
        peak = peak_local + base
        keep = self._dead_time(ch, cross, peak)
        return ch[keep], peak[keep], amp[keep]

    def _dead_time(self, ch: np.ndarray, cross: np.ndarray, peak: np.ndarray) -> np.ndarray:
        # Crossings come sorted by (channel, sample). Only a crossing within the dead
        # time of an earlier peak of its channel can be dropped; those are rare, so
        # resolve just them in order against the last *kept* peak.
        order_key = ch.astype(np.int64) << 40
        prev_max = np.maximum.accumulate(order_key + peak) - order_key
        first = np.ones(len(ch), dtype=bool)
        first[1:] = ch[1:] != ch[:-1]
        carried = self.last_peak[ch]
        shifted = np.empty_like(prev_max)
        shifted[0] = carried[0]
        shifted[1:] = prev_max[:-1]
        prior = np.where(first, carried, np.maximum(carried, shifted))
        keep = np.ones(len(ch), dtype=bool)
        for k in np.flatnonzero(cross < prior + self.dead):
            c = ch[k]
            j = k - 1
            while j >= 0 and ch[j] == c and not keep[j]:
                j -= 1
            last = peak[j] if j >= 0 and ch[j] == c else self.last_peak[c]
            if cross[k] < last + self.dead:
                keep[k] = False
        kept = np.flatnonzero(keep)
        if len(kept):
            # the last kept peak of each channel seen in this chunk
            kc = ch[kept]
            ends = np.flatnonzero(np.r_[kc[1:] != kc[:-1], True])
            self.last_peak[kc[ends]] = peak[kept[ends]]
        return keep


def _initial_zi(sos: np.ndarray, first: np.ndarray) -> np.ndarray:
    # Steady state for a constant input equal to the first sample: no start-up step.
    zi = signal.sosfilt_zi(sos).astype(np.float32)
    return zi[:, None, :] * first.astype(np.float32)[None, :, None]


def estimate_noise(
    source: ContinuousSource,
    *,
    columns: np.ndarray,
    params: DetectionParams,
    sos: np.ndarray,
    n_threads: int = 1,
) -> np.ndarray:
    """Per-column noise sigma (MAD / 0.6745) of the filtered trace, in stored units.

    Uses the first ``params.noise_window_s`` seconds (all of a shorter recording),
    skipping the first 5% of the window where the filter may still settle, and keeping
    every 4th sample after that; the window is filtered in one-second chunks.
    """
    fs = source.sampling_rate_hz
    n = min(source.n_samples, max(1, round(params.noise_window_s * fs)))
    parts = np.array_split(np.arange(len(columns)), max(1, min(n_threads, len(columns))))
    first = source.read_counts(0, 1, columns=columns)[0]
    zis = [_initial_zi(sos, first[part]) for part in parts]
    kept: list[list[np.ndarray]] = [[] for _ in parts]
    skip = n // 20  # the filter may still settle there
    step = max(4, round(fs) // 4 * 4)  # one second, a multiple of the decimation
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        # Stream the window: only every 4th filtered sample is kept (a quarter of the
        # memory), which is plenty for a median.
        for k in range(0, n, step):
            block = source.read_counts(k, min(n, k + step), columns=columns)

            def run(i: int, block: np.ndarray = block, k: int = k) -> None:
                y, zis[i] = signal.sosfilt(
                    sos, _transpose_f32(block[:, parts[i]]), axis=1, zi=zis[i]
                )
                start = max(skip - k, 0)
                start += (-(k + start)) % 4
                kept[i].append(y[:, start::4].copy())

            list(pool.map(run, range(len(parts))))
        sigmas = list(pool.map(lambda ys: _mad_sigma(np.concatenate(ys, axis=1)), kept))
    return np.concatenate(sigmas) if sigmas else np.zeros(0)


def _mad_sigma(y: np.ndarray) -> np.ndarray:
    med = np.median(y, axis=1, keepdims=True)
    np.subtract(y, med, out=y)
    np.abs(y, out=y)
    return np.median(y, axis=1) / _MAD_TO_SIGMA


def _transpose_f32(block: np.ndarray) -> np.ndarray:
    """(samples, channels) -> contiguous (channels, samples) float32, cache-blocked."""
    out = np.empty((block.shape[1], block.shape[0]), dtype=np.float32)
    for i in range(0, block.shape[0], 512):
        out[:, i : i + 512] = block[i : i + 512].T
    return out


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
            raise SpecError("detect_spikes on an array needs sampling_rate_hz and electrodes")
        src: ContinuousSource = _ArraySource(source, float(sampling_rate_hz), electrodes)
        cols = src.columns(wells=wells)
    else:
        src = source
        cols = src.columns(electrodes=electrodes, wells=wells)
    if not (math.isfinite(chunk_s) and chunk_s > 0) or n_threads < 1:
        raise SpecError(f"chunk_s must be positive and n_threads >= 1 ({chunk_s}, {n_threads})")
    fs = src.sampling_rate_hz
    sos = params.sos(fs).astype(np.float32)
    names = np.array([src.electrodes[int(c)] for c in cols], dtype=object)
    gain = src.voltage_scale_uv_per_count
    if len(cols) == 0 or src.n_samples == 0:
        return _with_metadata(spikes_table([], []), params, names, np.zeros(0), gain)
    sigma = estimate_noise(src, columns=cols, params=params, sos=sos, n_threads=n_threads)
    # A flat channel has sigma 0: an infinite threshold keeps it silent.
    thr = np.where(sigma > 0, params.threshold_k * sigma, np.inf).astype(np.float32)
    pol = {"negative": -1.0, "positive": 1.0, "both": 1.0}[params.polarity]
    sign = pol * math.copysign(1.0, gain)  # a negative volts-per-count flips the trace
    window = max(1, round(params.peak_window_ms * 1e-3 * fs))
    dead = round(params.dead_time_ms * 1e-3 * fs)
    step = max(window + 1, round(chunk_s * fs))
    first = src.read_counts(0, 1, columns=cols)[0]
    groups = []
    for part in np.array_split(np.arange(len(cols)), min(n_threads, len(cols))):
        groups.append(
            _ChannelGroup(
                part,
                sos,
                _initial_zi(sos, first[part]),
                thr[part],
                sign,
                params.polarity == "both",
                window,
                dead,
            )
        )
    results: list[tuple[np.ndarray, ...]] = []
    n = src.n_samples
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        k = 0
        block = src.read_counts(0, min(n, step), columns=cols)
        while k < n:
            end = min(n, k + step)
            final = end >= n
            futures = [pool.submit(g.step, block, end, final) for g in groups]
            if not final:  # read the next chunk while the groups filter this one
                block = src.read_counts(end, min(n, end + step), columns=cols)
            for g, fut in zip(groups, futures, strict=True):
                ch, peak, amp = fut.result()
                results.append((g.local_cols[ch], peak, amp))
            k = end
    col = np.concatenate([r[0] for r in results])
    peak = np.concatenate([r[1] for r in results])
    amp = np.concatenate([r[2] for r in results]).astype(np.float64) * gain
    table = spikes_table(names[col], peak / fs, amp.astype(np.float32))
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
