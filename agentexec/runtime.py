"""The Runtime: everything one process owns, in one object.

A process that enqueues, watches or runs agents holds a few long-lived things: the activity
database's engine, the event log's client, the thread that appends events, the SQL writes
that callers wait on, the projector, the publisher thread of `ax.enqueue`. They belong to one
`Runtime`: made on first use, started piece by piece as needed (nothing connects at import),
stopped at worker shutdown, and replaced by a fresh one in a forked child, whose threads did
not survive the fork (`os.register_at_fork`).

What only a worker holds (the agents' event loop, heartbeats, the shutdown timer) hangs off
the worker's own object, `agentexec.worker.AgentWorker`.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from agentexec.batching import Batcher, GroupCommit
from agentexec.config import get_settings
from agentexec.db import engines, projection
from agentexec.db.projector import Projector
from agentexec.eventlog.appender import EventAppender
from agentexec.eventlog.event import Event
from agentexec.eventlog.log import EventLog
from agentexec.eventlog.position import PROJECTED, applied_through
from agentexec.keys import PROJECTOR_GROUP

logger = logging.getLogger(__name__)

#: Seconds the end of a run waits for others to share its commit.
_END_LINGER = 0.002
#: How many committed event positions a process remembers, for its projector to skip.
_REMEMBER_WRITTEN = 100_000


class Runtime:
    """The per-process state of agentexec.

    Args:
        engine: the activity database's engine, as bound by `WorkerPool(engine=...)`.
        database_url: the activity database, when no engine is bound (`DATABASE_URL` when
            neither is given).
    """

    def __init__(self, engine: Engine | None = None, database_url: str | None = None) -> None:
        self._engine = engines.adopt(engine) if engine is not None else None
        self._database_url = database_url
        self._prepared: set[int] = set()
        self._lock = threading.Lock()
        #: The worker's node name, in a worker process: stamped on the events it records.
        self.worker: str | None = None
        #: Whether this process sees the activity database down (logged once per outage).
        self.outage = engines.Outage()
        self._publisher: Batcher[Any, Any] | None = None
        #: The event log in Redis.
        self.events = EventLog()
        #: Appends events for code that must not wait (agents, worker signals).
        self.appender = EventAppender(self.events)
        # Two group commits, each with its own connection: the publish path's, which its
        # callers wait on, and the ends of runs, which linger a little to share commits.
        self._queued = _Group(linger=0.0, runtime=self)
        self._ends = _Group(linger=_END_LINGER, runtime=self)
        #: Positions of events this process has committed to SQL itself, newest last: its
        #: projector skips them (a bounded memory, so a few may be applied twice; harmless).
        self._written: set[int] = set()
        self._written_order: collections.deque[int] = collections.deque()
        #: The projector of this process, once started.
        self.projector: Projector | None = None

    # The activity database

    def bind(self, engine: Engine | None = None, database_url: str | None = None) -> None:
        """Make `engine` (or, on first use, a new one for `database_url`) the activity database.

        Nothing connects here, and a bad URL raises on first use, where the caller sees it.
        """
        with self._lock:
            self._engine = engines.adopt(engine) if engine is not None else None
            self._database_url = database_url

    @property
    def engine(self) -> Engine:
        """The activity database's engine, created from the settings on first use.

        Raises:
            ActivityStoreError: its URL is malformed or its driver is missing.
        """
        engine = self._engine
        if engine is not None:
            return engine
        with self._lock:
            return self._get_engine()

    def _get_engine(self) -> Engine:
        if self._engine is None:
            self._engine = engines.create(self._database_url or get_settings().database_url)
        return self._engine

    def ready_engine(self) -> Engine:
        """The engine, with its tables checked (and created, if allowed) once per process.

        Raises:
            ActivityStoreError: the database is misconfigured.
            SQLAlchemyError: it is unreachable.
        """
        engine = self.engine
        if id(engine) not in self._prepared:
            engines.prepare(engine)
            self._prepared.add(id(engine))
        return engine

    def write(self, events: Sequence[Event], *, kept: engines.KeptConnection | None = None) -> bool:
        """Apply appended events to SQL now, in one transaction.

        Returns False when the database is unreachable: the events are in the log, and the
        projector applies them when it is back. Logs once per outage.

        Args:
            events: appended events.
            kept: write through this connection rather than one from the pool.

        Raises:
            ActivityStoreError: the database is misconfigured.
        """
        try:
            engine = self.ready_engine()
            with kept.transaction(engine) if kept else engines.transaction(engine) as conn:
                projection.apply(conn, events, synchronous_commit=get_settings().synchronous_commit)
        except SQLAlchemyError as exc:
            error = engines.misconfigured(self.engine, exc)
            if error is not None:
                raise error from exc
            self.outage.failed(exc)
            return False
        self.outage.succeeded()
        with self._lock:
            self._remember_written(events)
        return True

    def write_queued(self, events: list[Event]) -> bool:
        """`write` in one transaction with concurrent callers: the publish path's group."""
        return self._queued(events)

    def write_end(self, events: list[Event]) -> bool:
        """`write` the events of a run that ends, sharing a commit with runs that end within
        a few milliseconds: a burst of endings then costs a few commits, not one each."""
        return self._ends(events)

    def was_written(self, seq: int | None) -> bool:
        """Whether this process committed the event at `seq` to SQL itself."""
        return seq in self._written

    def _remember_written(self, events: Sequence[Event]) -> None:
        for event in events:
            if event.seq is not None and event.seq not in self._written:
                self._written.add(event.seq)
                self._written_order.append(event.seq)
        while len(self._written_order) > _REMEMBER_WRITTEN:
            self._written.discard(self._written_order.popleft())

    # Threads

    def publisher(self, publish: Callable[[list[Any]], list[Any]]) -> Batcher[Any, Any]:
        """The thread that publishes for `ax.enqueue`, so the caller's loop never waits on I/O.

        `publish` gets every enqueue that arrived since its last batch, and publishes them
        together (made on first use; one per process).
        """
        if self._publisher is None:
            with self._lock:
                if self._publisher is None:
                    self._publisher = Batcher(publish, name="agentexec-publish")
        return self._publisher

    def start_projector(self) -> Projector:
        """Start this process's projector (once)."""
        with self._lock:
            if self.projector is None:
                self.projector = Projector(
                    self.ready_engine, self.events, self.outage, skip=self.was_written
                ).start()
            return self.projector

    def stop_projector(self, timeout: float = 10.0) -> None:
        """Stop this process's projector, if it runs."""
        with self._lock:
            projector, self.projector = self.projector, None
        if projector is not None:
            projector.stop(timeout)

    def wait_projected(self, timeout: float = 30.0) -> bool:
        """Wait until every event this process appended so far is applied to SQL.

        Some projector must be running (a worker's, `agentexec project`, or this process's).
        """
        if not self.appender.flush(timeout):
            return False
        target = self.appender.last_seq
        if not target:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.applied_through() or 0) >= target:
                return True
            time.sleep(0.02)
        return False

    def applied_through(self) -> int | None:
        """The position up to which the projectors have applied the log (SQL shows every
        event up to it); None when no projector has ever read it.

        Raises:
            redis.RedisError: the log's Redis is unreachable.
        """
        reply = self.events.client().eval(PROJECTED, 1, self.events.key, PROJECTOR_GROUP)
        return applied_through(reply)

    def stop(self, timeout: float = 10.0) -> None:
        """Publish and append what is queued, stop the projector. The runtime can
        restart."""
        if self._publisher is not None:
            self._publisher.stop(timeout)
            self._publisher = None
        self.stop_projector(timeout)
        self._queued.close()
        self._ends.close()
        self.appender.stop(timeout)
        self.events.close()


class _Group:
    """A group commit of a runtime's writes, on a connection of its own."""

    def __init__(self, linger: float, runtime: Runtime) -> None:
        self._runtime = runtime
        self._conn = engines.KeptConnection()
        self._commit = GroupCommit(self._write, linger=linger)

    def __call__(self, events: list[Event]) -> bool:
        return self._commit(events)

    def _write(self, groups: list[list[Event]]) -> list[bool]:
        written = self._runtime.write([e for group in groups for e in group], kept=self._conn)
        return [written] * len(groups)

    def close(self) -> None:
        self._conn.close()


_current = Runtime()


def get_runtime() -> Runtime:
    """This process's runtime."""
    return _current


def freeze_startup_objects() -> None:
    """With `AGENTEXEC_GC_FREEZE` on: exempt every object alive now (the imports, at the end
    of a worker's or an app's startup) from the cyclic garbage collector, so that its full
    collections walk only what live runs and streams make, not a few hundred thousand
    objects of modules."""
    if get_settings().gc_freeze:
        gc.collect()  # what is garbage now is not frozen with the rest
        gc.freeze()


def set_runtime(runtime: Runtime) -> Runtime:
    """Make `runtime` this process's runtime; returns the one it replaces (for tests)."""
    global _current
    previous, _current = _current, runtime
    return previous


def _after_fork_in_child() -> None:
    """A forked child keeps the bound database, drops the parent's threads and connections."""
    global _current
    parent = _current
    if parent._engine is not None:
        parent._engine.dispose(close=False)
    _current = Runtime(parent._engine, parent._database_url)
    _current._prepared = set(parent._prepared)
    _current.worker = parent.worker


os.register_at_fork(after_in_child=_after_fork_in_child)
