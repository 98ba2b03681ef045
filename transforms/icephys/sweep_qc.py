"""Sweep quality control with IPFX's criteria (``qc_feature_extractor``).

Current-clamp sweeps with a stimulus are checked for: fast noise (RMS over
1.5 ms) at the start of the pre-stimulus epoch and at the end of the
recording, slow noise (RMS over the 500 ms before the stimulus), drift of the
mean Vm between the pre-stimulus epoch and the last 500 ms of the recording
(skipped for ramps, which do not recover), and truncation (the recording
stops, or turns to NaN, before the stimulus ends). IPFX places the pre-stimulus
epoch 500 ms before the stimulus; many ABF protocols start the stimulus sooner,
so the epoch is clamped to the sweep start. Two checks are added to IPFX's:
``no_data`` (no finite sample at all) and ``flat`` (not a single ADC step of
variation over the baseline and the stimulus window: a disconnected or
saturated input; any live recording carries a few steps of noise).

The criteria are IPFX's; the thresholds come in named profiles
(:data:`QC_PROFILES`): ``"ipfx"`` is IPFX's "Ephys QC Criteria v1.1" for the
Allen rigs, ``"neurocyte"`` (the default) is set for typical pClamp rigs, see
:func:`qc_profile`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from transforms.errors import InvalidArgument


@dataclass(frozen=True)
class SweepQCParams:
    """Sweep QC thresholds (defaults: IPFX's "Ephys QC Criteria v1.1")."""

    pre_noise_rms_mv_max: float = 0.07
    post_noise_rms_mv_max: float = 0.07
    slow_noise_rms_mv_max: float = 0.5
    vm_delta_mv_max: float = 1.0
    noise_epoch_s: float = 0.0015
    stability_epoch_s: float = 0.5

    def as_dict(self) -> dict[str, float | str | int]:
        return dict(asdict(self))


#: Named threshold sets. ``ipfx``: IPFX's exact values. ``neurocyte``: see
#: :func:`qc_profile` for the reasoning behind each number.
QC_PROFILES: dict[str, SweepQCParams] = {
    "ipfx": SweepQCParams(),
    "neurocyte": SweepQCParams(
        pre_noise_rms_mv_max=0.3,
        post_noise_rms_mv_max=0.3,
        slow_noise_rms_mv_max=2.0,
        vm_delta_mv_max=3.0,
    ),
}


def qc_profile(name: str) -> SweepQCParams:
    """The sweep QC thresholds of a named profile.

    ``"ipfx"`` reproduces IPFX's Allen-rig thresholds (fast noise 0.07 mV RMS,
    slow noise 0.5 mV RMS, Vm change 1 mV). Those assume MIES rigs: high-gain
    digitisation, an autobias current holding Vm and >= 1 s of recovery after
    the stimulus. On ordinary pClamp recordings almost no sweep passes them
    (the four reference cells: 0.07-0.12 mV fast noise on most sweeps). The
    ``"neurocyte"`` profile keeps every criterion and sets:

    * fast (pre/post) noise 0.3 mV RMS: the quantisation noise of a 16-bit
      +-10 V digitiser is LSB/sqrt(12), 0.009 mV at the usual x10 Vm gain
      (LSB 0.03 mV) but 0.09 mV at x1 gain (LSB 0.3 mV), and a current-clamp
      amplifier with a cell adds ~0.1 mV RMS at 10 kHz bandwidth; 0.3 mV is
      three times the larger of the two, i.e. 10 LSB at x10 gain. Reference
      cells measure 0.01-0.15 mV; hum or a failing seal exceeds it.
    * slow noise 2 mV RMS over the 500 ms baseline: without autobias the
      resting potential wanders (reference cells 0.1-1.3 mV), but a single
      spontaneous action potential (~100 mV for ~1 ms) in the baseline alone
      gives ~4.5 mV RMS and fails, as does an unstable baseline.
    * Vm change 3 mV between the baseline and the last 500 ms: pClamp step
      protocols often end 0.3 s after the stimulus, so the epoch still holds
      the after-hyperpolarisation or rebound (up to 2.7 mV on the reference
      cells); a seal or access change shifts Vm by more.

    Raises
    ------
    InvalidArgument
        If ``name`` is not a known profile.
    """
    try:
        return QC_PROFILES[name]
    except KeyError:
        raise InvalidArgument(
            f"unknown sweep QC profile {name!r}; known: {', '.join(sorted(QC_PROFILES))}"
        ) from None


def with_overrides(base: SweepQCParams, **overrides: float | None) -> SweepQCParams:
    """``base`` with every non-None override applied."""
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _rms(x: np.ndarray) -> float:
    if x.size == 0:
        return 0.0
    return float(np.sqrt(np.mean((x - x.mean()) ** 2)))


def sweep_qc(
    v: np.ndarray,
    *,
    rate_hz: float,
    stim_start: int | None,
    stim_end: int | None,
    pre_start: int,
    is_ramp: bool,
    params: SweepQCParams = SweepQCParams(),
) -> list[str]:
    """Reasons a current-clamp sweep fails QC (empty list if it passes).

    Parameters
    ----------
    v
        Membrane potential, mV.
    rate_hz
        Sampling rate.
    stim_start, stim_end
        First stimulated sample and first sample after the stimulus (``None``
        for sweeps without a stimulus, which only get the truncation and
        flatness checks).
    pre_start
        Earliest sample the pre-stimulus epochs may use (after a test pulse).
    is_ramp
        Ramps skip the end-of-recording checks.
    params
        Thresholds.
    """
    fin = np.isfinite(v)
    all_finite = bool(fin.all())
    if all_finite:
        rec_end = v.size
    else:
        finite = np.flatnonzero(fin)
        if finite.size == 0:
            return ["no_data"]
        rec_end = int(finite[-1]) + 1  # IPFX recording epoch: up to the last non-NaN sample
    if stim_start is None or stim_end is None:
        flat = ["flat"] if np.nanmax(v) == np.nanmin(v) else []
        return ([] if all_finite else ["truncated"]) + flat
    if rec_end < stim_end or not (all_finite or fin[stim_start:stim_end].all()):
        return ["truncated"]
    n_noise = max(int(params.noise_epoch_s * rate_hz), 1)
    n_stab = int(params.stability_epoch_s * rate_hz)
    pre0 = max(stim_start - 1 - n_stab, pre_start)
    pre = v[pre0 : stim_start - 1]
    slow = _rms(pre)
    win = v[stim_start:stim_end]
    if slow == 0 and (win.size == 0 or np.nanmax(win) == np.nanmin(win)):
        return ["flat"]
    expt0 = max(stim_start - n_stab, pre_start)
    pre_noise = _rms(v[expt0 : expt0 + n_noise])
    post_noise = _rms(v[rec_end - n_noise : rec_end])
    post = v[max(rec_end - n_stab, stim_end) : rec_end]
    delta = abs(float(pre.mean()) - float(post.mean())) if pre.size and post.size else 0.0
    return _reasons(pre_noise, slow, post_noise, delta, is_ramp=is_ramp, params=params)


def _reasons(
    pre_noise: float,
    slow: float,
    post_noise: float,
    delta: float,
    *,
    is_ramp: bool,
    params: SweepQCParams,
) -> list[str]:
    reasons: list[str] = []
    if pre_noise > params.pre_noise_rms_mv_max:
        reasons.append(f"pre_noise_rms {pre_noise:.3f} mV > {params.pre_noise_rms_mv_max}")
    if slow > params.slow_noise_rms_mv_max:
        reasons.append(f"slow_noise_rms {slow:.3f} mV > {params.slow_noise_rms_mv_max}")
    if not is_ramp:
        if post_noise > params.post_noise_rms_mv_max:
            reasons.append(f"post_noise_rms {post_noise:.3f} mV > {params.post_noise_rms_mv_max}")
        if delta > params.vm_delta_mv_max:
            reasons.append(f"vm_delta {delta:.3f} mV > {params.vm_delta_mv_max}")
    return reasons


def sweep_qc_block(
    head: np.ndarray,
    tail: np.ndarray,
    *,
    head_start: int,
    n_samples: int,
    rate_hz: float,
    stim_start: int,
    stim_end: int,
    is_ramp: bool,
    params: SweepQCParams = SweepQCParams(),
) -> list[list[str]]:
    """:func:`sweep_qc` for a block of finite sweeps sharing one stimulus window.

    Only the two parts of the sweeps that QC reads are passed, so a block of
    long sweeps need not be copied whole.

    Parameters
    ----------
    head
        Samples ``head_start ...`` of every sweep, shape ``(rows, width)``, mV,
        all finite; must hold the pre-stimulus epochs (from
        ``stim_start - 1 - stability_epoch`` or the sweep start) and the first
        samples of the stimulus.
    tail
        The last samples of every sweep, at least the stability epoch (or the
        part after ``stim_end``), mV, all finite.
    head_start
        Sweep sample at ``head[:, 0]``.
    n_samples
        Length of the sweeps.
    rate_hz
        Sampling rate.
    stim_start, stim_end
        First stimulated sample and first sample after the stimulus.
    is_ramp
        Ramps skip the end-of-recording checks.
    params
        Thresholds.

    Returns
    -------
    list of list of str
        The reasons of each row, as :func:`sweep_qc` gives them, except that
        flatness is judged on the stimulus samples within ``head``.
    """
    n_rows = head.shape[0]
    n = n_samples
    if n < stim_end:
        return [["truncated"] for _ in range(n_rows)]
    n_noise = max(int(params.noise_epoch_s * rate_hz), 1)
    n_stab = int(params.stability_epoch_s * rate_hz)
    pre0 = max(stim_start - 1 - n_stab, 0)
    expt0 = max(stim_start - n_stab, 0)
    zeros = np.zeros(n_rows)
    h = head_start
    pre = head[:, pre0 - h : stim_start - 1 - h]
    fast = head[:, expt0 - h : expt0 + n_noise - h]
    t = n - tail.shape[1]  # sweep sample at tail[:, 0]
    # np.std is IPFX's RMS about the mean (sqrt(mean((x - mean)^2)))
    slow = pre.std(axis=1) if pre.shape[1] else zeros
    pre_noise = fast.std(axis=1) if fast.shape[1] else zeros
    post_noise = tail[:, n - n_noise - t :].std(axis=1)
    post = tail[:, max(n - n_stab, stim_end) - t :]
    if pre.shape[1] and post.shape[1]:
        delta = np.abs(pre.mean(axis=1) - post.mean(axis=1))
    else:
        delta = zeros
    flat = slow == 0
    if flat.any():  # rare: only then scan the stimulus samples too
        win = head[flat, stim_start - h :]
        if win.shape[1]:
            flat[flat] = win.max(axis=1) == win.min(axis=1)
    return [
        ["flat"]
        if flat[r]
        else _reasons(
            float(pre_noise[r]),
            float(slow[r]),
            float(post_noise[r]),
            float(delta[r]),
            is_ramp=is_ramp,
            params=params,
        )
        for r in range(n_rows)
    ]
