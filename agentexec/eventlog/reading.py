"""Reading the event log: one primitive for every reader.

`Cursor` is a reader's position in the stream and the parsing of what Redis returns. It
does no I/O: it builds the arguments of `XREAD` (follow) and `XRANGE` (a range, page by
page), and turns their replies into events, moving past each entry, malformed ones included
(logged and skipped). The hub reads through it on an async client, `Follower` (for
`agentexec tail` and the demo) on a sync one, and the projector decodes its consumer group's
entries with `decode`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Iterable
from typing import Any

import redis

from agentexec.eventlog.event import Event, entry_id_of, seq_of

logger = logging.getLogger(__name__)

#: Entries one read returns at most.
PAGE = 1_000

#: A stream entry as redis-py returns it: its id and its fields.
Entry = tuple[bytes | str, dict[Any, Any]]


def decode(entry_id: bytes | str, fields: dict[Any, Any]) -> Event | None:
    """The event of a stream entry; None (logged) when the entry is malformed."""
    try:
        return Event.from_entry(entry_id, fields)
    except ValueError as exc:
        logger.error("event log: skipping malformed entry %s: %s", _text(entry_id), exc)
        return None


class Cursor:
    """A position in the event log, moved by the entries a reader takes.

    Args:
        key: the stream's key.
        after: the log position to start after; 0 reads the log from its start.
    """

    def __init__(self, key: str, after: int = 0) -> None:
        self.key = key
        self.last_id = entry_id_of(after) if after else "0-0"

    @property
    def position(self) -> int:
        """The position of the last entry taken (or the starting one)."""
        return seq_of(self.last_id)

    def xread(self, *, block_ms: int | None, count: int = PAGE) -> dict[str, Any]:
        """Keyword arguments of `XREAD` for the entries after the cursor."""
        return {"streams": {self.key: self.last_id}, "count": count, "block": block_ms}

    def xrange(self, upto: int, count: int = PAGE) -> dict[str, Any]:
        """Keyword arguments of `XRANGE` for the next page after the cursor, up to position
        `upto` included."""
        return {
            "name": self.key,
            "min": f"({self.last_id}",
            "max": entry_id_of(upto),
            "count": count,
        }

    def take(self, entries: Iterable[Entry]) -> list[Event]:
        """The events of `entries` (a reply's entries, oldest first); the cursor moves past
        each of them."""
        events = []
        for entry_id, fields in entries:
            self.last_id = _text(entry_id)
            event = decode(entry_id, fields)
            if event is not None:
                events.append(event)
        return events

    def take_xread(self, reply: Any) -> list[Event]:
        """The events of an `XREAD` reply (None when it timed out)."""
        return [event for _key, entries in reply or () for event in self.take(entries)]


class Follower:
    """Reads the events of some runs as they are appended, on a synchronous client.

    Args:
        client: a client of the log's Redis.
        key: the stream's key (`get_settings().keys.events`).
        agent_ids: the runs to follow; every run when None.
        after: the log position to start after; 0 reads the log from its start.
    """

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        agent_ids: Collection[uuid.UUID] | None = None,
        after: int = 0,
    ) -> None:
        self.client = client
        self.cursor = Cursor(key, after)
        self.agent_ids = frozenset(agent_ids) if agent_ids is not None else None

    def exists(self) -> bool:
        """Whether the log is there at all (it is created by the first event)."""
        return bool(self.client.exists(self.cursor.key))

    def read(self, block_ms: int = 500) -> list[Event]:
        """The followed runs' events appended after the last one read, waiting up to
        `block_ms` for the first (an empty list when none came)."""
        events = self.cursor.take_xread(self.client.xread(**self.cursor.xread(block_ms=block_ms)))
        if self.agent_ids is None:
            return events
        return [event for event in events if event.agent_id in self.agent_ids]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
