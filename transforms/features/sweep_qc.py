"""Sweep quality control with IPFX's criteria (``qc_feature_extractor``).

Current-clamp sweeps with a stimulus are checked for: fast noise (RMS over
1.5 ms) at the start of the pre-stimulus epoch and at the end of the
recording, slow noise (RMS over the 500 ms before the stimulus), drift of the
mean Vm between the pre-stimulus epoch and the last 500 ms of the recording
(skipped for ramps, which do not recover), and truncation (the recording
stops, or turns to NaN, before the stimulus ends). IPFX places the pre-stimulus
epoch 500 ms before the stimulus; many ABF protocols start the stimulus sooner,
so the epoch is clamped to the sweep start (after any test pulse).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class SweepQCParams:
    """Thresholds of IPFX's "Ephys QC Criteria v1.1"."""

    pre_noise_rms_mv_max: float = 0.07
    post_noise_rms_mv_max: float = 0.07
    slow_noise_rms_mv_max: float = 0.5
    vm_delta_mv_max: float = 1.0
    noise_epoch_s: float = 0.0015
    stability_epoch_s: float = 0.5

    def as_dict(self) -> dict[str, float | str | int]:
        return dict(asdict(self))


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
        for sweeps without a stimulus, which only get the truncation check).
    pre_start
        Earliest sample the pre-stimulus epochs may use (after a test pulse).
    is_ramp
        Ramps skip the end-of-recording checks.
    """
    reasons: list[str] = []
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
        if not all_finite:
            reasons.append("truncated")
        return reasons
    if rec_end < stim_end or not (all_finite or fin[stim_start:stim_end].all()):
        reasons.append("truncated")
        return reasons
    n_noise = max(int(params.noise_epoch_s * rate_hz), 1)
    n_stab = int(params.stability_epoch_s * rate_hz)
    pre0 = max(stim_start - 1 - n_stab, pre_start)
    pre = v[pre0 : stim_start - 1]
    expt0 = max(stim_start - n_stab, pre_start)
    pre_noise = _rms(v[expt0 : expt0 + n_noise])
    if pre_noise > params.pre_noise_rms_mv_max:
        reasons.append(f"pre_noise_rms {pre_noise:.3f} mV > {params.pre_noise_rms_mv_max}")
    slow = _rms(pre)
    if slow > params.slow_noise_rms_mv_max:
        reasons.append(f"slow_noise_rms {slow:.3f} mV > {params.slow_noise_rms_mv_max}")
    if not is_ramp:
        post_noise = _rms(v[rec_end - n_noise : rec_end])
        if post_noise > params.post_noise_rms_mv_max:
            reasons.append(f"post_noise_rms {post_noise:.3f} mV > {params.post_noise_rms_mv_max}")
        post = v[max(rec_end - n_stab, stim_end) : rec_end]
        if pre.size and post.size:
            delta = abs(float(pre.mean()) - float(post.mean()))
            if delta > params.vm_delta_mv_max:
                reasons.append(f"vm_delta {delta:.3f} mV > {params.vm_delta_mv_max}")
    return reasons
