"""Event streams over HTTP: server-sent events and WebSocket messages from `ax.watch`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from agentexec.events import Event, EventKind
from agentexec.web.models import AgentEvent

#: Seconds between keep-alive comments on a quiet stream, so proxies keep it open.
HEARTBEAT = 15.0
#: Milliseconds an EventSource waits before it reconnects.
RETRY_MS = 2_000


async def sse(
    events: AsyncIterator[Event], first: Event | None = None, *, ids_for_snapshots: bool = True
) -> AsyncIterator[str]:
    """`events` as a text/event-stream body, with keep-alive comments while quiet.

    Args:
        events: what to send.
        first: an event already taken from `events`, sent first.
        ids_for_snapshots: give snapshot events an `id:`. For the stream of every run they
            get none, since their positions are not in order: a reconnect after one would
            skip changes between them.
    """
    yield f"retry: {RETRY_MS}\n\n"
    if first is not None:
        yield _frame(first, ids_for_snapshots)
    async for item in _with_heartbeats(events):
        yield ": keep-alive\n\n" if item is None else _frame(item, ids_for_snapshots)


async def websocket_send(websocket: WebSocket, events: AsyncIterator[Event]) -> None:
    """Send `events` as JSON messages until they end (then close normally) or the client leaves."""
    receiving = asyncio.create_task(_until_disconnect(websocket))
    try:
        async for item in _with_heartbeats(events, stop=receiving):
            if item is not None:
                await websocket.send_text(AgentEvent.of(item).model_dump_json())
        if not receiving.done():
            await websocket.close(code=1000)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client left while we were sending
    finally:
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiving


def _frame(event: Event, ids_for_snapshots: bool) -> str:
    data = AgentEvent.of(event).model_dump_json()
    if event.seq is None or (event.kind is EventKind.SNAPSHOT and not ids_for_snapshots):
        return f"data: {data}\n\n"
    return f"id: {event.seq}\ndata: {data}\n\n"


async def _with_heartbeats(
    events: AsyncIterator[Event], stop: asyncio.Task[None] | None = None
) -> AsyncIterator[Event | None]:
    """`events`, with None whenever nothing came for `HEARTBEAT` seconds; ends with `stop`."""
    queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue(maxsize=1_000)

    async def pump() -> None:
        try:
            async for event in events:
                await queue.put(event)
        except Exception as exc:
            await queue.put(exc)
        else:
            await queue.put(None)

    pumping = asyncio.create_task(pump())
    try:
        while True:
            getting = asyncio.ensure_future(queue.get())
            waiting: set[asyncio.Future[object]] = {getting}  # type: ignore[arg-type]
            if stop is not None:
                waiting.add(stop)  # type: ignore[arg-type]
            done, _ = await asyncio.wait(
                waiting, timeout=HEARTBEAT, return_when=asyncio.FIRST_COMPLETED
            )
            if getting not in done:
                getting.cancel()
                if stop is not None and stop in done:
                    return
                yield None
                continue
            item = getting.result()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping


async def _until_disconnect(websocket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
