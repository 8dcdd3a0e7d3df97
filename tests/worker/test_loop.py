"""The shared event loop: many coroutines in flight, cancellable by key, one loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from agentexec.worker.loop import EventLoopThread


def test_runs_coroutines_from_many_threads_on_one_loop() -> None:
    runner = EventLoopThread()
    loops: list[asyncio.AbstractEventLoop] = []
    started = threading.Barrier(20)

    async def agent() -> int:
        loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0.01)
        return 7

    def slot() -> int:
        started.wait()
        return runner.run(agent())

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: slot(), range(20)))
    runner.stop()
    assert results == [7] * 20
    assert len(set(map(id, loops))) == 1


def test_cancel_by_key() -> None:
    runner = EventLoopThread()
    entered = threading.Event()

    async def forever() -> None:
        entered.set()
        await asyncio.Event().wait()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(runner.run, forever(), key="a")
        try:
            assert entered.wait(10)
            assert runner.is_running("a")
            assert runner.cancel("a")
            with pytest.raises(concurrent.futures.CancelledError):
                future.result(10)
        finally:
            runner.stop()  # never leave the pool thread parked on a coroutine
    assert not runner.cancel("a")


def test_exceptions_reach_the_caller() -> None:
    runner = EventLoopThread()

    async def boom() -> None:
        raise ValueError("model said no")

    with pytest.raises(ValueError, match="model said no"):
        runner.run(boom())
    runner.stop()
