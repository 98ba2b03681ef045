"""Synthetic MEA plates with known spikes: ``.raw``, ``.spk``, optional NWB, plate map.

Each electrode's trace is noise plus extracellular spikes:

* noise (µV): white Gaussian plus a 1/f-like part (three AR(1) processes with corners
  at 1, 10 and 60 Hz, equal variances, simulated at 1/25 of the sampling rate and
  linearly interpolated), with a total RMS ``noise_rms_uv`` drawn per electrode from
  a range (default 5-10 µV);
* spikes: a biphasic waveform (a sharp trough followed by a slower positive lobe
  at 30% of the trough) whose trough is ``snr × noise RMS`` deep, placed at continuous
  (sub-sample) times; the ground truth is the trough time.

Wells are of four kinds: ``silent`` (no spikes), ``poisson`` (independent Poisson
trains), ``bursting`` (each electrode bursts on its own) and ``network_bursting``
(bursts shared by all electrodes of the well, a few ms of jitter). Every spike train
keeps a refractory period so waveforms of one electrode never overlap. Each well gets a
condition (``WT`` / ``KO`` by default) written in the plate map CSV (AxIS experiment-log
columns) and as WellTreatment tags in the Axion files.

The ``.raw`` is written in chunks (never the whole plate in memory); the ``.spk`` holds
one record per ground-truth spike with the waveform cut from the ``.raw`` (a perfect
detector), and the NWB copy (optional: it doubles the disk use) is streamed from the
``.raw``.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pyarrow as pa
from scipy import signal

from transforms.errors import InvalidArgument
from transforms.formats.axion import (
    DEFAULT_VOLTAGE_SCALE_UV,
    SpikeRecords,
    WellTreatment,
    open_axion,
    write_axion_raw,
    write_axion_spk,
)
from transforms.recording.plate import PlateLayout, layout_for_wells
from transforms.recording.spikes import spikes_table

WellKind = Literal["silent", "poisson", "bursting", "network_bursting"]
WELL_KINDS: Final[tuple[WellKind, ...]] = ("silent", "poisson", "bursting", "network_bursting")
PLATE_MAP_COLUMNS: Final = (
    "Project",
    "Experiment Date",
    "Plate SN",
    "DIV",
    "Well",
    "Treatment",
    "Size",
    "Dose",
    "Units",
)

_DECIMATION: Final = 25  # low-frequency noise is simulated at fs / 25
_PINK_CORNERS_HZ: Final = (1.0, 10.0, 60.0)
# Spike template: trough at 0, support [-0.6, +1.6] ms.
_TROUGH_SD_MS: Final = 0.15
_LOBE_DELAY_MS: Final = 0.55
_LOBE_SD_MS: Final = 0.3
_LOBE_RATIO: Final = 0.3
_PRE_MS: Final = 0.6
_POST_MS: Final = 1.6
_SPK_PRE_SAMPLES: Final = 12
_SPK_WIDTH: Final = 38


@dataclass(frozen=True)
class SynthParams:
    """Everything that determines a synthetic plate (stored with it via :meth:`as_dict`).

    Attributes
    ----------
    n_wells, duration_s, sampling_rate_hz, snr, seed
        Plate size, length, rate, trough depth in noise RMS, random seed.
    noise_rms_uv
        Range (low, high) from which each electrode's total noise RMS is drawn.
    pink_fraction
        Share of the noise variance in the 1/f-like part (the rest is white).
    rate_hz
        Range of Poisson rates of ``poisson`` electrodes.
    background_hz
        Rate of isolated spikes of bursting electrodes between bursts.
    burst_rate_hz, burst_duration_s, intra_burst_hz
        Burst onsets per second, burst length range, firing rate inside a burst.
    network_jitter_ms
        Spread of burst onsets across the electrodes of a network-bursting well.
    refractory_ms
        Minimum interval between two spikes of one electrode.
    conditions
        Conditions assigned to well columns in turn (column 1 -> first, ...).
    div
        Days in vitro written in the plate map.
    """

    n_wells: int
    duration_s: float
    sampling_rate_hz: float = 12500.0
    snr: float = 8.0
    seed: int = 0
    noise_rms_uv: tuple[float, float] = (5.0, 10.0)
    pink_fraction: float = 0.7
    rate_hz: tuple[float, float] = (0.5, 5.0)
    background_hz: float = 0.3
    burst_rate_hz: tuple[float, float] = (0.1, 0.3)
    burst_duration_s: tuple[float, float] = (0.05, 0.2)
    intra_burst_hz: tuple[float, float] = (80.0, 150.0)
    network_jitter_ms: float = 5.0
    refractory_ms: float = 2.5
    conditions: tuple[str, ...] = ("WT", "KO")
    div: int = 14

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class SynthPlate:
    """The files of a synthetic plate and its ground truth.

    Attributes
    ----------
    raw_path, spk_path, nwb_path, plate_map_path
        The written files (``spk_path`` / ``nwb_path`` are None when not asked for).
    layout
        The plate layout.
    spike_times_s
        Ground truth: electrode name -> sorted trough times (s), every electrode present.
    noise_rms_uv, spike_amplitude_uv
        Per electrode: total noise RMS and trough depth (µV, positive).
    well_kind, condition
        Per well.
    params
        The generator parameters.
    """

    raw_path: Path
    spk_path: Path | None
    nwb_path: Path | None
    plate_map_path: Path
    layout: PlateLayout
    spike_times_s: Mapping[str, np.ndarray]
    noise_rms_uv: Mapping[str, float]
    spike_amplitude_uv: Mapping[str, float]
    well_kind: Mapping[str, WellKind]
    condition: Mapping[str, str]
    params: SynthParams
    recorded_at: dt.datetime = field(default=dt.datetime(2024, 5, 17, 13, 45, 12))

    @property
    def n_spikes(self) -> int:
        return sum(len(t) for t in self.spike_times_s.values())

    def ground_truth_table(self) -> pa.Table:
        """The true spikes in the MEA spike-table convention (amplitude = −depth)."""
        names = [e for e, t in self.spike_times_s.items() for _ in range(len(t))]
        times = np.concatenate([t for t in self.spike_times_s.values()] or [np.empty(0)])
        amps = [-self.spike_amplitude_uv[e] for e in names]
        return spikes_table(names, times, np.asarray(amps, dtype=np.float32))


def spike_template_uv(offset_s: np.ndarray, depth_uv: float | np.ndarray) -> np.ndarray:
    """The biphasic spike at time offsets from its trough, scaled to ``depth_uv``."""
    t_ms = np.asarray(offset_s) * 1e3
    shape = -np.exp(-0.5 * (t_ms / _TROUGH_SD_MS) ** 2) + _LOBE_RATIO * np.exp(
        -0.5 * ((t_ms - _LOBE_DELAY_MS) / _LOBE_SD_MS) ** 2
    )
    trough = -1.0 + _LOBE_RATIO * math.exp(-0.5 * (_LOBE_DELAY_MS / _LOBE_SD_MS) ** 2)
    return shape / -trough * depth_uv


def _refractory(times: np.ndarray, min_isi_s: float) -> np.ndarray:
    """Greedy thinning: drop each spike closer than ``min_isi_s`` to the last kept one."""
    if len(times) < 2:
        return times
    times = np.sort(times)
    if np.all(np.diff(times) >= min_isi_s):
        return times
    keep = np.zeros(len(times), dtype=bool)
    last = -math.inf
    for i, t in enumerate(times.tolist()):
        if t - last >= min_isi_s:
            keep[i] = True
            last = t
    return times[keep]


def _poisson(rng: np.random.Generator, rate_hz: float, t0: float, t1: float) -> np.ndarray:
    if rate_hz <= 0 or t1 <= t0:
        return np.empty(0)
    n = rng.poisson(rate_hz * (t1 - t0))
    return np.sort(rng.uniform(t0, t1, n))


def _bursts(
    rng: np.random.Generator, p: SynthParams, onsets: np.ndarray, jitter_s: float
) -> np.ndarray:
    out = []
    for onset in onsets:
        start = onset + (rng.uniform(-jitter_s, jitter_s) if jitter_s else 0.0)
        length = rng.uniform(*p.burst_duration_s)
        out.append(_poisson(rng, rng.uniform(*p.intra_burst_hz), start, start + length))
    return np.concatenate(out) if out else np.empty(0)


def _spike_trains(
    p: SynthParams, layout: PlateLayout, kinds: Mapping[str, WellKind], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    margin_s = 2e-3  # keep whole waveforms inside the recording
    lo, hi = margin_s, p.duration_s - margin_s
    trains: dict[str, np.ndarray] = {}
    for well in layout.wells:
        kind = kinds[well]
        names = [f"{well}_{c}{r}" for c, r in layout.electrode_positions]
        shared = _poisson(rng, rng.uniform(*p.burst_rate_hz), lo, hi)
        for name in names:
            if kind == "silent":
                t = np.empty(0)
            elif kind == "poisson":
                t = _poisson(rng, rng.uniform(*p.rate_hz), lo, hi)
            elif kind == "bursting":
                own = _poisson(rng, rng.uniform(*p.burst_rate_hz), lo, hi)
                t = np.concatenate(
                    [_bursts(rng, p, own, 0.0), _poisson(rng, p.background_hz, lo, hi)]
                )
            else:
                t = np.concatenate(
                    [
                        _bursts(rng, p, shared, p.network_jitter_ms * 1e-3),
                        _poisson(rng, p.background_hz, lo, hi),
                    ]
                )
            t = t[(t >= lo) & (t <= hi)]
            trains[name] = _refractory(t, p.refractory_ms * 1e-3)
    return trains


def _assign_kinds(
    layout: PlateLayout, rng: np.random.Generator, kinds: Sequence[WellKind] | None
) -> dict[str, WellKind]:
    if kinds is None:
        cycle = [WELL_KINDS[i % len(WELL_KINDS)] for i in range(layout.n_wells)]
        order = rng.permutation(layout.n_wells)
        return {w: cycle[int(i)] for w, i in zip(layout.wells, order, strict=True)}
    if len(kinds) != layout.n_wells or any(k not in WELL_KINDS for k in kinds):
        raise InvalidArgument(
            f"well_kinds must list {layout.n_wells} kinds out of {WELL_KINDS}, got {kinds!r}"
        )
    return dict(zip(layout.wells, kinds, strict=True))


class _NoiseStream:
    """Chunked noise generator; state (AR(1) values, last low-rate sample) is carried."""

    def __init__(self, p: SynthParams, sigma_uv: np.ndarray, rng: np.random.Generator) -> None:
        self.rng = rng
        n_ch = len(sigma_uv)
        self.white_sd = (np.sqrt(1.0 - p.pink_fraction) * sigma_uv).astype(np.float32)
        fs_low = p.sampling_rate_hz / _DECIMATION
        self.coef = np.exp(-2 * np.pi * np.asarray(_PINK_CORNERS_HZ) / fs_low)
        comp_sd = np.sqrt(p.pink_fraction / len(_PINK_CORNERS_HZ)) * sigma_uv
        self.innov_sd = comp_sd[None, :] * np.sqrt(1 - self.coef**2)[:, None]  # (3, C)
        self.state = rng.standard_normal((len(self.coef), n_ch)) * comp_sd[None, :]
        self.last_low = self.state.sum(axis=0)
        self.weights = (np.arange(_DECIMATION) / _DECIMATION).astype(np.float32)

    def next(self, n: int) -> np.ndarray:
        """The next ``n`` samples (a multiple of the decimation), (n, C) float32 µV."""
        k = n // _DECIMATION
        low = np.zeros((k, self.state.shape[1]))
        for i, a in enumerate(self.coef):
            e = self.rng.standard_normal((k, self.state.shape[1])) * self.innov_sd[i]
            y, zf = signal.lfilter([1.0], [1.0, -a], e, axis=0, zi=a * self.state[i][None, :])
            self.state[i] = zf[0]
            low += y
        seq = np.vstack([self.last_low[None, :], low]).astype(np.float32)
        self.last_low = low[-1]
        w = self.weights[None, :, None]
        pink = seq[:-1, None, :] * (1 - w) + seq[1:, None, :] * w
        out = self.rng.standard_normal((n, len(self.white_sd)), dtype=np.float32)
        out *= self.white_sd
        out += pink.reshape(n, -1)
        return out


def _signal_chunks(
    p: SynthParams,
    trains: Mapping[str, np.ndarray],
    electrodes: Sequence[str],
    sigma_uv: np.ndarray,
    rng: np.random.Generator,
    chunk_samples: int,
) -> Iterator[np.ndarray]:
    fs = p.sampling_rate_hz
    n_total = round(p.duration_s * fs)
    n_ch = len(electrodes)
    # All spikes, sorted by first waveform sample, as (first sample, column, offset, depth).
    pre, post = round(_PRE_MS * 1e-3 * fs), round(_POST_MS * 1e-3 * fs)
    width = pre + post + 1
    col = np.concatenate([np.full(len(trains[e]), i) for i, e in enumerate(electrodes)])
    times = np.concatenate([trains[e] for e in electrodes])
    order = np.argsort(times, kind="stable")
    col, times = col[order], times[order]
    first = np.floor(times * fs).astype(np.int64) - pre
    taps = np.arange(width)
    depth = (p.snr * sigma_uv)[col]
    noise = _NoiseStream(p, sigma_uv, rng)
    lo_idx = 0
    for start in range(0, n_total, chunk_samples):
        stop = min(n_total, start + chunk_samples)
        padded = -(-(stop - start) // _DECIMATION) * _DECIMATION
        block = noise.next(padded)[: stop - start]
        # spikes whose waveform touches [start, stop)
        while lo_idx < len(first) and first[lo_idx] + width <= start:
            lo_idx += 1
        hi_idx = np.searchsorted(first, stop, side="left")
        sel = slice(lo_idx, hi_idx)
        if hi_idx > lo_idx:
            pos = first[sel, None] + taps  # absolute samples
            wave = spike_template_uv(pos / fs - times[sel, None], depth[sel, None])
            inside = (pos >= start) & (pos < stop)
            flat = (pos - start) * n_ch + col[sel, None]
            # One electrode's waveforms never overlap (refractory > width), and other
            # electrodes use other columns, so the flat indices are distinct.
            block.reshape(-1)[flat[inside]] += wave[inside].astype(np.float32)
        yield block


def _write_plate_map(
    path: Path,
    p: SynthParams,
    layout: PlateLayout,
    cond: Mapping[str, str],
    project: str,
    when: dt.datetime,
) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PLATE_MAP_COLUMNS)
        for well in layout.wells:
            w.writerow(
                [
                    project,
                    when.strftime("%m%d%Y"),
                    f"SYN{p.seed:05d}",
                    p.div,
                    well,
                    cond[well],
                    "",
                    "",
                    "",
                ]
            )


def _spk_batches(
    raw_path: Path,
    trains: Mapping[str, np.ndarray],
    sigma: Mapping[str, float],
    threshold_multiplier: float,
    batch_s: float = 10.0,
) -> Iterator[SpikeRecords]:
    """Ground-truth spikes with waveforms cut from the written ``.raw`` (int16 counts)."""
    raw = open_axion(raw_path)
    fs = raw.sampling_rate_hz
    col_of = {e: i for i, e in enumerate(raw.electrodes)}
    names = np.array([e for e in raw.electrodes for _ in range(len(trains[e]))], dtype=object)
    times = np.concatenate([trains[e] for e in raw.electrodes])
    order = np.argsort(times, kind="stable")
    names, times = names[order], times[order]
    start = np.rint(times * fs).astype(np.int64) - _SPK_PRE_SAMPLES
    cols = np.array([col_of[e] for e in names], dtype=np.int64)
    step = max(1, round(batch_s * fs))
    taps = np.arange(_SPK_WIDTH)
    for a in range(0, raw.n_samples, step):
        lo, hi = np.searchsorted(start, [a, a + step])
        if hi == lo:
            continue
        block = raw.read_counts(a, a + step + _SPK_WIDTH)
        rows = np.clip(start[lo:hi, None] - a + taps, 0, len(block) - 1)
        waves = block[rows, cols[lo:hi, None]]
        yield SpikeRecords(
            electrode=names[lo:hi],
            start_sample=start[lo:hi],
            waveforms_uv=waves.astype(np.int16),
            trigger_offset=_SPK_PRE_SAMPLES,
            noise_sd_uv=np.array([sigma[e] for e in names[lo:hi]]),
            threshold_multiplier=threshold_multiplier,
        )


def generate_plate(
    out_dir: str | Path,
    *,
    n_wells: Literal[12, 24, 48, 96],
    duration_s: float,
    sampling_rate_hz: float = 12500.0,
    snr: float = 8.0,
    seed: int = 0,
    name: str = "synth",
    noise_rms_uv: tuple[float, float] = (5.0, 10.0),
    well_kinds: Sequence[WellKind] | None = None,
    conditions: tuple[str, ...] = ("WT", "KO"),
    write_spk: bool = True,
    write_nwb: bool = False,
    chunk_s: float = 1.0,
    recorded_at: dt.datetime = dt.datetime(2024, 5, 17, 13, 45, 12),
) -> SynthPlate:
    """Generate a synthetic plate recording and write its files to ``out_dir``.

    Parameters
    ----------
    out_dir
        Directory for ``<name>.raw``, ``<name>.spk``, ``<name>.nwb`` and
        ``<name>_expLog.csv`` (created if needed).
    n_wells
        12, 24, 48 or 96 (the default Maestro layouts).
    duration_s, sampling_rate_hz
        Length and rate of the recording.
    snr
        Spike trough depth in units of each electrode's total noise RMS.
    seed
        Seed of every random draw (same seed, same files and ground truth).
    noise_rms_uv
        Range of per-electrode noise RMS in µV.
    well_kinds
        Kind of each well in row-major order; default: the four kinds in turn, shuffled.
    conditions
        Conditions assigned to well columns in turn.
    write_spk, write_nwb
        Also write the ``.spk`` (ground-truth spikes) / the NWB copy of the ``.raw``.
    chunk_s
        Generation chunk (memory is about 8 bytes × channels × samples per chunk).
    recorded_at
        Recording start stored in the files.

    Returns
    -------
    SynthPlate
        Paths and ground truth.
    """
    p = SynthParams(
        n_wells=n_wells,
        duration_s=duration_s,
        sampling_rate_hz=sampling_rate_hz,
        snr=snr,
        seed=seed,
        noise_rms_uv=noise_rms_uv,
        conditions=conditions,
    )
    if not (math.isfinite(duration_s) and duration_s > 0.01):
        raise InvalidArgument(f"duration_s must be > 0.01 s, got {duration_s}")
    if not (math.isfinite(snr) and snr >= 0):
        raise InvalidArgument(f"snr must be >= 0, got {snr}")
    if not 0 < noise_rms_uv[0] <= noise_rms_uv[1]:
        raise InvalidArgument(f"noise_rms_uv must be a range (low, high) > 0, got {noise_rms_uv}")
    if not conditions:
        raise InvalidArgument("conditions must not be empty")
    fs = sampling_rate_hz
    if (_PRE_MS + _POST_MS) * 1e-3 * fs + 1 > p.refractory_ms * 1e-3 * fs:
        raise InvalidArgument(f"sampling rate {fs} Hz too high for the refractory guard")
    layout = layout_for_wells(n_wells)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    noise_seq, spike_seq, kind_seq = np.random.SeedSequence(seed).spawn(3)
    kinds = _assign_kinds(layout, np.random.default_rng(kind_seq), well_kinds)
    cond = {w: conditions[(int(w[1:]) - 1) % len(conditions)] for w in layout.wells}
    trains = _spike_trains(p, layout, kinds, np.random.default_rng(spike_seq))
    electrodes = layout.electrodes
    noise_rng = np.random.default_rng(noise_seq)
    sigma = noise_rng.uniform(*noise_rms_uv, len(electrodes))
    plate_map = [WellTreatment(w, treatment=cond[w]) for w in layout.wells]
    meta = {"RecordingName": name, "Description": f"synthetic plate, seed {seed}, snr {snr}"}
    raw_path = write_axion_raw(
        out / f"{name}.raw",
        _signal_chunks(p, trains, electrodes, sigma, noise_rng, max(1, round(chunk_s * fs))),
        layout=layout,
        sampling_rate_hz=fs,
        voltage_scale_uv_per_count=DEFAULT_VOLTAGE_SCALE_UV,
        recorded_at=recorded_at,
        metadata=meta,
        plate_map=plate_map,
    )
    sigma_of = {e: float(s) for e, s in zip(electrodes, sigma, strict=True)}
    spk_path = None
    if write_spk:
        spk_path = write_axion_spk(
            out / f"{name}.spk",
            _spk_batches(raw_path, trains, sigma_of, threshold_multiplier=6.0),
            layout=layout,
            duration_s=round(duration_s * fs) / fs,
            sampling_rate_hz=fs,
            recorded_at=recorded_at,
            metadata=meta,
            plate_map=plate_map,
        )
    nwb_path = None
    if write_nwb:
        from transforms.formats.nwb_ecephys import write_nwb_ecephys

        nwb_path = write_nwb_ecephys(
            out / f"{name}.nwb", open_axion(raw_path), well_conditions=cond
        )
    map_path = out / f"{name}_expLog.csv"
    _write_plate_map(map_path, p, layout, cond, name, recorded_at)
    return SynthPlate(
        raw_path=raw_path,
        spk_path=spk_path,
        nwb_path=nwb_path,
        plate_map_path=map_path,
        layout=layout,
        spike_times_s=trains,
        noise_rms_uv=sigma_of,
        spike_amplitude_uv={e: snr * s for e, s in sigma_of.items()},
        well_kind=kinds,
        condition=cond,
        params=p,
        recorded_at=recorded_at,
    )


def match_spikes(
    truth: Mapping[str, np.ndarray], names: np.ndarray, times: np.ndarray, tol_s: float
) -> tuple[float, float]:
    """Recall and precision of detected spikes against a plate's ground truth.

    ``truth`` maps electrode names to true spike times (``SynthPlate.spike_times_s``);
    ``names`` and ``times`` are the detections. Matching is one-to-one on the same
    electrode: each true spike takes the nearest unused detection within ``tol_s``.
    """
    tp = 0
    order = np.argsort(names, kind="stable")
    names, times = names[order], times[order]
    bounds = {}
    if len(names):
        uniq, first = np.unique(names, return_index=True)
        ends = np.r_[first[1:], len(names)]
        bounds = {str(u): (int(a), int(b)) for u, a, b in zip(uniq, first, ends, strict=True)}
    for e, t in truth.items():
        a, b = bounds.get(e, (0, 0))
        d = np.sort(times[a:b])
        used = np.zeros(len(d), dtype=bool)
        for x in t:
            i = int(np.searchsorted(d, x))
            best = None
            for j in (i - 1, i, i + 1):
                near = 0 <= j < len(d) and not used[j] and abs(d[j] - x) <= tol_s
                if near and (best is None or abs(d[j] - x) < abs(d[best] - x)):
                    best = j
            if best is not None:
                used[best] = True
                tp += 1
    n_true = sum(len(t) for t in truth.values())
    return tp / max(n_true, 1), tp / max(len(times), 1)
