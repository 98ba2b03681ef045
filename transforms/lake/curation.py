"""Curation: notes, exclusions, restores and accepted quarantines, as an audit trail.

Every curator action is one row appended to the ``curation_log`` Delta table
(:data:`transforms.spec.CURATION_LOG`): who (``curator`` and their roles), when
(``acted_at``, UTC, and ``log_seq``, the order actions were logged in), what
(``action`` on a ``target_kind``: a recording by ``file_id``, a well of a plate,
a sweep of a cell) and why (``reason``). Nothing is ever updated or deleted:
a restore is a later row. The catalog's ``excluded`` view holds each target
whose latest exclude / restore is an exclusion, and every data view leaves
those rows out (``sql/<table>.sql``); the data themselves stay in the lake.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from transforms import spec
from transforms.errors import InvalidArgument
from transforms.lake import delta as lakeio

#: What a curator can do.
ACTIONS: Final = ("note", "exclude", "restore", "accept_quarantined")
#: What an action is about.
TARGET_KINDS: Final = ("recording", "well", "sweep")
#: Longest reason or note kept (characters).
MAX_REASON_CHARS: Final = 4000

_WELL: Final = re.compile(r"^[A-Z]\d{1,2}$")
_USER: Final = re.compile(r"^[^\x00-\x1f]{1,256}$")

CURATION_LOG_SCHEMA: Final = pa.schema(
    [
        pa.field("action_id", pa.string(), nullable=False),
        pa.field("log_seq", pa.int64(), nullable=False),
        pa.field("acted_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("curator", pa.string(), nullable=False),
        pa.field("curator_roles", pa.string()),
        pa.field("action", pa.string(), nullable=False),
        pa.field("target_kind", pa.string(), nullable=False),
        pa.field("file_id", pa.string(), nullable=False),
        pa.field("well", pa.string()),
        pa.field("sweep_number", pa.int64()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("transform_version", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True)
class CurationAction:
    """One curator action, validated.

    Attributes
    ----------
    action
        One of :data:`ACTIONS`.
    target_kind
        One of :data:`TARGET_KINDS`.
    file_id
        The recording (SHA-256 of its source file).
    well
        The well (``B2``) for a ``well`` target, else None.
    sweep_number
        The sweep for a ``sweep`` target, else None.
    reason
        Why (for a note: the note itself); required for every action.
    """

    action: str
    target_kind: str
    file_id: str
    reason: str
    well: str | None = None
    sweep_number: int | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise InvalidArgument(f"unknown action {self.action!r}; known: {', '.join(ACTIONS)}")
        if self.target_kind not in TARGET_KINDS:
            raise InvalidArgument(
                f"unknown target kind {self.target_kind!r}; known: {', '.join(TARGET_KINDS)}"
            )
        spec.check_file_id(self.file_id)
        if not isinstance(self.reason, str) or not self.reason.strip():
            what = "a note needs its text" if self.action == "note" else f"{self.action} needs"
            raise InvalidArgument(f"{what} a reason" if self.action != "note" else what)
        if len(self.reason) > MAX_REASON_CHARS:
            raise InvalidArgument(f"reason longer than {MAX_REASON_CHARS} characters")
        if self.target_kind == "well":
            if not isinstance(self.well, str) or not _WELL.match(self.well):
                raise InvalidArgument(f"a well target needs a well like B2, got {self.well!r}")
        elif self.well is not None:
            raise InvalidArgument(f"a {self.target_kind} target takes no well")
        if self.target_kind == "sweep":
            if isinstance(self.sweep_number, bool) or not isinstance(self.sweep_number, int):
                raise InvalidArgument("a sweep target needs a sweep_number")
            if self.sweep_number < 0:
                raise InvalidArgument(f"sweep_number must be >= 0, got {self.sweep_number}")
        elif self.sweep_number is not None:
            raise InvalidArgument(f"a {self.target_kind} target takes no sweep_number")
        if self.action == "accept_quarantined" and self.target_kind != "recording":
            raise InvalidArgument("only a recording (a quarantined file) can be accepted")


def next_log_seq(*, lake: str | None = None) -> int:
    """1 + the largest ``log_seq`` in ``curation_log`` (1 for none)."""
    log = lakeio.read_table(spec.CURATION_LOG, lake=lake, columns=["log_seq"])
    if log is None or log.num_rows == 0:
        return 1
    top = pc.max(log["log_seq"]).as_py()
    return 1 if top is None else int(top) + 1


def record(
    action: CurationAction,
    *,
    curator: str,
    curator_roles: tuple[str, ...] = (),
    lake: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Append one action to ``curation_log`` (one Delta commit) and return its row.

    Parameters
    ----------
    action
        The validated action.
    curator
        Who did it (the Airflow user name).
    curator_roles
        Their roles, as the auth manager reported them.
    lake
        Lake root.
    now
        The action's time (default: now, UTC).

    Raises
    ------
    InvalidArgument
        If the curator name is empty or holds control characters.
    LakeError
        If the Delta commit fails.
    """
    if not isinstance(curator, str) or not _USER.match(curator):
        raise InvalidArgument(f"curator must be a user name, got {curator!r}")
    at = now or datetime.now(UTC)
    row: dict[str, Any] = {
        "action_id": uuid.uuid4().hex,
        "log_seq": next_log_seq(lake=lake),
        "acted_at": at,
        "curator": curator,
        "curator_roles": ",".join(curator_roles) or None,
        "action": action.action,
        "target_kind": action.target_kind,
        "file_id": action.file_id,
        "well": action.well,
        "sweep_number": action.sweep_number,
        "reason": action.reason.strip(),
        "transform_version": spec.TRANSFORM_VERSION,
    }
    table = pa.Table.from_pylist([row], schema=CURATION_LOG_SCHEMA)
    lakeio.append_rows(spec.CURATION_LOG, table, lake=lake, partitioned=False)
    return {**row, "acted_at": at.isoformat()}


def empty_source_sql() -> str:
    """A typed, empty relation with ``curation_log``'s columns (a lake without one yet)."""
    duck = {
        pa.string(): "VARCHAR",
        pa.int64(): "BIGINT",
        pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
    }
    cols = ", ".join(f"NULL::{duck[f.type]} AS {f.name}" for f in CURATION_LOG_SCHEMA)
    return f"(SELECT {cols} WHERE false)"
