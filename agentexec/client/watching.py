"""Watching runs live: `ax.watch` and `ax.watch_all`, async iterators over the event log.

A watcher sees the current state first, then every change as it is appended to the log. It
follows the log through the loop's shared `EventHub`, so a thousand watchers cost one Redis
read, and nothing here blocks the loop (SQL reads run on a thread).

No event is missed between the state and the changes, nor across a reconnect:

1. the watcher subscribes first, at the hub's position P: every event after P reaches it;
2. it reads the state from SQL, then the events the SQL projection may not show yet from the
   stream, up to P (and a resumed watcher, the events after its last position);
3. then it yields the live events, skipping any it has already yielded (by position).

Resuming after a position older than the log holds (it is trimmed by age and length) reads
the older events back from SQL, where every event ends up, in the same order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentexec.db.models import Activity, ActivityLog
from agentexec.eventlog.event import Event
from agentexec.eventlog.hub import OVERFLOW, EventHub, Subscription, get_hub
from agentexec.ids import parse_agent_id
from agentexec.runtime import get_runtime
from agentexec.states import ACTIVE, EventKind, Status

#: Runs `watch_all` shows in its first state at most (the newest).
SNAPSHOT_LIMIT = 1_000
#: Events read back from SQL per query.
_PAGE = 1_000

#: The kind of an event read back from SQL, where only its status is kept.
_KIND_OF = {
    Status.QUEUED: EventKind.QUEUED,
    Status.RUNNING: EventKind.REPORT,
    Status.COMPLETE: EventKind.COMPLETE,
    Status.ERROR: EventKind.ERROR,
    Status.CANCELED: EventKind.CANCELED,
}


async def watch(agent_id: uuid.UUID | str, *, after: int | None = None) -> AsyncIterator[Event]:
    """The events of one run: its state, then each change, until it ends.

    Example:
        ```python
        async for event in ax.watch(agent_id):
            print(event.status, event.percentage, event.message)
        ```

    Args:
        agent_id: the run.
        after: resume after this position (`Event.seq` of the last event seen): every later
            event is yielded, and no state first. None: the current state first, as one
            `EventKind.SNAPSHOT` event.

    Raises:
        KeyError: no run has this id (an `InvalidAgentIdError` for a malformed one).
        redis.RedisError: the event log is unreachable when the watch starts. Later
            outages only delay events.
    """
    key = parse_agent_id(agent_id)
    hub = get_hub()
    last = after
    while True:  # once, unless the hub drops this watcher for lagging: then catch up again
        subscription = await hub.subscribe(key)
        try:
            if last is None:
                projected = await hub.projected() or 0  # before SQL is read: SQL shows it
                state = await asyncio.to_thread(_state, key)
                if state is None:
                    raise KeyError(str(key))
                hub.remember_task(key, state.task or "")
                yield state
                if state.terminal:
                    return
                last = state.seq or 0
                caught_up = await _stream_since(hub, max(last, projected), subscription, key)
            else:
                # From the event at `last` on: when that is the run's end, nothing follows.
                caught_up = await _since(hub, key, last - 1, subscription)
                for event in caught_up:
                    if event.task:
                        hub.remember_task(key, event.task)
                if any(e.seq == last and e.terminal for e in caught_up):
                    return
                if not caught_up and await ended(key, last):
                    return
            for event in caught_up:
                if event.seq is not None and event.seq > last:
                    yield _named(event, hub.task_name(event))
                    last = event.seq
                    if event.terminal:
                        return
            while (live := await subscription.queue.get()) is not OVERFLOW:
                if live.seq is not None and live.seq > last:
                    yield _named(live, hub.task_name(live))
                    last = live.seq
                    if live.terminal:
                        return
        finally:
            hub.unsubscribe(subscription)


async def watch_all(
    *,
    status: Status | str | Collection[Status | str] | None = None,
    task: str | Collection[str] | None = None,
    after: int | None = None,
) -> AsyncIterator[Event]:
    """The events of every run, for dashboards: the runs' state, then each change. Endless.

    Args:
        status: only events with this status (or one of these).
        task: only runs of this task name (or one of these).
        after: resume after this position: every later event is yielded, and no state
            first. None: first the state of each active run (QUEUED or RUNNING, or of
            `status` when given) as `EventKind.SNAPSHOT` events, the newest
            `SNAPSHOT_LIMIT` runs at most.

    Raises:
        redis.RedisError: the event log is unreachable when the watch starts.
    """
    filters = _Filters.of(status, task)
    hub = get_hub()
    last = after
    while True:
        subscription = await hub.subscribe(match=lambda e: filters.match(e, hub))
        try:
            if last is None:
                projected = await hub.projected() or 0
                states = await asyncio.to_thread(_states, filters)
                for state in states:
                    hub.remember_task(state.agent_id, state.task or "")
                    yield state
                seen = {s.agent_id: s.seq or 0 for s in states}
                # SQL shows every event up to `projected`; the stream has the rest.
                last = min(projected, subscription.position)
                events = await hub.read_range(last, subscription.position)
                caught_up = [
                    e
                    for e in events
                    if filters.match(e, hub) and (e.seq or 0) > seen.get(e.agent_id, 0)
                ]
            else:
                events = await _all_since(hub, last, subscription.position, filters)
                caught_up = [e for e in events if filters.match(e, hub)]
            for event in caught_up:
                if event.seq is not None and event.seq > last:
                    yield _named(event, hub.task_name(event))
                    last = event.seq
            while (live := await subscription.queue.get()) is not OVERFLOW:
                if live.seq is not None and live.seq > last:
                    yield _named(live, hub.task_name(live))
                    last = live.seq
        finally:
            hub.unsubscribe(subscription)


async def ended(agent_id: uuid.UUID | str, after: int) -> bool:
    """Whether the run ended at or before position `after`: a watch resumed there is empty.

    Raises:
        KeyError: no run has this id.
    """
    key = parse_agent_id(agent_id)
    state = await asyncio.to_thread(_state, key)
    if state is None:
        raise KeyError(str(key))
    if state.terminal and (state.seq or 0) <= after:
        return True
    # SQL may not show the end yet: the log does.
    at = await get_hub().read_range(after - 1, after)
    return any(e.agent_id == key and e.terminal for e in at)


def _named(event: Event, task: str | None) -> Event:
    """`event` with its run's task name, when it came without one."""
    if event.task is not None or not task:
        return event
    return dataclasses.replace(event, task=task)


@dataclass(frozen=True)
class _Filters:
    statuses: frozenset[Status] | None
    tasks: frozenset[str] | None

    @classmethod
    def of(
        cls,
        status: Status | str | Collection[Status | str] | None,
        task: str | Collection[str] | None,
    ) -> _Filters:
        statuses = None
        if status is not None:
            items = [status] if isinstance(status, str) else list(status)
            statuses = frozenset(Status(s) for s in items)
        tasks = None
        if task is not None:
            tasks = frozenset([task] if isinstance(task, str) else task)
        return cls(statuses, tasks)

    def match(self, event: Event, hub: EventHub) -> bool:
        if self.statuses is not None and event.status not in self.statuses:
            return False
        return self.tasks is None or hub.task_name(event) in self.tasks


async def _since(
    hub: EventHub, agent_id: uuid.UUID, after: int, subscription: Subscription
) -> list[Event]:
    """The events of one run after `after`, up to the subscription's start, oldest first.

    SQL holds every event up to the projection's position; the stream holds the rest.
    """
    projected = await hub.projected()
    if projected is None:  # no projector: the stream is all there is
        return await _stream_since(hub, after, subscription, agent_id)
    events: list[Event] = []
    if after < projected:
        events = await asyncio.to_thread(_logs, agent_id, after, projected)
    stream = await _stream_since(hub, max(after, projected), subscription, agent_id)
    return events + stream


async def _stream_since(
    hub: EventHub, after: int, subscription: Subscription, agent_id: uuid.UUID
) -> list[Event]:
    if after >= subscription.position:
        return []
    events = await hub.read_range(after, subscription.position)
    return [e for e in events if e.agent_id == agent_id]


async def _all_since(hub: EventHub, after: int, upto: int, filters: _Filters) -> list[Event]:
    """Every event after `after` up to `upto`: from the stream, or SQL where it is trimmed."""
    if after >= upto:
        return []
    first = await hub.first_position()
    if first is not None and first <= after + 1:
        return await hub.read_range(after, upto)
    projected = await hub.projected() or 0
    older = await asyncio.to_thread(_all_logs, after, projected, filters)
    for event in older:
        hub.remember_task(event.agent_id, event.task or "")
    return older + await hub.read_range(max(after, projected), upto)


# SQL reads, run on a thread.


def _state(agent_id: uuid.UUID) -> Event | None:
    with Session(get_runtime().engine) as session:
        row = session.get(Activity, agent_id)
        return _snapshot(row) if row is not None else None


def _states(filters: _Filters) -> list[Event]:
    statuses = filters.statuses if filters.statuses is not None else ACTIVE
    stmt = select(Activity).where(Activity.status.in_(statuses))
    if filters.tasks is not None:
        stmt = stmt.where(Activity.agent_type.in_(filters.tasks))
    stmt = stmt.order_by(Activity.created_at.desc()).limit(SNAPSHOT_LIMIT)
    with Session(get_runtime().engine) as session:
        rows = session.scalars(stmt).all()
        return sorted((_snapshot(row) for row in rows), key=lambda e: e.seq or 0)


def _snapshot(row: Activity) -> Event:
    return Event(
        row.agent_id,
        row.status,
        row.latest_log or "",
        row.latest_completion_percentage,
        kind=EventKind.SNAPSHOT,
        task=row.agent_type,
        worker=row.worker,
        at=row.updated_at,
        seq=row.last_seq or 0,
    )


def _logs(agent_id: uuid.UUID, after: int, upto: int) -> list[Event]:
    stmt = (
        select(ActivityLog, Activity.agent_type)
        .join(Activity)
        .where(ActivityLog.agent_id == agent_id, ActivityLog.seq > after, ActivityLog.seq <= upto)
        .order_by(ActivityLog.seq)
    )
    with Session(get_runtime().engine) as session:
        return [_from_log(log, task) for log, task in session.execute(stmt)]


def _all_logs(after: int, upto: int, filters: _Filters) -> list[Event]:
    events: list[Event] = []
    with Session(get_runtime().engine) as session:
        while True:
            stmt = (
                select(ActivityLog, Activity.agent_type)
                .join(Activity)
                .where(ActivityLog.seq > after, ActivityLog.seq <= upto)
                .order_by(ActivityLog.seq)
                .limit(_PAGE)
            )
            if filters.tasks is not None:
                stmt = stmt.where(Activity.agent_type.in_(filters.tasks))
            page = [_from_log(log, task) for log, task in session.execute(stmt)]
            events += page
            if len(page) < _PAGE:
                return events
            after = page[-1].seq or after


def _from_log(log: ActivityLog, task: str) -> Event:
    return Event(
        log.agent_id,
        log.status,
        log.message,
        log.completion_percentage,
        kind=_KIND_OF[log.status],
        task=task,
        at=log.created_at,
        seq=log.seq,
    )
