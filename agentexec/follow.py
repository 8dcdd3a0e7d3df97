"""Following runs as they change: the event log read live, for `agentexec tail` and the demo.

The event log (a Redis Stream, see `agentexec.events`) holds every change of every run in
order. A follower starts after a known position (the one the activity row shows, so nothing
between the database's state and the live stream is missed) and blocks on `XREAD` for newer
events, keeping those of the runs it follows.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator
from typing import Any

import redis

from agentexec.events import Event, entry_id_of

#: Milliseconds one `XREAD` blocks for before the follower checks whether it should stop.
_BLOCK_MS = 500
#: Entries read per round trip.
_COUNT = 500


class Follower:
    """Reads the events of some runs from the event log, as they are appended.

    Args:
        client: a client of the log's Redis.
        key: the stream's key (`agentexec.events.stream_key`).
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
        self.key = key
        self.agent_ids = frozenset(agent_ids) if agent_ids is not None else None
        self.last_id = entry_id_of(after) if after else "0-0"

    def exists(self) -> bool:
        """Whether the log is there at all (it is created by the first event)."""
        return bool(self.client.exists(self.key))

    def read(self, block_ms: int = _BLOCK_MS) -> list[Event]:
        """The followed runs' events appended after the last one read, waiting up to
        `block_ms` for the first (an empty list when none came)."""
        reply: Any = self.client.xread({self.key: self.last_id}, count=_COUNT, block=block_ms)
        events: list[Event] = []
        for _key, entries in reply or ():
            for raw_id, fields in entries:
                self.last_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                try:
                    event = Event.from_entry(raw_id, fields)
                except ValueError:
                    continue  # a malformed entry is the projector's to report
                if self.agent_ids is None or event.agent_id in self.agent_ids:
                    events.append(event)
        return events

    def __iter__(self) -> Iterator[Event]:
        """Every followed event, forever; stop iterating to stop following."""
        while True:
            yield from self.read()
