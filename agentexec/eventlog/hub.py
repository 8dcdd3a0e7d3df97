"""The event hub: one reader of the event log per event loop, shared by every live watcher.

A web process may hold a thousand watchers (SSE streams, WebSockets, `ax.watch` loops). One
blocking read per watcher would take a thousand Redis connections; instead one task per loop
follows the stream with `XREAD BLOCK` and hands each event to the queues of the watchers it
concerns: by agent id through a dict, and through a predicate for the watchers of every run.

A watcher that does not keep up (its queue holds `MAX_QUEUED` events) is dropped from the hub
and told so; `agentexec.client.watching` then catches up from the log, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from agentexec.config import get_settings
from agentexec.eventlog.event import Event, seq_of
from agentexec.eventlog.position import PROJECTED, applied_through
from agentexec.eventlog.reading import PAGE, Cursor
from agentexec.keys import PROJECTOR_GROUP

logger = logging.getLogger(__name__)

#: Milliseconds one read blocks; the reader checks for watchers in between.
_BLOCK_MS = 1_000
#: Events a watcher may have waiting before it is dropped (and catches up from the log).
MAX_QUEUED = 10_000
#: Runs whose task and owner the hub remembers, for filters on events that do not carry them.
_REMEMBERED = 100_000
#: Seconds a read of the projection's position is reused.
_PROJECTED_TTL = 0.2
#: Sent to a watcher's queue when it has fallen too far behind.
OVERFLOW = None

Match = Callable[[Event], bool]


class Subscription:
    """One watcher's queue of live events."""

    def __init__(self, agent_id: uuid.UUID | None, match: Match | None) -> None:
        self.agent_id = agent_id
        self.match = match
        #: Events in log order; `OVERFLOW` (None) when the hub dropped this watcher.
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        #: Every event after this position reaches the queue (until an overflow).
        self.position = 0

    def put(self, event: Event) -> bool:
        """Queue `event`; False when the queue is full (the watcher is dropped)."""
        if self.queue.qsize() >= MAX_QUEUED:
            self.queue.put_nowait(OVERFLOW)
            return False
        self.queue.put_nowait(event)
        return True


class EventHub:
    """Follows one event log and fans its events out to subscriptions.

    Args:
        url: the Redis holding the log.
        key: the stream's key.
    """

    def __init__(self, url: str, key: str) -> None:
        self.key = key
        #: For reads other than the follow: catch-up ranges, the projection's position.
        self.client = Redis.from_pool(
            BlockingConnectionPool.from_url(
                url, max_connections=20, timeout=30, socket_connect_timeout=30
            )
        )
        # The follow blocks its connection: it gets one of its own.
        self._follower = Redis.from_url(
            url, socket_keepalive=True, client_name=f"agentexec-hub-{os.getpid()}"
        )
        self._by_agent: dict[uuid.UUID, set[Subscription]] = {}
        self._all: set[Subscription] = set()
        self._reader: asyncio.Task[None] | None = None
        #: Where the follow stands; None while nobody watches.
        self._cursor: Cursor | None = None
        self._starting = asyncio.Lock()
        self._runs: OrderedDict[uuid.UUID, tuple[str | None, str | None]] = OrderedDict()
        self._projected: tuple[float, int | None] | None = None
        self._reading_projected: asyncio.Future[int | None] | None = None

    @property
    def watchers(self) -> int:
        """How many subscriptions are live."""
        return len(self._all) + sum(len(s) for s in self._by_agent.values())

    async def subscribe(
        self, agent_id: uuid.UUID | None = None, match: Match | None = None
    ) -> Subscription:
        """A subscription to the events of `agent_id` (all runs when None) that pass `match`.

        Raises:
            redis.RedisError: the log's Redis is unreachable.
        """
        async with self._starting:
            if self._cursor is None:
                newest: Any = await self.client.xrevrange(self.key, count=1)
                self._cursor = Cursor(self.key, seq_of(newest[0][0]) if newest else 0)
        subscription = Subscription(agent_id, match)
        subscription.position = self._cursor.position
        if agent_id is None:
            self._all.add(subscription)
        else:
            self._by_agent.setdefault(agent_id, set()).add(subscription)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._follow(), name="agentexec-event-hub")
        return subscription

    async def check(self) -> None:
        """Raise now when the log's Redis is unreachable, rather than in a stream's middle.

        Raises:
            redis.RedisError: it is unreachable.
        """
        await self.client.ping()

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop feeding `subscription`; safe to call twice."""
        if subscription.agent_id is None:
            self._all.discard(subscription)
            return
        subscriptions = self._by_agent.get(subscription.agent_id)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self._by_agent[subscription.agent_id]

    def named(self, event: Event) -> Event:
        """`event` with its run's task and owner, from earlier events of the run (or the
        database) where it came without them."""
        if event.task is not None and event.owner is not None:
            return event
        task, owner = self._runs.get(event.agent_id, (None, None))
        if (event.task or task) == event.task and (event.owner or owner) == event.owner:
            return event
        return dataclasses.replace(event, task=event.task or task, owner=event.owner or owner)

    def remember(self, event: Event) -> None:
        """Note the task and owner of `event`'s run, for its events that come without them."""
        if event.task is None and event.owner is None:
            return
        task, owner = self._runs.get(event.agent_id, (None, None))
        self._runs[event.agent_id] = (event.task or task, event.owner or owner)
        self._runs.move_to_end(event.agent_id)
        if len(self._runs) > _REMEMBERED:
            self._runs.popitem(last=False)

    async def projected(self) -> int | None:
        """A position up to which the SQL projection has applied the log; None without one.

        It may be a little behind the projection (it is read at most every `_PROJECTED_TTL`
        seconds, for a crowd of watchers starting at once); never ahead of it.
        """
        now = time.monotonic()
        if self._projected is not None and now - self._projected[0] < _PROJECTED_TTL:
            return self._projected[1]
        if self._reading_projected is None:
            # One read for a crowd of watchers starting at once.
            self._reading_projected = asyncio.ensure_future(self._read_projected())
            self._reading_projected.add_done_callback(self._projected_read)
        return await asyncio.shield(self._reading_projected)

    def _projected_read(self, reading: asyncio.Future[int | None]) -> None:
        self._reading_projected = None
        if not reading.cancelled() and reading.exception() is None:
            self._projected = (time.monotonic(), reading.result())

    async def _read_projected(self) -> int | None:
        return applied_through(await self.client.eval(PROJECTED, 1, self.key, PROJECTOR_GROUP))

    async def read_range(self, after: int, upto: int) -> list[Event]:
        """The events after position `after` up to `upto` included, oldest first (for a
        short range: `pages` reads a long one)."""
        return [event async for page in self.pages(after, upto) for event in page]

    async def pages(self, after: int, upto: int) -> AsyncIterator[list[Event]]:
        """The events after position `after` up to `upto` included, oldest first, one page
        (`reading.PAGE` entries) at a time: memory does not grow with the range."""
        cursor = Cursor(self.key, after)
        while True:
            entries: Any = await self.client.xrange(**cursor.xrange(upto))
            events = cursor.take(entries)
            if events:
                yield events
            if len(entries) < PAGE:
                return

    async def first_position(self) -> int | None:
        """Position of the oldest event the log still holds; None when it is empty."""
        oldest: Any = await self.client.xrange(self.key, count=1)
        return seq_of(oldest[0][0]) if oldest else None

    async def close(self) -> None:
        """Stop following, wake every watcher (with `OVERFLOW`) and close the connections."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for subscription in [*self._all, *(s for v in self._by_agent.values() for s in v)]:
            subscription.queue.put_nowait(OVERFLOW)
        self._all.clear()
        self._by_agent.clear()
        await self._follower.aclose()
        await self.client.aclose()

    async def _follow(self) -> None:
        delay = 0.05
        while self._all or self._by_agent:
            cursor = self._cursor
            assert cursor is not None
            try:
                reply: Any = await self._follower.xread(**cursor.xread(block_ms=_BLOCK_MS))
            except (RedisError, OSError) as exc:
                logger.warning("event hub: %s; reading again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            for event in cursor.take_xread(reply):
                self._dispatch(event)
        # Nobody watches: the next subscription starts from the log's end again.
        self._cursor = None

    def _dispatch(self, event: Event) -> None:
        self.remember(event)
        dropped = [s for s in self._by_agent.get(event.agent_id, ()) if not s.put(event)]
        dropped += [
            s for s in self._all if (s.match is None or s.match(event)) and not s.put(event)
        ]
        for subscription in dropped:
            self.unsubscribe(subscription)


#: One hub per event loop and log; a hub's connections belong to its loop.
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], EventHub]] = (
    weakref.WeakKeyDictionary()
)


def get_hub() -> EventHub:
    """The running loop's hub for the current settings' event log."""
    settings = get_settings()
    hubs = _hubs.setdefault(asyncio.get_running_loop(), {})
    where = (settings.redis_url, settings.keys.events)
    hub = hubs.get(where)
    if hub is None:
        hub = hubs[where] = EventHub(*where)
    return hub


async def close_hubs() -> None:
    """Close the running loop's hubs (see `ax.close_redis`)."""
    hubs = _hubs.pop(asyncio.get_running_loop(), {})
    for hub in hubs.values():
        await hub.close()
