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
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """Calls `write(items) -> results` (one result per item, in order) for batches of callers.

    An exception from `write` is raised in every caller of that batch.
    """

    def __init__(self, write: Callable[[list[T]], list[R]]) -> None:
        self._write = write
        self._cond = threading.Condition()
        self._waiting: list[_Slot[T, R]] = []
        self._busy = False

    def __call__(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        with self._cond:
            self._waiting.append(slot)
            while not slot.done:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                batch, self._waiting = self._waiting, []
                self._cond.release()
                try:
                    self._lead(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _lead(self, batch: list[_Slot[T, R]]) -> None:
        try:
            results = self._write([slot.item for slot in batch])
        except BaseException as exc:
            for slot in batch:
                slot.error, slot.done = exc, True
            return
        for slot, result in zip(batch, results, strict=True):
            slot.result, slot.done = result, True
