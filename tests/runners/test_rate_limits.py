"""Shared rate limits over real HTTP: requests per minute per model across agents, and a
task's global `rate_limit`."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
from datetime import datetime
from typing import Any

import pytest
import userapp.durable_tasks  # noqa: F401  (registers the durable agents here too)
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.config import get_settings
from agentexec.tasks.queues import Priority, queue_name
from agentexec.testing.openai_script import Reply
from agentexec.testing.openai_server import ScriptedOpenAIServer
from agentexec.testing.plugin import StartWorker
from tests.apps import APP_DIR, APP_ENV
from tests.durable_script import DurableScript, returned_usage

pytestmark = pytest.mark.usefixtures("sqlite_only")


def _busiest_minute(times: list[float]) -> int:
    """The most requests in any 60 s window."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(ordered):
        while ordered[start] <= at - 60:
            start += 1
        most = max(most, end - start + 1)
    return most


@pytest.mark.timeout(420)
async def test_two_hundred_agents_stay_under_sixty_requests_a_minute(
    agentexec_worker: StartWorker,
) -> None:
    script = DurableScript()
    limits = json.dumps({"gpt-4o": {"requests_per_minute": 60}})
    with ScriptedOpenAIServer(script) as server:
        env = {**APP_ENV, **server.env(), "OPENAI_AGENTS_DISABLE_TRACING": "1",
               "AGENTEXEC_RATE_LIMITS": limits}  # fmt: skip
        agentexec_worker("-I", "userapp.durable_tasks", "--concurrency=200", cwd=APP_DIR, env=env)
        runs = await asyncio.gather(
            *(ax.enqueue("durable_agent", {"mode": "plain"}) for _ in range(200))
        )
        results = await asyncio.gather(*(ax.get_result(r.agent_id, timeout=400) for r in runs))
    assert all(r == {"final": "done after 0 steps"} for r in results)  # no run failed
    busiest = _busiest_minute(script.times)
    span = max(script.times) - min(script.times)
    print(f"rate-limit: 200 agents, 60/min allowed: busiest minute {busiest} requests, "
          f"all {len(script.times)} in {span:.0f}s")  # fmt: skip
    assert len(script.times) == 200
    assert busiest <= 60
    await ax.close_redis()


def _starts(session: Session, ids: list[uuid.UUID]) -> list[datetime]:
    session.expire_all()
    found = []
    for agent_id in ids:
        detail = ax.activity.detail(session, agent_id)
        assert detail is not None
        found += [log.created_at for log in detail.logs if log.message.startswith("Task started")]
    return sorted(found)


async def test_a_tasks_rate_limit_holds_across_workers(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    for _ in range(2):
        agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=APP_ENV)
    runs = [await ax.enqueue("rated_agent", {"user_id": 1, "seconds": 0.1}) for _ in range(5)]
    results = await asyncio.gather(*(ax.get_result(r.agent_id, timeout=60) for r in runs))
    assert all(r["user_id"] == 1 for r in results)
    starts = _starts(agentexec_session, [r.agent_id for r in runs])
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    print(f"rate-limit: 5 runs of a 30/m task on 2 workers started {gaps} s apart")
    assert len(starts) == 5 and min(gaps) >= 1.8  # one start every 2 s, whichever worker
    logs = [m.message for r in runs for m in ax.activity.detail(agentexec_session, r.agent_id).logs]
    assert any(m.startswith("Rate limited (30/m): starts in") for m in logs)
    await ax.close_redis()


def _two_workers(agentexec_worker: StartWorker, env: dict[str, str]) -> None:
    """One worker that serves only the LOW queue, one only HIGH: a LOW run and a HIGH run
    always run on different worker processes."""
    settings = get_settings()
    for priority in (Priority.LOW, Priority.HIGH):
        queue = queue_name(priority, settings)
        agentexec_worker("-I", "userapp.durable_tasks", "-Q", queue, cwd=APP_DIR, env=env)


async def test_tokens_per_minute_hold_across_workers(agentexec_worker: StartWorker) -> None:
    """60 tokens a minute; a plain call uses 73 (20 in, 53 out): the call after it, on the
    other worker, waits until at most a minute's worth is outstanding, about 13 s."""
    script = DurableScript()
    limits = json.dumps({"gpt-4o": {"tokens_per_minute": 60}})
    with ScriptedOpenAIServer(script) as server:
        env = {**APP_ENV, **server.env(), "OPENAI_AGENTS_DISABLE_TRACING": "1",
               "AGENTEXEC_RATE_LIMITS": limits}  # fmt: skip
        _two_workers(agentexec_worker, env)
        first = await ax.enqueue("durable_agent", {"mode": "plain"})
        assert await ax.get_result(first.agent_id, timeout=60) == {"final": "done after 0 steps"}
        second = await ax.enqueue("durable_agent", {"mode": "plain"}, priority=Priority.HIGH)
        assert await ax.get_result(second.agent_id, timeout=90) == {"final": "done after 0 steps"}
        used = returned_usage(server, first.agent_id)
    times = [script.first[str(run.agent_id)] for run in (first, second)]
    tokens = used[0]["input_tokens"] + used[0]["output_tokens"]
    owed = tokens * 60 / 60 - 60  # seconds past a minute's worth, at the first call's end
    gap = times[1] - times[0]
    print(f"tokens-per-minute: {tokens} tokens at 60/min; the next call waited {gap:.1f}s")
    assert owed > 5
    assert gap >= owed - 1.0
    await ax.close_redis()


class _RefuseFirst:
    """A model that refuses the first run's calls with 429 (`Retry-After: 4`) three times
    (the `openai` client's own two retries included), then answers everything."""

    def __init__(self, script: DurableScript) -> None:
        self.script = script
        self.refused: list[float] = []
        self.done = threading.Event()

    def __call__(self, request: dict[str, Any]) -> Reply:
        if len(self.refused) < 3:
            self.refused.append(time.time())
            if len(self.refused) == 3:
                self.done.set()
            return Reply.failure(429, "Rate limit reached", error_type="rate_limit_exceeded",
                                 retry_after=4 if len(self.refused) == 3 else 0.1)  # fmt: skip
        return self.script(request)


async def test_a_providers_429_slows_the_other_worker_too(agentexec_worker: StartWorker) -> None:
    script = DurableScript()
    model = _RefuseFirst(script)
    limits = json.dumps({"gpt-4o": {"requests_per_minute": 6000}})
    with ScriptedOpenAIServer(model) as server:
        env = {**APP_ENV, **server.env(), "OPENAI_AGENTS_DISABLE_TRACING": "1",
               "AGENTEXEC_RATE_LIMITS": limits}  # fmt: skip
        _two_workers(agentexec_worker, env)
        refused = await ax.enqueue("durable_agent", {"mode": "plain"})
        assert await asyncio.to_thread(model.done.wait, 60)
        await asyncio.sleep(0.5)  # the refused run's worker holds the model's buckets
        other = await ax.enqueue("durable_agent", {"mode": "plain"}, priority=Priority.HIGH)
        assert await ax.get_result(other.agent_id, timeout=60) == {"final": "done after 0 steps"}
        # The refused run retries (a transient model error) and completes.
        assert await ax.get_result(refused.agent_id, timeout=90) == {"final": "done after 0 steps"}
    held = script.first[str(other.agent_id)] - model.refused[-1]
    print(f"429 with Retry-After 4s on one worker: the other worker's call waited {held:.1f}s")
    assert held >= 3.0
    await ax.close_redis()
