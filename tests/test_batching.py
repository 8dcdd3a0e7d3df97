"""Group commit: every caller gets its own result, concurrent callers share batches."""

from __future__ import annotations

import asyncio
import threading

import pytest

from agentexec.batching import Batcher, GroupCommit
from agentexec.testing import wait_for


def test_concurrent_callers_share_batches_and_get_their_own_results() -> None:
    batches: list[int] = []
    release = threading.Event()

    def write(items: list[int]) -> list[int]:
        batches.append(len(items))
        release.wait(5)  # the first batch waits until everyone has queued behind it
        return [2 * i for i in items]

    group = GroupCommit(write)
    results: dict[int, int] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, group(i))) for i in range(16)
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(group._waiting) == 15, 10, "15 callers queued behind the first")
    release.set()
    for thread in threads:
        thread.join(10)
    assert results == {i: 2 * i for i in range(16)}
    assert batches[0] == 1 and sum(batches) == 16 and len(batches) == 2  # 1, then the other 15


def test_an_error_reaches_every_caller_of_its_batch_only() -> None:
    def write(items: list[int]) -> list[int]:
        if -1 in items:
            raise ValueError("refused")
        return items

    group = GroupCommit(write)
    with pytest.raises(ValueError, match="refused"):
        group(-1)
    assert group(3) == 3


def _held_batcher() -> tuple[list[list[int]], threading.Event, Batcher[int, int]]:
    """A batcher that doubles its items (7 fails) and records its batches; the first batch
    holds the thread until `release` is set, while the rest queue up."""
    batches: list[list[int]] = []
    release = threading.Event()

    def handle(items: list[int]) -> list[int | BaseException]:
        batches.append(items)
        release.wait(5)
        return [ValueError(i) if i == 7 else 2 * i for i in items]

    return batches, release, Batcher(handle, name="test-batcher")


def test_a_batcher_hands_what_queued_up_meanwhile_to_one_batch() -> None:
    batches, release, batcher = _held_batcher()
    try:
        first = batcher.submit(0)
        wait_for(lambda: batches == [[0]], 10, "the first item taken alone")
        futures = [batcher.submit(i) for i in range(1, 10)]
        dropped = batcher.submit(10)
        assert dropped.cancel()  # cancelled before its batch started: never handled
        release.set()
        assert first.result(5) == 0
        assert [f.result(5) for f in futures if not isinstance(f.exception(5), ValueError)] == [
            2 * i for i in range(1, 10) if i != 7
        ]
        assert str(futures[6].exception(5)) == "7"  # an item's own error, for that item only
        assert batches == [[0], list(range(1, 10))]
    finally:
        release.set()
        batcher.stop()


def test_a_batcher_raises_a_failed_batch_in_each_of_its_callers() -> None:
    def handle(items: list[int]) -> list[int | BaseException]:
        raise RuntimeError(f"batch of {len(items)} failed")

    batcher: Batcher[int, int] = Batcher(handle, name="test-batcher")
    try:
        future = batcher.submit(1)
        with pytest.raises(RuntimeError, match="batch of 1 failed"):
            future.result(5)
    finally:
        batcher.stop()


async def test_a_batcher_answers_coroutines_batch_by_batch() -> None:
    batches, release, batcher = _held_batcher()
    try:
        first = asyncio.ensure_future(batcher.call(0))
        await asyncio.to_thread(wait_for, lambda: batches == [[0]], 10, "the first item alone")
        rest = [asyncio.ensure_future(batcher.call(i)) for i in range(1, 10)]
        dropped = asyncio.ensure_future(batcher.call(10))
        await asyncio.sleep(0)  # every call is queued
        dropped.cancel()  # cancelled before its batch started: never handled
        release.set()
        assert await first == 0
        outcomes = await asyncio.gather(*rest, return_exceptions=True)
        assert [str(o) if isinstance(o, ValueError) else o for o in outcomes] == [
            "7" if i == 7 else 2 * i for i in range(1, 10)
        ]
        assert batches == [[0], list(range(1, 10))]
    finally:
        release.set()
        batcher.stop()


def test_each_caller_of_a_failed_batch_gets_its_own_exception() -> None:
    """One exception object raised in every caller would gather all their frames in its
    traceback (and keep them alive): each gets a copy, of the same type and message."""
    started = threading.Event()

    def handle(items: list[int]) -> list[int | BaseException]:
        started.wait(5)
        raise ConnectionError(f"batch of {len(items)} failed")

    batcher: Batcher[int, int] = Batcher(handle, name="test-batcher")
    try:
        futures = [batcher.submit(i) for i in range(3)]
        started.set()
        errors = [f.exception(5) for f in futures]
    finally:
        batcher.stop()
    assert all(isinstance(e, ConnectionError) for e in errors)
    assert len({id(e) for e in errors}) == len(errors)
    assert {str(e) for e in errors} <= {f"batch of {n} failed" for n in (1, 2, 3)}
