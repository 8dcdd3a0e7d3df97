"""Activity events: one recorded change of one run, as it travels through the event log.

Every change (queued, started, each status report, a retry, the end) is one event appended
to a Redis Stream in the broker's Redis. The stream's entry id orders events; `seq` is that
id as one sortable integer, so SQL rows can be ordered and deduplicated by it.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from agentexec.states import TERMINAL, EventKind, Status, utcnow

#: Bits of `seq` that hold the entry's sequence number within its millisecond.
_SEQ_BITS = 20
_SEQ_MASK = (1 << _SEQ_BITS) - 1
#: The stream entry's one field: the event as JSON.
_FIELD = "event"
_FIELD_BYTES = _FIELD.encode()


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One change of one run."""

    agent_id: uuid.UUID
    status: Status
    message: str
    percentage: int | None = None
    kind: EventKind = EventKind.REPORT
    #: The task name (agent type), where the producer of the event knows it.
    task: str | None = None
    #: The worker's node name, for events recorded by a worker.
    worker: str | None = None
    #: Whom the run belongs to (`ax.enqueue(..., owner=...)`), where the event's maker knows.
    owner: str | None = None
    at: datetime = dataclasses.field(default_factory=utcnow)
    #: Position in the log; None until the event is appended.
    seq: int | None = None
    #: What a WAITING or DECISION event says about approvals (JSON data), else None.
    data: dict[str, Any] | None = dataclasses.field(default=None, compare=False)

    @property
    def terminal(self) -> bool:
        """Whether this event ends the run."""
        return self.status in TERMINAL

    def fields(self) -> dict[str, str]:
        """The stream entry's fields: one, `event`, holding the event as a JSON object.

        One field rather than one per attribute: Redis replies then hold two strings per
        entry instead of sixteen, which every reader of the log (projectors, watchers)
        parses.
        """
        event: dict[str, Any] = {
            "agent_id": str(self.agent_id),
            "kind": self.kind.value,
            "status": self.status.value,
            "message": self.message,
            "at": self.at.timestamp(),
        }
        if self.percentage is not None:
            event["percentage"] = self.percentage
        if self.task is not None:
            event["task"] = self.task
        if self.worker is not None:
            event["worker"] = self.worker
        if self.owner is not None:
            event["owner"] = self.owner
        if self.data is not None:
            event["data"] = self.data
        return {_FIELD: json.dumps(event, ensure_ascii=False)}

    @classmethod
    def from_entry(cls, entry_id: bytes | str, fields: dict[Any, Any]) -> Event:
        """An event read back from the stream. Raises ValueError when it is malformed."""
        return cls.from_fields(fields, seq_of(entry_id))

    @classmethod
    def from_fields(cls, fields: dict[Any, Any], seq: int | None = None) -> Event:
        """An event from its stream fields. Raises ValueError when they are malformed."""
        try:
            f = json.loads(fields.get(_FIELD_BYTES) or fields[_FIELD])
            percentage = f.get("percentage")
            data = f.get("data")
            if data is not None and not isinstance(data, dict):
                raise TypeError(f"data is {type(data).__name__}, not an object")
            return cls(
                agent_id=uuid.UUID(f["agent_id"]),
                status=Status(f["status"]),
                message=str(f.get("message", "")),
                percentage=None if percentage is None else int(percentage),
                kind=EventKind(f.get("kind", EventKind.REPORT.value)),
                task=f.get("task"),
                worker=f.get("worker"),
                owner=f.get("owner"),
                at=datetime.fromtimestamp(float(f["at"]), UTC),
                seq=seq,
                data=data,
            )
        except (KeyError, TypeError, AttributeError, ValueError, OverflowError, OSError) as exc:
            raise ValueError(f"malformed event {fields!r}: {exc!r}") from exc

    def appended(self, seq: int) -> Event:
        """This event at position `seq` of the log."""
        return dataclasses.replace(self, seq=seq)


def printable(text: str) -> str:
    """`text` without control characters: line breaks, tabs and other spaces become spaces."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else " " for c in text if c.isprintable() or c.isspace())


def clean_message(text: str, limit: int) -> str:
    """`text` as a log line: control characters removed (line breaks and tabs become
    spaces), and at most `limit` bytes of UTF-8, cut with a marker saying how much is left
    out. For text that agents and callers give (status reports, errors, cancel reasons),
    which terminals, dashboards and log files show."""
    text = printable(text)
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    marker = " … [{} more bytes cut]"
    room = limit - len(marker.format(len(encoded)).encode())
    head = encoded[: max(0, room)].decode(errors="ignore")
    return head + marker.format(len(encoded) - len(head.encode()))


def seq_of(entry_id: bytes | str) -> int:
    """A stream entry id (`<ms>-<n>`) as one integer that sorts the same way."""
    ms, _, n = _text(entry_id).partition("-")
    return (int(ms) << _SEQ_BITS) | min(int(n or 0), _SEQ_MASK)


def entry_id_of(seq: int) -> str:
    """The stream entry id at log position `seq` (the inverse of `seq_of`)."""
    return f"{seq >> _SEQ_BITS}-{seq & _SEQ_MASK}"


def clock_seq() -> int:
    """A position from the clock, after every entry appended so far in this millisecond.

    For rows written without the log (its Redis was unreachable): they still sort in time.
    """
    return (time.time_ns() // 1_000_000 << _SEQ_BITS) | _SEQ_MASK


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
