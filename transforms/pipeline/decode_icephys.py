"""Rows of the patch-clamp tables for one decoded file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from transforms import formats, spec
from transforms.lake.provenance import with_provenance
from transforms.pipeline.landing import Target
from transforms.recording.icephys import IcephysRecording

if TYPE_CHECKING:
    from transforms.pipeline.paramset import ParameterSet

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


def recording_row(source: spec.SourceFile, rec: IcephysRecording, target: Target) -> pa.Table:
    """The ``icephys_recordings`` row of a decoded file (before provenance)."""
    sweep = rec.sweeps[0]
    row = {
        "source_path": source.uri,
        "file_name": source.name,
        "file_size_bytes": source.size_bytes,
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
        "cell_id": target.cell_id or rec.metadata.get("cell_id") or Path(source.name).stem,
        "subject": target.subject or rec.metadata.get("subject"),
        "notes": target.notes,
        # subject details: the sidecar's, else the file's (NWB /general/subject)
        **{k: getattr(target, k) or rec.metadata.get(k) for k in spec.SUBJECT_FIELDS},
    }
    return pa.Table.from_pylist([row], schema=RECORDING_SCHEMA)


def decode_icephys(
    source: spec.SourceFile,
    *,
    kind: str,
    target: Target,
    ingest_id: str,
    parameter_set: ParameterSet | None = None,
) -> tuple[str, dict[str, pa.Table]]:
    """Decode, extract features and shape the rows of every icephys table.

    ``parameter_set`` (the lab's ``neurocyte.toml``) overrides the extraction defaults for
    the recording's protocol; ``params_json`` records the values applied and the set.
    """
    from transforms.icephys.extract import IcephysParams, extract_features

    file_id = source.file_id
    rec = formats.read_icephys(source.local_path, kind=kind)
    protocol = rec.protocol or None
    chosen = parameter_set.icephys_params(protocol) if parameter_set else IcephysParams()
    features = extract_features(rec, params=chosen)
    params: dict[str, Any] = {"reader": rec.source_format, **features.params.as_dict()}
    if parameter_set is not None:
        params["parameter_set"] = parameter_set.provenance(protocol=protocol, modality="icephys")

    def prov(rows: pa.Table) -> pa.Table:
        return with_provenance(
            rows, file_id=file_id, ingest_id=ingest_id, partition=target.partition, params=params
        )

    tables = {
        spec.ICEPHYS_RECORDINGS: prov(recording_row(source, rec, target)),
        spec.ICEPHYS_SWEEPS: prov(features.sweeps),
        spec.ICEPHYS_SPIKES: prov(features.spikes),
        spec.ICEPHYS_CELL_FEATURES: prov(features.cell),
    }
    return rec.source_format, tables
