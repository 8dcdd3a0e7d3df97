"""A background thread that batches activity writes.

Status reports come from agents on the shared event loop, which must never wait on the
database. They are queued here and written by one thread, many per transaction, in the order
they were made. Lifecycle writes from the worker's pool threads go through the same queue, so
a run's log stays in order; terminal ones wait until their batch is committed.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError

from agentexec.activity import store
from agentexec.activity.store import Entry

logger = logging.getLogger(__name__)

_BATCH = 500
#: Seconds the writer lingers for more entries once one arrives. A transaction costs about
#: the same for one row as for fifty; under load this turns many tiny batches into few.
_LINGER = 0.002
_RETRIES = 5


class _Item:
    __slots__ = ("done", "ensure", "entry")

    def __init__(self, entry: Entry | None, ensure: bool, done: threading.Event | None) -> None:
        self.entry = entry
        self.ensure = ensure
        self.done = done


class ActivityWriter:
    """One writer thread per process, started on first use and restarted after a fork."""

    def __init__(self, write: Callable[[list[Entry], list[Entry]], None] = store.write) -> None:
        self._write = write
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def submit(self, entry: Entry, *, ensure: bool = False, wait: float | None = None) -> bool:
        """Queue `entry`. With `wait`, block up to that many seconds for its commit.

        Returns False only when `wait` ran out before the commit.
        """
        self._ensure_started()
        done = threading.Event() if wait is not None else None
        self._queue.put(_Item(entry, ensure, done))
        return done.wait(wait) if done is not None else True

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is committed."""
        if self._thread is None or self._pid != os.getpid():
            return True
        done = threading.Event()
        self._queue.put(_Item(None, ensure=False, done=done))
        return done.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued, then end the thread."""
        thread = self._thread
        if thread is None or self._pid != os.getpid():
            return
        self._queue.put(None)
        thread.join(timeout)
        self._thread = None

    def _ensure_started(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._queue = queue.SimpleQueue()
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name="agentexec-activity-writer", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            deadline = time.monotonic() + _LINGER
            while len(batch) < _BATCH:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Item]) -> None:
        entries = [i.entry for i in batch if i.entry is not None]
        missing = [i.entry for i in batch if i.entry is not None and i.ensure]
        if entries and not self._try(entries, missing, retries=_RETRIES):
            # One bad entry (an unknown agent id, say) must not take the batch with it.
            for agent_id in dict.fromkeys(e.agent_id for e in entries):
                self._try(
                    [e for e in entries if e.agent_id == agent_id],
                    [e for e in missing if e.agent_id == agent_id],
                    retries=1,
                )
        for item in batch:
            if item.done is not None:
                item.done.set()

    def _try(self, entries: list[Entry], missing: list[Entry], retries: int) -> bool:
        for attempt in range(retries):
            try:
                self._write(entries, missing)
                return True
            except IntegrityError as exc:
                logger.warning("activity write rejected: %s", exc.orig)
                return False
            except Exception:
                logger.exception("activity write failed (attempt %d/%d)", attempt + 1, retries)
                time.sleep(min(0.1 * 2**attempt, 2.0))
        return False


writer = ActivityWriter()
