"""The file formats, one module each, behind one registry.

Every consumer (ingest, raw access, export, the page) reaches a file's content
through these functions, so adding a format means one module and one
:data:`FORMATS` entry:

* :func:`kind_of` — which format a file is, by name and (NWB) by content (a
  ``<file_id>.zarr`` directory is a raw archive, :mod:`transforms.formats.raw_archive`);
* :func:`read_icephys` — a patch-clamp file as an
  :class:`~transforms.recording.icephys.IcephysRecording`;
* :func:`open_continuous` — a continuous MEA recording as a
  :class:`~transforms.recording.continuous.ContinuousSource` (windows read lazily);
* :func:`read_plate` — an MEA spike file as :class:`~transforms.recording.plate.PlateSpikes`;
* :func:`read_vendor_metrics` — an Axion Neural Metric Tool export's metric values.

Readers are imported lazily: pynwb, h5py and pyabf cost seconds to import and a
worker needs only the ones its files use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from transforms import spec
from transforms.errors import SpecError, UnsupportedRecording

if TYPE_CHECKING:
    from transforms.formats.axis_neural_metrics import NeuralMetrics
    from transforms.recording.continuous import ContinuousSource
    from transforms.recording.icephys import IcephysRecording
    from transforms.recording.plate import PlateSpikes

Modality = Literal["icephys", "mea"]
Access = Literal["icephys", "continuous", "spikes", "vendor_metrics"]


@dataclass(frozen=True)
class Format:
    """One registered format.

    Attributes
    ----------
    kind
        The registry key, stored as ``reader`` in ``params_json`` and (MEA) as
        ``source_kind``.
    modality
        Which tables its rows go to.
    access
        How its content is read: a patch-clamp recording, a continuous source, spikes,
        or metric values computed by the vendor's software.
    splittable
        Large files may be staged as several well groups (continuous plates).
    """

    kind: str
    modality: Modality
    access: Access
    splittable: bool = False


FORMATS: Final[dict[str, Format]] = {
    f.kind: f
    for f in (
        Format("abf", "icephys", "icephys"),
        Format("nwb", "icephys", "icephys", splittable=True),
        Format("nwb_ecephys", "mea", "continuous", splittable=True),
        Format("axion_raw", "mea", "continuous", splittable=True),
        Format("raw_archive", "mea", "continuous", splittable=True),
        Format("axion_spk", "mea", "spikes"),
        Format("spike_list", "mea", "spikes"),
        Format("neural_metrics", "mea", "vendor_metrics"),
    )
}


def _is_ecephys_nwb(path: Path) -> bool:
    """True if the NWB file's acquisition holds an ElectricalSeries (an MEA recording)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            acq = f.get("acquisition")
            if not isinstance(acq, h5py.Group):
                return False
            for obj in acq.values():
                kind = obj.attrs.get("neurodata_type", b"")
                kind = kind.decode() if isinstance(kind, bytes) else str(kind)
                if kind == "ElectricalSeries":
                    return True
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError):
        # not HDF5, or a broken structure: the icephys reader reports it clearly
        return False
    return False


def kind_of(path: str | Path) -> str:
    """The registry key of a file: by name (:func:`transforms.spec.recording_kind`), then,
    for NWB, by content (an ``ElectricalSeries`` in acquisition is an MEA recording).

    Raises
    ------
    SpecError
        If the name is not one of a recording.
    """
    path = Path(path)
    if spec.is_raw_archive_name(path.name) and path.is_dir():
        return "raw_archive"
    kind = spec.recording_kind(path.name)
    if kind is None:
        raise SpecError(f"{path.name}: unsupported file type {path.suffix.lower()!r}")
    if kind == "nwb" and _is_ecephys_nwb(path):
        return "nwb_ecephys"
    return kind


def format_of(kind: str) -> Format:
    """The registered format of a kind.

    Raises
    ------
    SpecError
        If no format has this kind.
    """
    try:
        return FORMATS[kind]
    except KeyError:
        raise SpecError(f"unknown format {kind!r}; known: {', '.join(FORMATS)}") from None


def read_icephys(path: str | Path, *, kind: str | None = None) -> IcephysRecording:
    """Decode a patch-clamp file (ABF 1/2, NWB icephys) into the neutral model.

    Raises
    ------
    DecodeError, UnsupportedRecording
        Corrupt content, or a file that is not a patch-clamp recording.
    """
    path = Path(path)
    kind = kind or kind_of(path)
    if kind == "abf":
        from transforms.formats.abf import read_abf

        return read_abf(path)
    if kind == "nwb":
        from transforms.formats.nwb_icephys import read_nwb

        return read_nwb(path)
    raise UnsupportedRecording(f"{path.name}: not a patch-clamp recording ({kind})")


def open_continuous(path: str | Path, *, kind: str | None = None) -> ContinuousSource:
    """Open a continuous MEA recording (Axion ``.raw``, NWB ``ElectricalSeries``, raw archive).

    Nothing but headers is read here; windows are read on demand.

    Raises
    ------
    DecodeError, UnsupportedRecording
        Corrupt content, or a file without continuous voltage data (spike files,
        spike lists).
    """
    path = Path(path)
    kind = kind or kind_of(path)
    if kind == "axion_raw":
        from transforms.formats.axion import open_axion

        return open_axion(path)
    if kind == "nwb_ecephys":
        from transforms.formats.nwb_ecephys import open_nwb_ecephys

        return open_nwb_ecephys(path)
    if kind == "raw_archive":
        from transforms.formats.raw_archive import open_raw_archive

        return open_raw_archive(path)
    raise UnsupportedRecording(
        f"{path.name}: no continuous voltage to read ({kind}; only .raw and NWB "
        "ElectricalSeries recordings hold raw samples; spike files and spike lists do not)"
    )


def read_plate(path: str | Path, *, kind: str | None = None) -> PlateSpikes:
    """Read an MEA spike file (AxIS spike list, Axion ``.spk``) as plate spikes.

    Continuous recordings have no spikes until detection runs: open them with
    :func:`open_continuous` and detect (:mod:`transforms.mea.detect`).

    Raises
    ------
    DecodeError, UnsupportedRecording
        Corrupt content, or a file that holds no spikes.
    """
    path = Path(path)
    kind = kind or kind_of(path)
    if kind == "spike_list":
        from transforms.formats.axis_spikelist import plate_spikes, read_spike_list

        return plate_spikes(read_spike_list(path), kind)
    if kind == "axion_spk":
        from transforms.formats.axion import open_axion

        return spk_plate_spikes(open_axion(path), kind)
    raise UnsupportedRecording(f"{path.name}: not an MEA spike file ({kind})")


def read_vendor_metrics(path: str | Path, *, kind: str | None = None) -> NeuralMetrics:
    """Read a vendor metrics export (Axion Neural Metric Tool ``*_neuralMetrics.csv``).

    Raises
    ------
    DecodeError, UnsupportedRecording
        Unparsable values (naming the line), or a file that holds no metric block.
    """
    path = Path(path)
    kind = kind or kind_of(path)
    if kind == "neural_metrics":
        from transforms.formats.axis_neural_metrics import read_neural_metrics

        return read_neural_metrics(path)
    raise UnsupportedRecording(f"{path.name}: not a vendor metrics export ({kind})")


def spk_plate_spikes(spk: object, kind: str = "axion_spk") -> PlateSpikes:
    """An opened ``.spk`` as plate spikes: its analysed window and the wells it wires.

    Spikes before zero, or more than a second (AxIS rounds sections to whole
    seconds) after the declared duration, are left out and counted in the flags
    (``spikes_before_start:<n>``, ``spikes_after_end:<n>``). Without a declared
    duration the last spike ends the recording.
    """
    import pyarrow.compute as pc

    from transforms.formats.axis_spikelist import (
        END_SLACK_S,
        SPIKES_AFTER_END,
        SPIKES_BEFORE_START,
    )
    from transforms.recording.plate import PlateSpikes, window_spikes

    f: Any = spk
    declared = f.declared_duration_s
    spikes, n_before, n_after = window_spikes(
        f.read_spikes(), duration_s=declared, end_slack_s=END_SLACK_S
    )
    flags = list(f.flags)
    if n_before:
        flags.append(f"{SPIKES_BEFORE_START}:{n_before}")
    if n_after:
        flags.append(f"{SPIKES_AFTER_END}:{n_after}")
    last = float(pc.max(spikes["time_s"]).as_py()) if spikes.num_rows else 0.0
    duration = max(declared or 0.0, last)
    meta = f.plate_metadata()
    return PlateSpikes(
        kind,
        spikes,
        f.layout,
        duration,
        declared,
        f.sampling_rate_hz,
        meta.get("recorded_at"),
        tuple(flags),
        None,
        embedded_plate_map(f),
        named_wells=f.channel_wells,
        metadata=meta,
    )


def embedded_plate_map(f: object) -> dict[str, str]:
    """Well -> treatment from an Axion file's WellTreatment entries, if any."""
    return {e.well: e.treatment for e in getattr(f, "plate_map", ()) if e.treatment}
