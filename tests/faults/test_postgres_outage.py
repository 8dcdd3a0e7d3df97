"""The activity database goes away mid-run: runs go on, and SQL catches up with nothing lost."""

from __future__ import annotations

import asyncio
import time
import uuid

import agentexec as ax
from agentexec.runtime import get_runtime
from agentexec.testing import wait_for
from agentexec.testing.plugin import StartWorker
from tests.apps import APP_DIR, APP_ENV
from tests.faults.audit import Audit, try_audit
from tests.faults.services import PrivatePostgres

AGENTS = 50
OUTAGE = 20.0
#: Each agent reports 4 times over 4 seconds.
PACED = {"seconds": 4.0, "reports": 4}


async def _enqueue_and_wait_running(n: int) -> list[uuid.UUID]:
    handles = await asyncio.gather(*(ax.enqueue("paced_agent", PACED) for _ in range(n)))
    ids = [h.agent_id for h in handles]
    engine = get_runtime().engine

    def some_running() -> bool:
        found = try_audit(engine, get_runtime().events.url, get_runtime().events.key, ids)
        return found is not None and found.stuck == n and _running(engine, ids) >= n // 2

    await asyncio.to_thread(wait_for, some_running, 30, "agents running")
    return ids


def _running(engine: object, ids: list[uuid.UUID]) -> int:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from agentexec.db.models import Activity
    from agentexec.states import Status

    with Session(engine) as session:  # type: ignore[call-overload]
        stmt = select(func.count()).where(
            Activity.agent_id.in_(ids), Activity.status == Status.RUNNING
        )
        return int(session.scalar(stmt) or 0)


def _caught_up(ids: list[uuid.UUID], within: float) -> Audit:
    runtime = get_runtime()
    state: dict[str, Audit] = {}

    def done() -> bool:
        found = try_audit(runtime.engine, runtime.events.url, runtime.events.key, ids)
        if found is None:
            return False
        state["audit"] = found
        return found.complete == len(ids) and found.lost == 0 and not found.disordered

    try:
        wait_for(done, within, "the projection to catch up", interval=0.25)
    except TimeoutError:
        pass
    return state["audit"]


async def test_postgres_outage_loses_nothing(
    private_postgres: PrivatePostgres, agentexec_worker: StartWorker
) -> None:
    get_runtime().stop_projector()  # only the worker projects, as in production
    worker = agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)
    ids = await _enqueue_and_wait_running(AGENTS)

    private_postgres.stop()
    stopped = time.monotonic()
    results = await asyncio.gather(*(ax.get_result(i, timeout=60) for i in ids))
    assert all(r["reports"] == 4 for r in results)  # every run finished while SQL was down
    await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped)))  # the outage itself
    private_postgres.restart()

    found = await asyncio.to_thread(_caught_up, ids, 30.0)
    print("\n" + found.line("postgres-outage"))
    assert (found.complete, found.lost, found.stuck) == (AGENTS, 0, 0)
    assert not found.disordered
    log = worker.log()
    assert log.count("activity database unreachable") == 1, log[-3000:]
    assert log.count("activity projection caught up") == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


async def test_worker_killed_while_postgres_is_down_loses_nothing(
    private_postgres: PrivatePostgres, agentexec_worker: StartWorker
) -> None:
    get_runtime().stop_projector()
    env = {
        **APP_ENV,
        # The killed worker's runs come back quickly, and so do its unapplied events.
        "AGENTEXEC_VISIBILITY_TIMEOUT": "8",
        "AGENTEXEC_RESTORE_INTERVAL": "1",
        "AGENTEXEC_PROJECTOR_CLAIM_IDLE": "3",
    }
    first = agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=env)
    ids = await _enqueue_and_wait_running(AGENTS)

    private_postgres.stop()
    stopped = time.monotonic()
    await asyncio.sleep(1.0)  # the agents report into the log while SQL is down
    first.kill()
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=env)
    results = await asyncio.gather(*(ax.get_result(i, timeout=90) for i in ids))
    assert all(r["reports"] == 4 for r in results)
    await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped)))
    private_postgres.restart()

    found = await asyncio.to_thread(_caught_up, ids, 30.0)
    print("\n" + found.line("postgres-outage-worker-killed"))
    assert (found.complete, found.lost, found.stuck) == (AGENTS, 0, 0)
    assert not found.disordered
