"""Rows of the patch-clamp tables for one decoded file."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from transforms import spec
from transforms.lake.provenance import with_provenance
from transforms.pipeline.landing import Target
from transforms.recording.icephys import IcephysRecording

RECORDING_SCHEMA = pa.schema(
    [
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("file_name", pa.string(), nullable=False),
        pa.field("file_size_bytes", pa.int64(), nullable=False),
        pa.field("source_format", pa.string(), nullable=False),
        pa.field("format_version", pa.string()),
        pa.field("protocol", pa.string()),
        pa.field("recorded_at", pa.timestamp("us")),
        pa.field("clamp_mode", pa.string(), nullable=False),
        pa.field("n_sweeps", pa.int32(), nullable=False),
        pa.field("sampling_rate_hz", pa.float64(), nullable=False),
        pa.field("sweep_duration_s", pa.float64(), nullable=False),
        pa.field("channel_names", pa.string()),
        pa.field("channel_units", pa.string()),
        pa.field("reader_qc_flags", pa.string()),
        pa.field("cell_id", pa.string()),
        pa.field("subject", pa.string()),
        pa.field("notes", pa.string()),
        *[pa.field(name, pa.string()) for name in spec.SUBJECT_FIELDS],
    ]
)


def read_recording(path: Path) -> IcephysRecording:
    """Decode an ABF or NWB file into the neutral model."""
    if path.suffix.lower() == ".nwb":
        from transforms.formats.nwb_icephys import read_nwb

        return read_nwb(path)
    from transforms.formats.abf import read_abf

    return read_abf(path)


def recording_row(path: Path, rec: IcephysRecording, target: Target) -> pa.Table:
    sweep = rec.sweeps[0]
    row = {
        "source_path": str(path.resolve()),
        "file_name": path.name,
        "file_size_bytes": path.stat().st_size,
        "source_format": rec.source_format,
        "format_version": rec.format_version,
        "protocol": rec.protocol or None,
        "recorded_at": rec.recorded_at,
        "clamp_mode": rec.clamp_mode,
        "n_sweeps": len(rec.sweeps),
        "sampling_rate_hz": float(sweep.sampling_rate_hz),
        "sweep_duration_s": float(sweep.duration_s),
        "channel_names": ";".join(rec.channel_names),
        "channel_units": ";".join(rec.channel_units),
        "reader_qc_flags": ";".join(rec.qc_flags),
        "cell_id": target.cell_id or rec.metadata.get("cell_id") or path.stem,
        "subject": target.subject or rec.metadata.get("subject"),
        "notes": target.notes,
        # subject details: the sidecar's, else the file's (NWB /general/subject)
        **{k: getattr(target, k) or rec.metadata.get(k) for k in spec.SUBJECT_FIELDS},
    }
    return pa.Table.from_pylist([row], schema=RECORDING_SCHEMA)


def decode_icephys(
    path: Path, *, target: Target, file_id: str, ingest_id: str
) -> tuple[str, dict[str, pa.Table]]:
    """Decode, extract features and shape the rows of every icephys table."""
    from transforms.icephys.extract import extract_features

    rec = read_recording(path)
    features = extract_features(rec)
    params = {"reader": rec.source_format, **features.params.as_dict()}

    def prov(rows: pa.Table) -> pa.Table:
        return with_provenance(
            rows, file_id=file_id, ingest_id=ingest_id, partition=target.partition, params=params
        )

    tables = {
        spec.ICEPHYS_RECORDINGS: prov(recording_row(path, rec, target)),
        spec.ICEPHYS_SWEEPS: prov(features.sweeps),
        spec.ICEPHYS_SPIKES: prov(features.spikes),
        spec.ICEPHYS_CELL_FEATURES: prov(features.cell),
    }
    return rec.source_format, tables
