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
the older events back from SQL, where every event ends up, in the same order. Catching up
reads a page at a time and yields as it goes, so a replay of a long history starts at once
and holds one page in memory.

A watcher scoped to an `owner` sees only that owner's runs; another owner's run is unknown.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentexec.db.models import Activity, ActivityLog
from agentexec.eventlog.event import Event
from agentexec.eventlog.hub import OVERFLOW, EventHub, get_hub
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
    Status.WAITING: EventKind.WAITING,
    Status.COMPLETE: EventKind.COMPLETE,
    Status.ERROR: EventKind.ERROR,
    Status.CANCELED: EventKind.CANCELED,
}


async def watch(
    agent_id: uuid.UUID | str, *, after: int | None = None, owner: str | None = None
) -> AsyncIterator[Event]:
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
        owner: only a run of this owner; another owner's run is unknown (KeyError).

    Raises:
        KeyError: no run has this id (an `InvalidAgentIdError` for a malformed one).
        redis.RedisError: the event log is unreachable when the watch starts. Later
            outages only delay events.
    """
    key = parse_agent_id(agent_id)
    hub = get_hub()
    if after is not None and owner is not None:
        await _owned(key, owner)
    last = after
    while True:  # once, unless the hub drops this watcher for lagging: then catch up again
        subscription = await hub.subscribe(key)
        try:
            resumed = last is not None
            if last is None:
                projected = await hub.projected() or 0  # before SQL is read: SQL shows it
                state = await asyncio.to_thread(_state, key)
                if state is None or (owner is not None and state.owner != owner):
                    raise KeyError(str(key))
                hub.remember(state)
                yield state
                if state.terminal:
                    return
                last = state.seq or 0
                start = max(last, projected)
                catch_up = _stream(hub, start, subscription.position, key)
            else:
                # From the event at `last` on: when that is the run's end, nothing follows.
                catch_up = _since(hub, key, last - 1, subscription.position)
            resumed_at = last
            seen = False
            async for event in catch_up:
                seen = True
                if event.seq == resumed_at and event.terminal:
                    return
                if event.seq is not None and event.seq > last:
                    yield hub.named(event)
                    last = event.seq
                    if event.terminal:
                        return
            if resumed and not seen and await ended(key, last):
                return
            while (live := await subscription.queue.get()) is not OVERFLOW:
                if live.seq is not None and live.seq > last:
                    yield hub.named(live)
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
    owner: str | None = None,
) -> AsyncIterator[Event]:
    """The events of every run, for dashboards: the runs' state, then each change. Endless.

    Args:
        status: only events with this status (or one of these).
        task: only runs of this task name (or one of these).
        after: resume after this position: every later event is yielded, and no state
            first. None: first the state of each active run (QUEUED or RUNNING, or of
            `status` when given) as `EventKind.SNAPSHOT` events, the newest
            `SNAPSHOT_LIMIT` runs at most.
        owner: only the runs of this owner.

    Raises:
        redis.RedisError: the event log is unreachable when the watch starts.
    """
    filters = _Filters.of(status, task, owner)
    hub = get_hub()
    last = after
    while True:
        subscription = await hub.subscribe(match=lambda e: filters.match(e, hub))
        try:
            seen: dict[uuid.UUID, int] = {}
            if last is None:
                projected = await hub.projected() or 0
                states = await asyncio.to_thread(_states, filters)
                for state in states:
                    hub.remember(state)
                    yield state
                seen = {s.agent_id: s.seq or 0 for s in states}
                # SQL shows every event up to `projected`; the stream has the rest.
                last = min(projected, subscription.position)
                catch_up = _stream(hub, last, subscription.position)
            else:
                catch_up = _all_since(hub, last, subscription.position, filters)
            async for event in catch_up:
                if (
                    event.seq is not None
                    and event.seq > max(last, seen.get(event.agent_id, 0))
                    and filters.match(event, hub)
                ):
                    yield hub.named(event)
                    last = event.seq
            while (live := await subscription.queue.get()) is not OVERFLOW:
                if live.seq is not None and live.seq > last:
                    yield hub.named(live)
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


async def _owned(agent_id: uuid.UUID, owner: str) -> None:
    """KeyError unless the run is `owner`'s."""
    state = await asyncio.to_thread(_state, agent_id)
    if state is None or state.owner != owner:
        raise KeyError(str(agent_id))


@dataclass(frozen=True)
class _Filters:
    statuses: frozenset[Status] | None
    tasks: frozenset[str] | None
    owner: str | None

    @classmethod
    def of(
        cls,
        status: Status | str | Collection[Status | str] | None,
        task: str | Collection[str] | None,
        owner: str | None,
    ) -> _Filters:
        statuses = None
        if status is not None:
            items = [status] if isinstance(status, str) else list(status)
            statuses = frozenset(Status(s) for s in items)
        tasks = None
        if task is not None:
            tasks = frozenset([task] if isinstance(task, str) else task)
        return cls(statuses, tasks, owner)

    def match(self, event: Event, hub: EventHub) -> bool:
        if self.statuses is not None and event.status not in self.statuses:
            return False
        if self.tasks is None and self.owner is None:
            return True
        named = hub.named(event)
        if self.owner is not None and named.owner != self.owner:
            return False
        return self.tasks is None or named.task in self.tasks


async def _stream(
    hub: EventHub, after: int, upto: int, agent_id: uuid.UUID | None = None
) -> AsyncIterator[Event]:
    """The stream's events after `after` up to `upto` (of one run, or of all), a page read
    at a time."""
    if after >= upto:
        return
    async for page in hub.pages(after, upto):
        for event in page:
            if agent_id is None or event.agent_id == agent_id:
                yield event


async def _since(hub: EventHub, agent_id: uuid.UUID, after: int, upto: int) -> AsyncIterator[Event]:
    """The events of one run after `after`, up to `upto`, oldest first.

    SQL holds every event up to the projection's position (which may be past `upto`, when
    the stream is empty); the stream holds the rest.
    """
    projected = await hub.projected()
    if projected is None:  # no projector: the stream is all there is
        async for event in _stream(hub, after, upto, agent_id):
            yield event
        return
    async for event in _sql(agent_id, after, projected):
        yield event
    async for event in _stream(hub, max(after, projected), upto, agent_id):
        yield event


async def _all_since(
    hub: EventHub, after: int, upto: int, filters: _Filters
) -> AsyncIterator[Event]:
    """Every event after `after` up to `upto`: from the stream, or SQL where it is trimmed."""
    first = await hub.first_position()
    projected = 0
    if first is None or first > after + 1:
        projected = await hub.projected() or 0
        async for event in _sql(None, after, projected, filters):
            hub.remember(event)
            yield event
    async for event in _stream(hub, max(after, projected), upto):
        yield event


async def _sql(
    agent_id: uuid.UUID | None, after: int, upto: int, filters: _Filters | None = None
) -> AsyncIterator[Event]:
    """The log rows (of one run, or of all that pass `filters`) after `after` up to `upto`,
    as events, a page read at a time."""
    while after < upto:
        page = await asyncio.to_thread(_logs, agent_id, after, upto, filters)
        for event in page:
            yield event
        if len(page) < _PAGE:
            return
        after = page[-1].seq or after


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
    if filters.owner is not None:
        stmt = stmt.where(Activity.owner == filters.owner)
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
        owner=row.owner,
        at=row.updated_at,
        seq=row.last_seq or 0,
    )


def _logs(
    agent_id: uuid.UUID | None, after: int, upto: int, filters: _Filters | None
) -> list[Event]:
    """One page of log rows after `after` up to `upto`, oldest first."""
    stmt = (
        select(ActivityLog, Activity.agent_type, Activity.owner)
        .join(Activity)
        .where(ActivityLog.seq > after, ActivityLog.seq <= upto)
        .order_by(ActivityLog.seq)
        .limit(_PAGE)
    )
    if agent_id is not None:
        stmt = stmt.where(ActivityLog.agent_id == agent_id)
    if filters is not None and filters.tasks is not None:
        stmt = stmt.where(Activity.agent_type.in_(filters.tasks))
    if filters is not None and filters.owner is not None:
        stmt = stmt.where(Activity.owner == filters.owner)
    with Session(get_runtime().engine) as session:
        return [
            Event(
                log.agent_id,
                log.status,
                log.message,
                log.completion_percentage,
                kind=_KIND_OF[log.status],
                task=task,
                owner=owner,
                at=log.created_at,
                seq=log.seq,
            )
            for log, task, owner in session.execute(stmt)
        ]
