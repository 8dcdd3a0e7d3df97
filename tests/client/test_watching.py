"""`ax.watch` and `ax.watch_all`: the state, then every change, without gaps, on one reader."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis
import userapp.worker  # noqa: F401

import agentexec as ax
from agentexec.client.watching import ended
from agentexec.eventlog import hub as hub_module
from agentexec.eventlog.event import Event
from agentexec.eventlog.hub import get_hub
from agentexec.runtime import get_runtime
from agentexec.states import EventKind
from agentexec.testing.plugin import StartWorker, record_events
from tests.apps import APP_DIR, APP_ENV

WATCHERS = 1_000


def _queued(task: str = "research") -> uuid.UUID:
    agent_id = uuid.uuid4()
    record_events(
        Event(agent_id, ax.Status.QUEUED, "Task queued", kind=EventKind.QUEUED, task=task)
    )
    return agent_id


def _append(*events: Event) -> list[Event]:
    """Append to the log only: SQL learns of them later, through the projector."""
    return get_runtime().events.append(events)


def _report(agent_id: uuid.UUID, message: str, pct: int) -> Event:
    return Event(agent_id, ax.Status.RUNNING, message, pct)


def _end(agent_id: uuid.UUID, status: ax.Status = ax.Status.COMPLETE) -> Event:
    return Event(agent_id, status, "Task completed", 100, kind=EventKind(status.value.lower()))


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110 (a condition, not an event of ours)
            await asyncio.sleep(0.01)


async def _projected_through(event: Event) -> None:
    async def projected() -> bool:
        return (await get_hub().projected() or 0) >= (event.seq or 0)

    await _until(projected)


async def _take(events: AsyncIterator[Event], n: int, timeout: float = 10) -> list[Event]:
    taken: list[Event] = []
    async with asyncio.timeout(timeout):
        async for event in events:
            taken.append(event)
            if len(taken) == n:
                break
    return taken


async def _all(events: AsyncIterator[Event], timeout: float = 10) -> list[Event]:
    async with asyncio.timeout(timeout):
        return [event async for event in events]


async def test_watch_yields_state_then_changes_and_ends(agentexec_env: dict[str, str]) -> None:
    agent_id = _queued()
    watch = ax.watch(agent_id)
    [state] = await _take(watch, 1)
    assert (state.kind, state.status, state.message, state.task) == (
        EventKind.SNAPSHOT,
        ax.Status.QUEUED,
        "Task queued",
        "research",
    )
    appended = _append(_report(agent_id, "Searching", 10), _report(agent_id, "Reading", 60))
    appended += _append(_end(agent_id))
    rest = await _all(watch)
    assert [(e.message, e.percentage, e.seq) for e in rest] == [
        (e.message, e.percentage, e.seq) for e in appended
    ]
    assert rest[-1].terminal


async def test_late_watcher_sees_changes_sql_does_not_show_yet(
    agentexec_env: dict[str, str],
) -> None:
    agent_id = _queued()
    # The projector may or may not have applied these yet: either way nothing is lost.
    appended = _append(_report(agent_id, "Searching", 10), _report(agent_id, "Reading", 60))
    events = await _take(ax.watch(agent_id), 1)
    state = events[0]
    watch = ax.watch(agent_id, after=state.seq)
    _append(_end(agent_id))
    rest = await _all(watch)
    seen = [state, *rest]
    assert seen[-1].status is ax.Status.COMPLETE
    # The state plus what follows it covers the last report.
    assert appended[-1].seq is not None
    assert any((e.seq or 0) >= appended[-1].seq for e in seen)


async def test_resume_after_a_position_misses_nothing(agentexec_env: dict[str, str]) -> None:
    agent_id = _queued()
    appended = _append(*(_report(agent_id, f"step {i}", i * 10) for i in range(1, 6)))
    appended += _append(_end(agent_id))
    for index in range(len(appended)):
        after = appended[index].seq
        resumed = await _all(ax.watch(agent_id, after=after))
        assert [e.seq for e in resumed] == [e.seq for e in appended[index + 1 :]]
    # Resuming after the end: nothing, at once.
    assert await _all(ax.watch(agent_id, after=appended[-1].seq)) == []
    assert await ended(agent_id, appended[-1].seq or 0)
    assert not await ended(agent_id, appended[-2].seq or 0)


async def test_resume_reads_trimmed_events_back_from_sql(agentexec_env: dict[str, str]) -> None:
    agent_id = _queued()
    appended = record_events(*(_report(agent_id, f"step {i}", i * 20) for i in range(1, 4)))
    await _projected_through(appended[-1])  # the log is trimmed only below what SQL shows
    client = get_runtime().events.client()
    client.xtrim(get_runtime().events.key, maxlen=0, approximate=False)
    watch = ax.watch(agent_id, after=appended[0].seq)
    older = await _take(watch, 2)
    assert [(e.message, e.percentage) for e in older] == [("step 2", 40), ("step 3", 60)]
    [end] = _append(_end(agent_id))
    assert [e.seq for e in await _all(watch)] == [end.seq]
    # And for every run.
    resumed = await _take(ax.watch_all(after=appended[0].seq), 3)
    assert [e.message for e in resumed] == ["step 2", "step 3", "Task completed"]


async def test_watch_unknown_or_malformed_id(agentexec_env: dict[str, str]) -> None:
    with pytest.raises(KeyError):
        await _all(ax.watch(uuid.uuid4()))
    with pytest.raises(ax.InvalidAgentIdError):
        await _all(ax.watch("nonexistent"))


async def test_watch_of_a_finished_run_yields_its_end(agentexec_env: dict[str, str]) -> None:
    agent_id = _queued()
    record_events(_end(agent_id, ax.Status.CANCELED))
    [state] = await _all(ax.watch(agent_id))
    assert (state.kind, state.status) == (EventKind.SNAPSHOT, ax.Status.CANCELED)


async def test_watch_all_filters_by_status_and_task(agentexec_env: dict[str, str]) -> None:
    research, summary, done = _queued("research"), _queued("summary"), _queued("research")
    [end] = record_events(_end(done))
    await _projected_through(end)
    everything = ax.watch_all()
    by_task = ax.watch_all(task="research")
    by_status = ax.watch_all(status="COMPLETE")
    snapshot = await _take(everything, 2)
    assert {(e.agent_id, e.kind) for e in snapshot} == {
        (research, EventKind.SNAPSHOT),
        (summary, EventKind.SNAPSHOT),
    }
    assert [e.agent_id for e in await _take(by_task, 1)] == [research]
    [done_state] = await _take(by_status, 1)
    assert (done_state.agent_id, done_state.status) == (done, ax.Status.COMPLETE)

    # Status reports carry no task name: the filter knows it from the run's earlier events.
    _append(_report(summary, "Summing up", 50), _report(research, "Digging", 30))
    _append(_end(summary), _end(research))
    live = await _take(everything, 4)
    assert [(e.agent_id, e.status) for e in live] == [
        (summary, ax.Status.RUNNING),
        (research, ax.Status.RUNNING),
        (summary, ax.Status.COMPLETE),
        (research, ax.Status.COMPLETE),
    ]
    assert [(e.agent_id, e.message) for e in await _take(by_task, 2)] == [
        (research, "Digging"),
        (research, "Task completed"),
    ]
    assert [e.agent_id for e in await _take(by_status, 2)] == [summary, research]
    for watch in (everything, by_task, by_status):
        await watch.aclose()  # type: ignore[attr-defined]


@pytest.mark.timeout(300)
async def test_a_thousand_watchers_share_one_reader(agentexec_env: dict[str, str]) -> None:
    agents = [uuid.uuid4() for _ in range(WATCHERS)]
    queued = record_events(
        *(Event(a, ax.Status.QUEUED, "Task queued", kind=EventKind.QUEUED) for a in agents)
    )
    await _projected_through(queued[-1])

    async def follow(agent_id: uuid.UUID) -> list[Event]:
        return await _all(ax.watch(agent_id), timeout=240)

    watchers = [asyncio.create_task(follow(a)) for a in agents]
    hub = get_hub()

    async def all_subscribed() -> bool:
        return hub.watchers == len(agents)

    await _until(all_subscribed, 240)
    # One connection follows the log for all of them (plus a small pool for catch-up reads).
    with redis.Redis.from_url(agentexec_env["REDIS_URL"]) as client:
        names = [c["name"] for c in client.client_list()]
    assert names.count(f"agentexec-hub-{os.getpid()}") == 1
    for start in range(0, len(agents), 200):
        _append(*(_report(a, "Halfway", 50) for a in agents[start : start + 200]))
    _append(*(_end(a) for a in agents))
    results = await asyncio.gather(*watchers)
    for agent_id, events in zip(agents, results, strict=True):
        # The state (QUEUED, or a later one when SQL showed it first), then the rest.
        assert events[0].kind is EventKind.SNAPSHOT, agent_id
        assert [e.message for e in events] in (
            ["Task queued", "Halfway", "Task completed"],
            ["Halfway", "Task completed"],
            ["Task completed"],
        ), agent_id
    assert hub.watchers == 0


async def test_a_lagging_watcher_catches_up_from_the_log(
    agentexec_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "MAX_QUEUED", 5)
    agent_id = _queued()
    watch = ax.watch(agent_id)
    await _take(watch, 1)
    appended = _append(*(_report(agent_id, f"step {i}", i) for i in range(1, 31)))
    appended += _append(_end(agent_id))
    hub = get_hub()
    # Let the hub read all of them while this watcher does not consume.

    async def dropped() -> bool:
        return hub.watchers == 0

    await _until(dropped)
    rest = await _all(watch)
    assert [e.seq for e in rest] == [e.seq for e in appended]


async def test_watch_a_run_on_a_real_worker(
    agentexec_worker: StartWorker, agentexec_env: dict[str, str]
) -> None:
    queued = await ax.enqueue("paced_agent", {"seconds": 0.4, "reports": 4})
    watch = ax.watch(queued.agent_id)
    [state] = await _take(watch, 1)
    assert (state.status, state.task) == (ax.Status.QUEUED, "paced_agent")
    await asyncio.to_thread(agentexec_worker, "-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)
    events = await _all(watch, timeout=60)
    assert [(e.kind, e.status, e.message, e.percentage) for e in events] == [
        (EventKind.STARTED, ax.Status.RUNNING, "Task started", 0),
        *((EventKind.REPORT, ax.Status.RUNNING, f"step {i}", 25 * i) for i in range(1, 5)),
        (EventKind.COMPLETE, ax.Status.COMPLETE, "Task completed", 100),
    ]
    assert {e.task for e in events} == {"paced_agent"}
    seqs = [e.seq or 0 for e in events]
    assert seqs == sorted(seqs) and seqs[0] > (state.seq or 0)


async def test_an_entry_nobody_can_parse_is_skipped_and_the_hub_goes_on(
    agentexec_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    agent_id = _queued()
    watch = ax.watch(agent_id)
    [state] = await _take(watch, 1)
    assert state.kind is EventKind.SNAPSHOT
    client, key = get_runtime().events.client(), get_runtime().events.key
    overflow = {"agent_id": str(agent_id), "status": "RUNNING", "message": "x", "at": 1e300}
    client.xadd(key, {"event": json.dumps(overflow)})
    [after] = _append(_report(agent_id, "after the bad one", 50))
    [event] = await _take(watch, 1)
    assert (event.seq, event.message) == (after.seq, "after the bad one")
    assert "skipping malformed entry" in caplog.text
