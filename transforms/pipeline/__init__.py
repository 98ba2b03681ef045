"""The pipeline steps the README describes, as plain functions (the DAGs and the CLI call these).

* :mod:`~transforms.pipeline.landing` / :mod:`~transforms.pipeline.discover` — what has
  landed, its partition and metadata, what is new (by content hash);
* :mod:`~transforms.pipeline.identity` — an attempt's identity (content hash, metadata
  digest) and the one rule deciding whether a file is ingested again;
  :mod:`~transforms.pipeline.paramset` — parameter sets per lab and protocol;
* :mod:`~transforms.pipeline.plan` — work items: whole files, or well groups of a large plate;
* :mod:`~transforms.pipeline.stage` — identify, decode and extract one file, rows staged as Parquet
  (:mod:`~transforms.pipeline.decode_icephys`, :mod:`~transforms.pipeline.decode_mea`);
* :mod:`~transforms.pipeline.commit` — the QC gate (:mod:`~transforms.pipeline.qc`) and the
  commit point;
* :mod:`~transforms.pipeline.run` — many files in batches, then publish (``neurocyte ingest``).
"""

from transforms.pipeline.commit import commit_batch, commit_staged
from transforms.pipeline.outcome import Outcome, record
from transforms.pipeline.plan import group_parts, plate_parts, split_candidates
from transforms.pipeline.run import IngestSummary, expand_paths, ingest_file, ingest_paths
from transforms.pipeline.stage import stage_file

__all__ = [
    "IngestSummary",
    "Outcome",
    "commit_batch",
    "commit_staged",
    "expand_paths",
    "group_parts",
    "ingest_file",
    "ingest_paths",
    "plate_parts",
    "record",
    "split_candidates",
    "stage_file",
]
