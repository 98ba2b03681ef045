"""Low-pass filtering and dV/dt, as IPFX computes them (4-pole Bessel, zero phase).

IPFX's ``calculate_dvdt`` runs ``scipy.signal.filtfilt`` with a 4-pole Bessel
low-pass and differentiates; dV/dt is in mV/ms (= V/s) and has one sample
fewer than the voltage. Here the same filter runs on a whole block of sweeps at
once (rows), and only on the samples that are analysed, because filtering is
the dominant cost of feature extraction.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import signal

from transforms.errors import InvalidArgument

#: Highest usable fraction of the Nyquist frequency for the Bessel cutoff. The
#: IPFX reference runs used 8 kHz at 20 kHz sampling and 4 kHz at 10 kHz.
NYQUIST_FRACTION = 0.8


def bessel_cutoff_khz(sampling_rate_hz: float, *, requested_khz: float = 10.0) -> float:
    """Cutoff to use for a sampling rate: the requested one, capped below Nyquist.

    Parameters
    ----------
    sampling_rate_hz
        Samples per second.
    requested_khz
        Desired cutoff (IPFX default 10 kHz).

    Returns
    -------
    float
        ``min(requested_khz, 0.8 * Nyquist)`` in kHz.
    """
    if not np.isfinite(sampling_rate_hz) or sampling_rate_hz <= 0:
        raise InvalidArgument(f"invalid sampling rate {sampling_rate_hz!r} Hz")
    nyquist_khz = sampling_rate_hz / 2000.0
    return float(min(requested_khz, NYQUIST_FRACTION * nyquist_khz))


@lru_cache(maxsize=32)
def _bessel(
    cutoff_khz: float, sampling_rate_hz: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    wn = cutoff_khz * 1e3 / (sampling_rate_hz / 2.0)
    if not 0 < wn < 1:
        raise InvalidArgument(
            f"Bessel cutoff {cutoff_khz} kHz is outside (0, Nyquist) "
            f"for {sampling_rate_hz / 1e3:g} kHz sampling"
        )
    b, a = signal.bessel(4, wn, "low")
    # steady-state initial conditions for a unit step; scipy's filtfilt solves
    # for them on every call, which costs as much as filtering a sweep
    return b, a, signal.lfilter_zi(b, a)


@lru_cache(maxsize=32)
def _kernel_norms(cutoff_khz: float, sampling_rate_hz: float) -> tuple[float, float, np.ndarray]:
    """``(||g||_1 bound, ||h||_1, tail)`` of the Bessel design; ``tail[k] = sum |h[k:]|``.

    ``h`` is computed over 2**14 samples and truncated where its tail is below
    1e-15 of its L1 norm, so the autocorrelation ``g`` is a short direct product
    (the full 2**14-sample correlation cost 0.9 s, per distinct sweep length);
    the truncated part adds at most ``2 ||h||_1 tail`` to ``||g||_1``, added here.
    ``||g||_1`` is ``inf`` if ``h`` has not decayed within the samples computed.
    """
    b, a, _ = _bessel(float(cutoff_khz), float(sampling_rate_hz))
    impulse = np.zeros(1 << 14)
    impulse[0] = 1.0
    h = signal.lfilter(b, a, impulse)
    mag = np.abs(h)
    tail = np.concatenate([np.cumsum(mag[::-1])[::-1], [0.0]])
    h_l1 = float(tail[0])
    if abs(h[-1]) > 1e-12:  # not decayed within the response computed: no bound
        return float("inf"), h_l1, tail
    n = int(np.argmax(tail <= 1e-15 * h_l1))  # first k whose tail is negligible
    g = np.correlate(h[:n], h[:n], mode="full")
    return float(np.abs(g).sum() + 2.0 * h_l1 * tail[n]), h_l1, tail


def slope_gain(cutoff_khz: float, sampling_rate_hz: float, *, settled_samples: int) -> float:
    """Bound on ``max|dV/dt|`` after :func:`lowpass`, per unit of ``max|dV/dt|`` before.

    Differencing commutes with the filter, and the odd extension and steady-state
    starts of :func:`lowpass` add no slope the trace does not have. Two passes then
    act as a convolution with the autocorrelation ``g`` of the impulse response
    ``h``, except that the backward pass starts at the end of the forward output
    rather than where it would go on: an error bounded by ``||h||_1`` times the
    tail of ``|h|`` past ``settled_samples`` (the samples that follow the points of
    interest). The result, ``||g||_1`` plus that term, has a 1 % margin for
    rounding. A sweep whose raw slope times this stays below the spike cutoff there
    cannot hold a spike, and need not be filtered.

    The kernel's norms are computed once per filter design (:func:`_kernel_norms`);
    each call is then a lookup, whatever ``settled_samples`` is.
    """
    g_l1, h_l1, tail = _kernel_norms(float(cutoff_khz), float(sampling_rate_hz))
    k = min(max(int(settled_samples), 0), len(tail) - 1)
    return float((g_l1 + h_l1 * float(tail[k])) * 1.01)


def lowpass(v: np.ndarray, *, sampling_rate_hz: float, cutoff_khz: float) -> np.ndarray:
    """Zero-phase 4-pole Bessel low-pass along the last axis (IPFX's filter).

    Bit-for-bit ``scipy.signal.filtfilt(b, a, v, axis=-1)`` (odd extension of
    ``3 * max(len(a), len(b))`` samples, steady-state initial conditions,
    forward then backward pass), with the initial conditions cached per design.
    """
    b, a, zi = _bessel(float(cutoff_khz), float(sampling_rate_hz))
    n = 3 * max(len(a), len(b))
    if v.shape[-1] <= n:  # too short to extend: scipy's own checks and message
        return np.asarray(signal.filtfilt(b, a, v, axis=-1))
    head = 2 * v[..., :1] - v[..., n:0:-1]
    tail = 2 * v[..., -1:] - v[..., -2 : -n - 2 : -1]
    ext = np.concatenate((head, v, tail), axis=-1)
    fwd, _ = signal.lfilter(b, a, ext, axis=-1, zi=zi * ext[..., :1])
    rev = fwd[..., ::-1]
    back, _ = signal.lfilter(b, a, rev, axis=-1, zi=zi * rev[..., :1])
    return np.asarray(back[..., ::-1][..., n:-n])


def dvdt_mv_per_ms(
    v: np.ndarray, *, sampling_rate_hz: float, cutoff_khz: float | None
) -> np.ndarray:
    """dV/dt in mV/ms along the last axis, after the Bessel filter if a cutoff is given.

    Returns an array one sample shorter than ``v`` along the last axis;
    ``dvdt[k]`` is the slope between samples ``k`` and ``k + 1``.
    """
    vf = (
        v
        if cutoff_khz is None
        else lowpass(v, sampling_rate_hz=sampling_rate_hz, cutoff_khz=cutoff_khz)
    )
    # mV per sample -> mV/ms
    return np.diff(vf, axis=-1) * (sampling_rate_hz * 1e-3)
