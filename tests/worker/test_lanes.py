"""The `lanes` pool: an agent in flight is a greenlet on one of a few threads, not a thread.

The pool itself is driven here as Celery drives it (`apply_async` with the callbacks a
request gives), and a real worker process holds 2,000 agents in flight at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import uuid
from typing import Any

import userapp.worker  # noqa: F401  (declares meet_agent in this process too)

import agentexec as ax
from agentexec.config import get_settings
from agentexec.testing import wait_for
from agentexec.testing.plugin import StartWorker
from agentexec.worker import lanes
from agentexec.worker.lanes import AgentLanePool
from tests.apps import APP_DIR, APP_ENV


def _pool(limit: int, monkeypatch: Any, lane_count: int) -> AgentLanePool:
    monkeypatch.setenv("AGENTEXEC_LANES", str(lane_count))
    get_settings.cache_clear()
    try:
        pool = AgentLanePool(limit=limit)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    pool.start()
    return pool


def test_deliveries_wait_without_holding_their_lane(monkeypatch: Any) -> None:
    pool = _pool(500, monkeypatch, lane_count=4)
    gates = [concurrent.futures.Future[int]() for _ in range(500)]
    started: list[int] = []
    done: list[int] = []

    def delivery(index: int) -> int:
        started.append(index)
        value = lanes.wait(gates[index])
        return value * 2

    threads_before = threading.active_count()
    for index in range(500):
        pool.apply_async(delivery, (index,), callback=done.append)
    # Every delivery started and waits, on 4 threads: none of them holds one.
    wait_for(lambda: len(started) == 500, 10, "all 500 deliveries started")
    assert threading.active_count() == threads_before
    info = pool.info
    assert info["in-flight"] == 500 and info["lanes"] == 4
    # A waiting delivery keeps a slice of its lane's C stack: kilobytes, not a thread's stack.
    assert 0 < info["saved-stack-bytes"] / 500 < 64 * 1024, info
    for index, gate in enumerate(gates):
        gate.set_result(index)
    wait_for(lambda: len(done) == 500, 10, "all 500 deliveries ended")
    assert sorted(done) == [2 * index for index in range(500)]
    pool.stop()  # waits for nothing: all ended


def test_a_lock_held_across_a_wait_is_taken_by_another_delivery_of_the_same_lane(
    monkeypatch: Any,
) -> None:
    pool = _pool(10, monkeypatch, lane_count=1)
    lock = threading.Lock()
    gate = concurrent.futures.Future[None]()
    order: list[str] = []

    def holder() -> None:
        lanes.acquire(lock)
        order.append("holder has it")
        lanes.wait(gate)  # holds the lock while it waits; its lane serves the other
        lock.release()

    def second() -> None:
        lanes.acquire(lock)  # yields the lane until the holder releases
        order.append("second has it")
        lock.release()

    pool.apply_async(holder)
    pool.apply_async(second)
    wait_for(lambda: order == ["holder has it"], 5, "the holder took the lock")
    lanes.sleep(0.2)  # off a lane: a plain sleep
    assert order == ["holder has it"]
    gate.set_result(None)
    wait_for(lambda: order == ["holder has it", "second has it"], 5, "the second got it")
    pool.stop()


def test_warm_stop_waits_for_the_deliveries_in_flight(monkeypatch: Any) -> None:
    pool = _pool(10, monkeypatch, lane_count=2)
    gate = concurrent.futures.Future[str]()
    done: list[str] = []
    started = threading.Event()

    def delivery() -> str:
        started.set()
        return lanes.wait(gate)

    pool.apply_async(delivery, callback=done.append)
    started.wait(5)  # (a delivery not started when the pool stops is not started at all)
    stopping = threading.Thread(target=pool.stop)
    stopping.start()
    stopping.join(0.5)
    assert stopping.is_alive() and not done
    gate.set_result("finished")
    stopping.join(5)
    assert not stopping.is_alive() and done == ["finished"]


async def test_two_thousand_agents_in_flight_on_one_process_on_a_few_threads(
    agentexec_worker: StartWorker, sqlite_only: None
) -> None:
    env = {**APP_ENV, "AGENTEXEC_MAX_IN_FLIGHT": "2000"}
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=env, ready_timeout=60)
    group = uuid.uuid4().hex
    context = {"group": group, "size": 2000, "wait": 300}
    tasks = await asyncio.gather(*(ax.enqueue("meet_agent", context) for _ in range(2000)))
    results = await asyncio.gather(*(ax.get_result(t.agent_id, timeout=400) for t in tasks))
    assert len({r["pid"] for r in results}) == 1
    # Each run waited until all 2,000 had arrived: all were in flight at once in one process,
    assert all(r["met"] for r in results), sorted(r["arrived"] for r in results)[:5]
    # which had a few dozen threads, not one per agent.
    assert max(r["threads"] for r in results) < 100
    await ax.close_redis()


def test_a_stopping_pool_starts_no_delivery_still_waiting_for_its_lane(monkeypatch: Any) -> None:
    pool = _pool(10, monkeypatch, lane_count=1)
    busy, ran = threading.Event(), []
    pool.apply_async(busy.wait)  # holds the only lane, without yielding it
    pool.apply_async(lambda: ran.append("started"))  # waits for the lane
    stopping = threading.Thread(target=pool.stop)
    stopping.start()
    wait_for(lambda: pool._stopping, 5, "the pool is stopping")
    busy.set()
    stopping.join(5)
    # Not started: its message stays unacknowledged for the broker to deliver again.
    assert not stopping.is_alive() and ran == []


def test_an_idle_pool_hands_free_memory_back_once(monkeypatch: Any) -> None:
    assert lanes._malloc_trim is not None  # glibc, as on every Linux we ship for
    pool = _pool(10, monkeypatch, lane_count=2)
    trims: list[int] = []
    monkeypatch.setattr(lanes, "_malloc_trim", trims.append)
    lanes.sleep(1.2)  # the trims other tests' pools had due are done
    trims.clear()
    gate = concurrent.futures.Future[None]()
    for _ in range(5):
        pool.apply_async(lanes.wait, (gate,))
    pool.apply_async(lambda: None)  # ends at once, while the others still wait
    wait_for(lambda: pool.info["in-flight"] == 5, 5, "one delivery ended")
    lanes.sleep(1.5)
    assert trims == []  # never while deliveries are in flight
    gate.set_result(None)
    wait_for(lambda: trims == [0], 5, "a trim a second after the pool went idle")
    lanes.sleep(1.5)
    assert trims == [0]  # once per idle moment
    pool.stop()
