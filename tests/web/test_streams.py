"""The server-sent event body: frames, keep-alive comments while quiet, the end of the stream."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest

from agentexec.eventlog.event import Event
from agentexec.states import EventKind, Status
from agentexec.web import streams


async def _paced(events: list[Event], pause: float) -> AsyncIterator[Event]:
    for event in events:
        yield event
        await asyncio.sleep(pause)


def _events() -> list[Event]:
    agent_id = uuid.uuid4()
    return [
        Event(agent_id, Status.RUNNING, "halfway", 50, kind=EventKind.REPORT).appended(11),
        Event(agent_id, Status.COMPLETE, "done", 100, kind=EventKind.COMPLETE).appended(12),
    ]


async def test_frames_carry_ids_and_keep_alives_fill_the_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streams, "HEARTBEAT", 0.05)
    frames = [frame async for frame in streams.sse(_paced(_events(), 0.3))]
    assert frames[0] == f"retry: {streams.RETRY_MS}\n\n"
    data = [f for f in frames if f.startswith("id: ")]
    assert [f.split("\n")[0] for f in data] == ["id: 11", "id: 12"]
    assert json.loads(data[0].split("\n")[1].removeprefix("data: "))["percentage"] == 50
    between = frames[frames.index(data[0]) + 1 : frames.index(data[1])]
    assert between and set(between) == {": keep-alive\n\n"}


async def test_a_busy_stream_sends_no_keep_alives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "HEARTBEAT", 0.2)
    frames = [frame async for frame in streams.sse(_paced(_events(), 0.0))]
    assert ": keep-alive\n\n" not in frames
    assert len(frames) == 3


async def test_an_error_of_the_events_ends_the_stream_with_it() -> None:
    async def failing() -> AsyncIterator[Event]:
        yield _events()[0]
        raise ConnectionError("event log unreachable")

    frames: list[str] = []
    with pytest.raises(ConnectionError, match="event log unreachable"):
        async for frame in streams.sse(failing()):
            frames.append(frame)
    assert len(frames) == 2
