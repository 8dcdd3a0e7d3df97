"""The appender: one thread that appends events for code that must not wait on Redis.

Agents report progress from the shared event loop, so their events are queued here and
appended in batches, one pipeline per batch, in the order they were made. While Redis is
unreachable the appender holds its events and retries; nothing is dropped.

A worker also keeps a *journal* of each run it is running: every event of the run that this
process appended. When the run ends, the worker writes its journal to SQL in one transaction,
before Celery stores the result, so a client that holds the result reads the whole log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import threading
import time
import uuid
from collections import deque

import redis

from agentexec.config import get_settings
from agentexec.eventlog.event import Event, clock_seq
from agentexec.eventlog.log import EventLog
from agentexec.states import EventKind

logger = logging.getLogger(__name__)

#: The events one attempt of a run appended in this process, newest last.
Journal = deque[Event]

#: Events per pipeline.
_BATCH = 500
#: Seconds the appender lingers for more events once one arrives: one pipeline costs about
#: the same for one event as for fifty.
_LINGER = 0.002
#: Longest pause between attempts while Redis is unreachable.
_MAX_BACKOFF = 2.0
#: Newest events kept in one run's journal; older ones reach SQL through the projector.
_JOURNAL_LIMIT = 1_000


class _Item:
    __slots__ = ("appended", "done", "event")

    def __init__(self, event: Event | None, done: threading.Event | None) -> None:
        self.event = event
        self.done = done
        self.appended: Event | None = None


class EventAppender:
    """One thread that appends events for callers that must not wait on Redis.

    It holds at most `capacity` events (`AGENTEXEC_APPENDER_BUFFER`) while Redis is slow or
    away. Beyond that, status reports are coalesced: each run's newest is kept aside and
    appended when there is room, and the count left out is logged. Other events are never
    dropped: a thread that submits one waits for room, and on an event loop (which must
    not wait) it goes in all the same.
    """

    def __init__(self, log: EventLog, capacity: int | None = None) -> None:
        self.log = log
        self.capacity = capacity or get_settings().appender_buffer
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        #: Events queued and not yet appended, and a condition for room among them.
        self._size = 0
        self._room = threading.Condition(threading.Lock())
        #: Each run's newest status report, kept aside while the buffer is full.
        self._held: dict[uuid.UUID, Event] = {}
        self._coalesced = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._journals: dict[uuid.UUID, Journal] = {}
        #: The task and owner of each run with a journal, stamped on its events that lack them.
        self._runs: dict[uuid.UUID, tuple[str | None, str | None]] = {}
        self._last_seq = 0

    @property
    def last_seq(self) -> int:
        """Position of the newest event this appender has appended."""
        return self._last_seq

    def submit(self, event: Event) -> None:
        """Queue `event`; it is appended soon, after every event submitted before it (a
        status report may be coalesced with the run's next while the buffer is full)."""
        self._start()
        self._put(_Item(self._stamped(event), None))

    def submit_and_wait(self, event: Event, timeout: float) -> Event | None:
        """Queue `event` and wait until it is appended; None if that took over `timeout`."""
        self._start()
        item = _Item(self._stamped(event), threading.Event())
        self._put(item)
        assert item.done is not None
        return item.appended if item.done.wait(timeout) else None

    def _put(self, item: _Item) -> None:
        event = item.event
        assert event is not None
        with self._room:
            if self._size >= self.capacity:
                if event.kind is EventKind.REPORT and item.done is None:
                    if self._held.pop(event.agent_id, None) is not None:
                        self._coalesced += 1
                    elif not self._held and not self._coalesced:
                        logger.warning(
                            "event log behind: %d events waiting; coalescing status reports "
                            "(each run's newest is kept)",
                            self._size,
                        )
                    self._held[event.agent_id] = event
                    return
                if not _on_event_loop():
                    self._room.wait_for(lambda: self._size < self.capacity)
            held = self._held.pop(event.agent_id, None)
            if held is not None:  # the run's held report goes first, in order
                self._size += 1
                self._queue.put(_Item(held, None))
            self._size += 1
            self._queue.put(item)

    def _freed(self, count: int) -> None:
        """`count` queued events were appended: room for held reports, and for waiters."""
        with self._room:
            self._size -= count
            while self._held and self._size < self.capacity:
                _, held = self._held.popitem()
                self._size += 1
                self._queue.put(_Item(held, None))
            if not self._held and self._coalesced:
                logger.warning(
                    "event log caught up: %d status reports were coalesced", self._coalesced
                )
                self._coalesced = 0
            self._room.notify_all()

    def record(self, event: Event, timeout: float) -> Event:
        """Append `event` after every event submitted before it, and wait for it; when that
        takes over `timeout` (the log's Redis is unreachable), place it by the clock, for the
        caller to write to SQL (see `EventLog.record`)."""
        appended = self.submit_and_wait(event, timeout)
        if appended is None:
            logger.error("event log unreachable: %s goes to SQL only", event.agent_id)
            appended = event.appended(clock_seq())
        return appended

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every event submitted so far is appended."""
        if self._thread is None:
            return True
        item = _Item(None, threading.Event())
        self._queue.put(item)
        assert item.done is not None
        return item.done.wait(timeout)

    def start_journal(
        self, agent_id: uuid.UUID, task: str | None = None, owner: str | None = None
    ) -> Journal:
        """Keep the events of `agent_id` appended from now on; returns the journal.

        Args:
            agent_id: the run.
            task: its task name, given to its events that do not name one (status reports),
                so that watchers can filter them by task.
            owner: its owner, given to its events likewise, so that watchers scoped to an
                owner see them.
        """
        journal: Journal = deque(maxlen=_JOURNAL_LIMIT)
        with self._lock:
            self._journals[agent_id] = journal
            if task is not None or owner is not None:
                self._runs[agent_id] = (task, owner)
        return journal

    def end_journal(self, agent_id: uuid.UUID, journal: Journal | None = None) -> list[Event]:
        """The events of a journal, which is forgotten.

        Args:
            agent_id: whose journal.
            journal: the one `start_journal` returned; a newer attempt of the same run (a
                retry that started on another thread) keeps its own. None: the current one.
        """
        with self._lock:
            current = self._journals.get(agent_id)
            if journal is None or current is journal:
                self._journals.pop(agent_id, None)
                self._runs.pop(agent_id, None)
                journal = current
        return list(journal or ())

    def _stamped(self, event: Event) -> Event:
        run = self._runs.get(event.agent_id)
        if run is None:
            return event
        task, owner = run
        if (event.task is None and task is not None) or (event.owner is None and owner):
            return dataclasses.replace(event, task=event.task or task, owner=event.owner or owner)
        return event

    def stop(self, timeout: float = 10.0) -> None:
        """Append what is queued (while Redis answers), then end the thread."""
        thread = self._thread
        if thread is None:
            return
        self._queue.put(None)
        thread.join(timeout)
        self._thread = None

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="agentexec-event-appender", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + _LINGER
            while len(batch) < _BATCH:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._append(batch, give_up=stopping)

    def _append(self, batch: list[_Item], *, give_up: bool) -> None:
        events = [item.event for item in batch if item.event is not None]
        delay, failing_since = 0.05, 0.0
        while events:
            try:
                appended = self.log.append(events)
            except redis.RedisError as exc:
                if not failing_since:
                    failing_since = time.monotonic()
                    logger.warning(
                        "event log unreachable (%s); holding %d events and retrying",
                        exc,
                        len(events),
                    )
                if give_up:
                    logger.error("event log unreachable at shutdown: %d events lost", len(events))
                    break
                time.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
                continue
            if failing_since:
                logger.warning(
                    "event log reachable again after %.1fs", time.monotonic() - failing_since
                )
            self._record(batch, appended)
            break
        self._freed(sum(item.event is not None for item in batch))
        for item in batch:
            if item.done is not None:
                item.done.set()

    def _record(self, batch: list[_Item], appended: list[Event]) -> None:
        events = iter(appended)
        with self._lock:
            for item in batch:
                if item.event is None:
                    continue
                event = item.appended = next(events)
                journal = self._journals.get(event.agent_id)
                if journal is not None:
                    journal.append(event)
            if appended:
                self._last_seq = max(self._last_seq, appended[-1].seq or 0)


def _on_event_loop() -> bool:
    """Whether the calling thread is running an event loop (which must never wait)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
