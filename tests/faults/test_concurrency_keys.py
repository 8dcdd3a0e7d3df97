"""Concurrency keys across worker processes: at most N runs per key RUNNING at once, parked
runs hold no slot, a dead worker's slots free within their lease, and one busy key does not
starve another."""

from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from datetime import datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.db.models import ActivityLog
from agentexec.runtime import get_runtime
from agentexec.testing import wait_for
from agentexec.testing.plugin import StartWorker
from tests.apps import APP_DIR
from tests.faults.test_delivery import (  # noqa: F401  (the fixtures of the fault tests)
    FAST,
    _publish_to_fault_redis,
    _report,
    _statuses,
    agentexec_database_url,
    agentexec_redis_url,
    fault_redis,
)

importlib.import_module("userapp.durable_tasks")


def _start(worker: StartWorker, env: dict[str, str] | None = None) -> None:
    worker("-I", "userapp.durable_tasks", "--concurrency=8", cwd=APP_DIR, env=env or FAST)


async def _enqueue(n: int, user: int, seconds: float) -> list[uuid.UUID]:
    context = {"user_id": user, "seconds": seconds}
    handles = [await ax.enqueue("keyed_agent", context) for _ in range(n)]
    return [h.agent_id for h in handles]


def _intervals(ids: list[uuid.UUID]) -> list[tuple[datetime, datetime]]:
    """Each run's running interval from the event log: its last start to its end."""
    with Session(get_runtime().engine) as session:
        rows = session.execute(
            select(ActivityLog.agent_id, ActivityLog.status, ActivityLog.message,
                   ActivityLog.created_at)
            .where(ActivityLog.agent_id.in_(ids))
            .order_by(ActivityLog.seq)
        ).all()  # fmt: skip
    started: dict[uuid.UUID, datetime] = {}
    found = []
    for agent_id, status, message, at in rows:
        if status is ax.Status.RUNNING and message.startswith("Task started"):
            started[agent_id] = at
        elif status is ax.Status.COMPLETE:
            found.append((started[agent_id], at))
    return found


def _most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    most = running = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


@pytest.mark.timeout(300)
async def test_three_workers_never_run_more_than_two_of_a_key(
    agentexec_worker: StartWorker,
) -> None:
    for _ in range(3):
        _start(agentexec_worker)
    ids = await _enqueue(60, user=42, seconds=0.3)
    results = await asyncio.gather(*(ax.get_result(i, timeout=120) for i in ids))
    assert all(r["user_id"] == 42 for r in results)
    assert len({r["pid"] for r in results}) > 1  # served by more than one worker
    audit = await asyncio.to_thread(_report, "concurrency-key", ids)
    assert audit.complete == 60
    intervals = _intervals(ids)
    assert len(intervals) == 60
    most = _most_at_once(intervals)
    print(f"concurrency-key: 60 runs, 3 workers, most RUNNING at once: {most}")
    assert most <= 2
    await ax.close_redis()


@pytest.mark.timeout(300)
async def test_a_dead_workers_slots_free_within_the_lease(agentexec_worker: StartWorker) -> None:
    first = agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=FAST)
    holders = await _enqueue(2, user=7, seconds=60)
    await asyncio.to_thread(
        wait_for, lambda: all(s is ax.Status.RUNNING for s in _statuses(holders).values()),
        30, "two holders RUNNING",
    )  # fmt: skip
    waiting = await _enqueue(1, user=7, seconds=0.1)
    await asyncio.sleep(1)
    assert _statuses(waiting)[waiting[0]] is ax.Status.QUEUED  # parked: both slots are held
    first.kill()
    killed = time.monotonic()
    _start(agentexec_worker)
    await ax.get_result(waiting[0], timeout=60)
    freed = time.monotonic() - killed
    print(f"concurrency-key: a dead worker's slot went to a parked run {freed:.1f}s later")
    # The lease (3 heartbeats of 1 s) and a reaper sweep (every 2 s), with room for the
    # worker's start on a busy machine.
    assert freed < 30
    await ax.close_redis()


@pytest.mark.timeout(300)
async def test_a_busy_key_does_not_starve_another(agentexec_worker: StartWorker) -> None:
    _start(agentexec_worker)
    await _enqueue(200, user=1, seconds=2.0)
    enqueued = time.time()
    quiet = await _enqueue(5, user=2, seconds=0.1)
    results = await asyncio.gather(*(ax.get_result(i, timeout=60) for i in quiet))
    assert all(r["user_id"] == 2 for r in results)
    starts = [a for a, _ in _intervals(quiet)]
    latest = max(s.timestamp() for s in starts) - enqueued
    print(f"concurrency-key: the quiet key's 5 runs all started within {latest:.2f}s, behind "
          f"200 runs of a busy key (one takes 2 s)")  # fmt: skip
    assert latest < 2.0
    await ax.close_redis()
