"""Generate a demo landing zone of realistic patch-clamp recordings.

Cells of two genotypes (WT, KO) at two ages, recorded with a long-square
current-step protocol and written as pClamp-style ABF1 files with their
epoch tables. KO cells get a higher input resistance and a smaller M-current
(hyperexcitable, as in many neurodevelopmental-disorder models), so the demo
query has a real effect to show. One extra file has a gain error (Vm scaled
20x, as when the amplifier's scaled-output gain is mis-set): it must be
quarantined by QC, not published.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from transforms.formats.abf1_writer import StepEpoch, command_waveform, write_abf1
from transforms.synth.neuron import CellParams, simulate

SAMPLING_RATE_HZ = 20000.0
SWEEP_S = 1.5
STIM_S = 1.0
PRE_STIM_SAMPLES = 2000  # 100 ms of baseline after the pClamp pre-epoch hold
FIRST_LEVEL_PA = -110.0
STEP_PA = 30.0
N_SWEEPS = 12
LAB = "demo-lab"
GAIN_ERROR_FACTOR = 20.0


@dataclass(frozen=True)
class DemoCell:
    path: Path
    condition: str
    timepoint: str
    cell_id: str
    params: CellParams


def protocol_epochs(n_samples: int) -> list[StepEpoch]:
    stim = int(STIM_S * SAMPLING_RATE_HZ)
    rest = n_samples - n_samples // 64 - PRE_STIM_SAMPLES - stim
    return [
        StepEpoch(PRE_STIM_SAMPLES, 0.0),
        StepEpoch(stim, FIRST_LEVEL_PA, STEP_PA),
        StepEpoch(rest, 0.0),
    ]


def _cell_params(rng: np.random.Generator, condition: str) -> CellParams:
    base = CellParams()
    ko = condition == "KO"
    return replace(
        base,
        c_pf=float(rng.uniform(80, 120)),
        g_leak_ns=float(rng.uniform(2.6, 3.4) if ko else rng.uniform(3.6, 4.6)),
        g_m_ns=float(rng.uniform(4, 6) if ko else rng.uniform(7, 10)),
        g_h_ns=float(rng.uniform(2.0, 4.0)),
        e_leak_mv=float(rng.uniform(-72, -67)),
    )


def generate_demo(
    landing: str | Path,
    *,
    cells_per_group: int = 2,
    conditions: tuple[str, ...] = ("WT", "KO"),
    timepoints: tuple[str, ...] = ("P14", "P21"),
    with_bad_file: bool = True,
    seed: int = 7,
) -> list[DemoCell]:
    """Write ABF files (and sidecars) under ``<landing>/<lab>/<condition>/<timepoint>/``."""
    rng = np.random.default_rng(seed)
    n_samples = int(SWEEP_S * SAMPLING_RATE_HZ)
    epochs = protocol_epochs(n_samples)
    command = command_waveform(n_samples, N_SWEEPS, epochs)
    cells: list[DemoCell] = []
    for condition in conditions:
        for timepoint in timepoints:
            for k in range(cells_per_group):
                cell_id = f"{condition}-{timepoint}-c{k + 1:02d}"
                folder = Path(landing) / LAB / condition / timepoint
                cells.append(
                    DemoCell(
                        folder / f"{cell_id}.abf",
                        condition,
                        timepoint,
                        cell_id,
                        _cell_params(rng, condition),
                    )
                )
    rows = [c.params for c in cells for _ in range(N_SWEEPS)]
    traces = simulate(
        np.tile(command, (len(cells), 1)),
        sampling_rate_hz=SAMPLING_RATE_HZ,
        cells=rows,
        seed=seed,
    )
    start = datetime(2026, 3, 2, 10, 0, 0)
    for i, cell in enumerate(cells):
        cell.path.parent.mkdir(parents=True, exist_ok=True)
        write_abf1(
            cell.path,
            traces[i * N_SWEEPS : (i + 1) * N_SWEEPS],
            sampling_rate_hz=SAMPLING_RATE_HZ,
            epochs=epochs,
            recorded_at=start + timedelta(minutes=17 * i),
        )
        sidecar = {"cell_id": cell.cell_id, "subject": f"mouse-{cell.condition}-{i // 2 + 1}"}
        cell.path.with_name(cell.path.name + ".meta.json").write_text(
            json.dumps(sidecar, indent=1), encoding="utf-8"
        )
    if with_bad_file:
        bad = cells[0]
        path = bad.path.with_name(f"{bad.cell_id}-gain-error.abf")
        write_abf1(
            path,
            traces[:N_SWEEPS] * GAIN_ERROR_FACTOR,
            sampling_rate_hz=SAMPLING_RATE_HZ,
            epochs=epochs,
            recorded_at=start - timedelta(minutes=30),
        )
        cells.append(replace(bad, path=path, cell_id=f"{bad.cell_id}-gain-error"))
    return cells
