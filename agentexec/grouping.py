"""Group commit: concurrent callers' writes, done by one of them as one batch.

A burst of `ax.enqueue` calls runs on many publisher threads at once. Each must commit its
QUEUED row before it returns, and a commit is a round trip and, on disk, a flush. Here the
first caller to arrive becomes the leader: it takes
everything queued so far, writes it as one batch, and hands every caller its own result.
Callers that arrive meanwhile wait for the next batch, which the next leader writes. A lone
caller pays nothing extra: it leads a batch of one.
"""

from __future__ import annotations

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
                slot.error, slot.done = exc, True
        else:
            for slot, result in zip(batch, results, strict=True):
                slot.result, slot.done = result, True
        for slot in batch:
            slot.wake.set()
