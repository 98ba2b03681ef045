"""The exception hierarchy: every expected failure is a :class:`NeurocyteError`.

What propagates where:

* Readers raise :class:`DecodeError` (corrupt, truncated or absurd content, the file
  named) or :class:`UnsupportedRecording` (decodes, but holds nothing to analyse).
* Naming, partition, path and id rules (:mod:`transforms.spec`) raise
  :class:`SpecError`; a bad sidecar or plate map is a :class:`SpecError` too, since
  it names a partition.
* A bad argument to a library function (a window, a parameter, a selection) raises
  :class:`InvalidArgument`, which is also a :class:`ValueError`.
* A lab's parameter set (``neurocyte.toml``) with an unknown key, a value of the wrong
  type or out of range raises :class:`ConfigError`, naming the file and the key.
* The QC gate raises :class:`QCError` for a missing or malformed suite; a failed
  expectation is not an exception but a quarantine verdict.
* A file that needs more memory, decompressed bytes or rows than a worker is
  allowed raises :class:`ResourceLimit` (a ``MemoryError`` is reported the same
  way): the attempt is ``failed: resource ...``, never a QC verdict.
* Lake I/O raises :class:`LakeError` (a Delta table cannot be read or written, the
  catalog is missing).

The ingest step catches exactly :class:`NeurocyteError` and records its message in
``ingest_log`` (``failed``); anything else is a bug, logged with its traceback and
recorded as ``internal error``, so one file never stops the others. The CLI turns a
:class:`NeurocyteError` into exit status 2 and one line on stderr; the page's
endpoints turn :class:`InvalidArgument` and :class:`SpecError` into HTTP 400.
"""

from __future__ import annotations


class NeurocyteError(Exception):
    """Base class for errors about inputs, configuration or the lake."""


class SpecError(NeurocyteError):
    """A name, partition value, id or path violates the lake specification."""


class InvalidArgument(NeurocyteError, ValueError):
    """A function was called with an argument outside its domain."""


class DecodeError(NeurocyteError):
    """A source file cannot be decoded (corrupt, truncated, unsupported)."""


class UnsupportedRecording(NeurocyteError):
    """The file decodes but holds nothing this pipeline can analyse."""


class ConfigError(NeurocyteError):
    """A configuration file (a lab's parameter set) is malformed: the file and key named."""


class QCError(NeurocyteError):
    """A quality-control suite is missing or malformed."""


class LakeError(NeurocyteError):
    """A Delta table cannot be read or written."""


class CatalogUnavailable(LakeError):
    """The DuckDB catalog cannot be published or opened for this lake on this machine."""


class ResourceLimit(NeurocyteError):
    """A file needs more memory, bytes or rows than a worker is allowed.

    Not a verdict on the data: the attempt is ``failed`` with a reason starting
    ``resource:``, never quarantined, and can be retried with a larger budget.
    """
