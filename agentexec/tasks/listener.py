"""One Redis pub/sub connection per event loop, shared by everyone waiting for a result.

Celery's Redis backend publishes each result on a channel named after its key. Waiting on
that channel needs a subscription; one connection per waiter would run out of connections at
a few hundred concurrent `get_result` calls, so waiters share this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


class ResultListener:
    """Routes result notifications from one subscription connection to waiting coroutines."""

    def __init__(self, url: str, max_connections: int = 20) -> None:
        #: For reading result keys; callers wait for a free connection instead of failing.
        self.client = Redis.from_pool(
            BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=30)
        )
        self._pubsub = self.client.pubsub()
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._reader: asyncio.Task[None] | None = None
        # The first SUBSCRIBE takes the pubsub's connection; concurrent ones would take many.
        self._subscribing = asyncio.Lock()

    async def watch(self, channel: str) -> asyncio.Event:
        """An event set whenever something is published on `channel`. Subscribed on return."""
        event = asyncio.Event()
        waiters = self._waiters.setdefault(channel, set())
        first = not waiters
        waiters.add(event)
        if first:
            async with self._subscribing:
                await self._pubsub.subscribe(channel)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="agentexec-result-listener")
        return event

    async def unwatch(self, channel: str, event: asyncio.Event) -> None:
        """Stop notifying `event`; unsubscribe when nobody else waits on `channel`."""
        waiters = self._waiters.get(channel)
        if waiters is None:
            return
        waiters.discard(event)
        if not waiters:
            del self._waiters[channel]
            with contextlib.suppress(RedisError, OSError):
                async with self._subscribing:
                    await self._pubsub.unsubscribe(channel)

    async def close(self) -> None:
        """Stop reading and close the connections."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()  # let waiters look once more, then give up or time out
        self._waiters.clear()
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.client.aclose()

    async def _read(self) -> None:
        while self._waiters:
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
            except (RedisError, OSError) as exc:
                # Waiters poll the result key too, so a gap costs latency, not results.
                logger.warning("result listener: %s; reconnecting", exc)
                await asyncio.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            if isinstance(channel, bytes):
                channel = channel.decode()
            for event in self._waiters.get(channel, ()):
                event.set()
