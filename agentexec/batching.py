"""Batches of work that arrives together: done once for many callers.

`GroupCommit`: concurrent callers' writes, done by one of them as one batch. Many threads
calling `.delay()` at once each commit a QUEUED row before they return, and a commit is a
round trip and, on disk, a flush. Here the first caller to arrive becomes the leader: it takes
everything queued so far, writes it as one batch, and hands every caller its own result.
Callers that arrive meanwhile wait for the next batch, which the next leader writes. A lone
caller pays nothing extra: it leads a batch of one.

`Batcher`: a thread of its own that does everything submitted since its last batch at once,
for callers that must not block (`ax.enqueue` awaits its publish on the event loop, through
`Batcher.call`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "item", "result", "wake")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None
        #: Set when the slot is written, or when its caller is to lead the next batch.
        self.wake = threading.Event()


class GroupCommit(Generic[T, R]):
    """Calls `write(items) -> results` (one result per item, in order) for batches of callers.

    An exception from `write` is raised in every caller of that batch. Each waiting caller is
    woken once, for its own result or to lead the next batch: no thundering herd.
    """

    def __init__(self, write: Callable[[list[T]], list[R]], linger: float = 0.0) -> None:
        """
        Args:
            write: writes a batch, returns one result per item.
            linger: seconds a leader waits for more callers before it writes. Zero for
                callers that wait on the write (the publish path); a few milliseconds where
                throughput matters more than latency.
        """
        self._write = write
        self._linger = linger
        self._lock = threading.Lock()
        self._waiting: list[_Slot[T, R]] = []
        self._busy = False

    def __call__(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        with self._lock:
            self._waiting.append(slot)
            lead = not self._busy
            self._busy = True
        if not lead:
            slot.wake.wait()
        if not slot.done:  # leading: write everything waiting, this slot included
            if self._linger:
                time.sleep(self._linger)
            with self._lock:
                batch, self._waiting = self._waiting, []
            self._lead(batch)
            with self._lock:
                if self._waiting:
                    self._waiting[0].wake.set()  # hand over to the next batch's first caller
                else:
                    self._busy = False
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _lead(self, batch: list[_Slot[T, R]]) -> None:
        try:
            results = self._write([slot.item for slot in batch])
        except BaseException as exc:
            for slot in batch:
                slot.error, slot.done = own_copy(exc), True
        else:
            for slot, result in zip(batch, results, strict=True):
                slot.result, slot.done = result, True
        for slot in batch:
            slot.wake.set()


class _LoopWaiter(Generic[R]):
    """A coroutine's wait for its item's outcome: a future of its event loop."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[R] = loop.create_future()


_Sink = concurrent.futures.Future[R] | _LoopWaiter[R]


class Batcher(Generic[T, R]):
    """A thread that hands everything submitted since its last batch to `handle` at once.

    `handle(items)` returns one outcome per item, in order: a result, or the exception that
    item raises. While it works, new items queue up for the next batch, so a burst of
    submissions is handled in a few batches, and a lone one at once.
    """

    def __init__(
        self,
        handle: Callable[[list[T]], list[R | BaseException]],
        name: str,
        max_batch: int = 500,
    ) -> None:
        self._handle = handle
        self._name = name
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[T, _Sink[R]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, item: T) -> concurrent.futures.Future[R]:
        """Queue `item`; the future gets its outcome. Cancelling it before its batch starts
        drops the item."""
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        self._put(item, future)
        return future

    async def call(self, item: T) -> R:
        """Queue `item` and wait for its outcome, from a coroutine.

        The outcomes of one batch reach each event loop in one wake-up, not one per item:
        a burst of callers costs their loop a few cross-thread calls, and the batch thread
        is not interrupted for each. Cancelled before its batch starts, the item is dropped.
        """
        waiter: _LoopWaiter[R] = _LoopWaiter(asyncio.get_running_loop())
        self._put(item, waiter)
        return await waiter.future

    def _put(self, item: T, sink: _Sink[R]) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
        self._queue.put((item, sink))

    def stop(self, timeout: float = 10.0) -> None:
        """Handle what is queued, then end the thread. The batcher can restart."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < self._max_batch:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    stopping = True
                    break
                batch.append(entry)
            self._run_batch(batch)
            if stopping:
                return

    def _run_batch(self, batch: list[tuple[T, _Sink[R]]]) -> None:
        batch = [(item, sink) for item, sink in batch if _start(sink)]
        if not batch:
            return
        try:
            outcomes = self._handle([item for item, _ in batch])
        except BaseException as exc:
            outcomes = [exc] * len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[R], object]]] = {}
        for (_, sink), outcome in zip(batch, outcomes, strict=True):
            if isinstance(sink, _LoopWaiter):
                by_loop.setdefault(sink.loop, []).append((sink.future, outcome))
            elif isinstance(outcome, BaseException):
                sink.set_exception(own_copy(outcome))
            else:
                sink.set_result(outcome)
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, settled)


def _start(sink: _Sink[R]) -> bool:
    """Whether the item of `sink` is still wanted (its caller did not cancel)."""
    if isinstance(sink, _LoopWaiter):
        return not sink.future.done()
    return sink.set_running_or_notify_cancel()


def _settle(settled: list[tuple[asyncio.Future[R], object]]) -> None:
    """On the waiters' loop: hand each its outcome."""
    for future, outcome in settled:
        if future.done():  # cancelled meanwhile
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(own_copy(outcome))
        else:
            future.set_result(outcome)  # type: ignore[arg-type]


def own_copy(exc: BaseException) -> BaseException:
    """`exc` for one of the many waiters of a batch that failed: a copy without a traceback.

    Each waiter raises what it is given, and a raise adds the raising frames to the
    exception's traceback: one exception object raised by a thousand agents would carry
    (and keep alive) the frames of all of them. The copy keeps the type and message; an
    exception that cannot be copied is given as it is.
    """
    try:
        copied = copy.copy(exc)
    except Exception:
        return exc
    if type(copied) is not type(exc) or str(copied) != str(exc):
        return exc
    copied.__traceback__ = None
    copied.__cause__ = exc.__cause__
    return copied
