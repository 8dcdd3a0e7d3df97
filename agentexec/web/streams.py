"""Event streams over HTTP: server-sent events and WebSocket messages from `ax.watch`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from agentexec.eventlog.event import Event
from agentexec.states import EventKind
from agentexec.web.models import AgentEvent

#: Seconds between keep-alive comments on a quiet stream, so proxies keep it open.
HEARTBEAT = 15.0
#: Milliseconds an EventSource waits before it reconnects.
RETRY_MS = 2_000
#: Put by the pump when the events end.
_END = object()
#: Events sent in one write at most.
_BATCH = 500


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
    async for batch in _with_heartbeats(events):
        if batch is None:
            yield ": keep-alive\n\n"
        else:  # every event that is waiting goes out in one write
            yield "".join([_frame(event, ids_for_snapshots) for event in batch])


async def websocket_send(websocket: WebSocket, events: AsyncIterator[Event]) -> None:
    """Send `events` as JSON messages until they end (then close normally) or the client leaves."""
    receiving = asyncio.create_task(_until_disconnect(websocket))
    sending = asyncio.create_task(_send_all(websocket, events))
    try:
        await asyncio.wait({receiving, sending}, return_when=asyncio.FIRST_COMPLETED)
        if sending.done() and not receiving.done():
            sending.result()  # an error of the event stream ends the socket with it
            await websocket.close(code=1000)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client left while we were sending
    finally:
        for task in (sending, receiving):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task


async def _send_all(websocket: WebSocket, events: AsyncIterator[Event]) -> None:
    async for batch in _with_heartbeats(events):
        for event in batch or ():
            await websocket.send_text(AgentEvent.model_validate(event).model_dump_json())


def _frame(event: Event, ids_for_snapshots: bool) -> str:
    data = AgentEvent.model_validate(event).model_dump_json()
    if event.seq is None or (event.kind is EventKind.SNAPSHOT and not ids_for_snapshots):
        return f"data: {data}\n\n"
    return f"id: {event.seq}\ndata: {data}\n\n"


async def _with_heartbeats(events: AsyncIterator[Event]) -> AsyncIterator[list[Event] | None]:
    """`events` in batches of those that are waiting, with None whenever nothing came for
    `HEARTBEAT` seconds.

    The events pass through a queue that a pump fills, and a timer adds the heartbeats to it:
    taking an event is one `queue.get()`, with no timeout armed per event (a thousand streams
    on one loop each take every event of their run). The events that queued up meanwhile go
    with it: a busy stream (every run's, at a thousand agents) makes one write per batch,
    not one per event.
    """
    loop = asyncio.get_running_loop()
    # Events, an exception from them, None for a heartbeat, `_END` when they end.
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=1_000)
    last_sent = loop.time()

    async def pump() -> None:
        try:
            async for event in events:
                await queue.put(event)
        except Exception as exc:
            await queue.put(exc)
        else:
            await queue.put(_END)

    async def beat() -> None:
        while True:
            quiet_for = loop.time() - last_sent
            if quiet_for >= HEARTBEAT:
                with contextlib.suppress(asyncio.QueueFull):  # full: nothing is quiet
                    queue.put_nowait(None)
                quiet_for = 0.0
            await asyncio.sleep(HEARTBEAT - quiet_for)

    helpers = [asyncio.create_task(pump()), asyncio.create_task(beat())]
    try:
        while True:
            item = await queue.get()
            if item is None:
                yield None
                continue
            batch: list[Event] = []
            while isinstance(item, Event):
                batch.append(item)
                if queue.empty() or len(batch) >= _BATCH:
                    item = None
                    break
                item = queue.get_nowait()
            if batch:
                last_sent = loop.time()
                yield batch
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
    finally:
        for helper in helpers:
            helper.cancel()
        for helper in helpers:
            with contextlib.suppress(asyncio.CancelledError):
                await helper


async def _until_disconnect(websocket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
