"""The exception hierarchy: every expected failure is a :class:`NeurocyteError`.

The ingest step catches exactly this hierarchy and records the message in
``ingest_log``; anything else is a bug and is allowed to propagate.
"""

from __future__ import annotations


class NeurocyteError(Exception):
    """Base class for errors about inputs, configuration or the lake."""


class SpecError(NeurocyteError):
    """A name, partition value or path violates the lake specification."""


class DecodeError(NeurocyteError):
    """A source file cannot be decoded (corrupt, truncated, unsupported)."""


class UnsupportedRecording(NeurocyteError):
    """The file decodes but holds nothing this pipeline can analyse."""


class QCError(NeurocyteError):
    """A quality-control suite is missing or malformed."""


class LakeError(NeurocyteError):
    """A Delta table cannot be read or written."""
