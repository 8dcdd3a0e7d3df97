"""The event log: a Redis Stream in the broker's Redis, appended by producers and workers.

`EventLog` is this process's handle on it: one client, shared by the process's threads, and
the appends. Code that must not wait on Redis (agents on the shared loop, worker signals)
appends through the `EventAppender` thread instead (`agentexec.eventlog.appender`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import redis

from agentexec.config import get_settings
from agentexec.eventlog.event import Event, clock_seq, seq_of

logger = logging.getLogger(__name__)


class EventLog:
    """Appends to and reads from the event log of the current queue prefix."""

    def __init__(self) -> None:
        self._clients: dict[str, redis.Redis] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The Redis the log lives in: the broker's (`REDIS_URL`)."""
        return get_settings().redis_url

    @property
    def key(self) -> str:
        """The stream's key."""
        return get_settings().keys.events

    def client(self) -> redis.Redis:
        """A client of the log's Redis, shared by this process's threads."""
        url = self.url
        client = self._clients.get(url)
        if client is None:
            with self._lock:
                client = self._clients.get(url)
                if client is None:
                    client = redis.Redis.from_url(
                        url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30
                    )
                    self._clients[url] = client
        return client

    def append(self, events: Sequence[Event]) -> list[Event]:
        """Append `events` in order; returns them with their positions.

        Raises:
            redis.RedisError: Redis did not take them.
        """
        key = self.key
        with self.client().pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(key, event.fields())  # type: ignore[arg-type]
            ids = pipe.execute()
        return [event.appended(seq_of(i)) for event, i in zip(events, ids, strict=True)]

    def record(self, events: Sequence[Event]) -> list[Event]:
        """Append `events`, or, while the log's Redis is unreachable, place them by the clock.

        For changes that must reach SQL even without the log (a cancel, the reaper's
        verdicts): the caller writes what this returns. Events placed by the clock still sort
        in time, after every event appended so far in their millisecond; watchers of the log
        miss them, and readers of SQL see them.
        """
        try:
            return self.append(events)
        except redis.RedisError as exc:
            logger.error("event log unreachable (%s): %d event(s) go to SQL only", exc, len(events))
            return [event.appended(clock_seq()) for event in events]

    def close(self) -> None:
        """Close the connections."""
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()
