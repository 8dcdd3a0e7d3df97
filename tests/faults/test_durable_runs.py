"""Durable runs under faults: a worker SIGKILLed or stopped mid-run, a Redis restarted, and
approvals that outlive their worker. The model is a scripted OpenAI server over real HTTP
that counts requests per run; the tools count their executions in Redis.

Each prints `fault=<name> ... repeated_calls=N rerun_tools=N`: model calls made again, and
tools that ran more than once.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import uuid
from typing import Any

import pytest
import redis

import agentexec as ax
from agentexec.config import get_settings
from agentexec.testing import wait_for
from agentexec.testing.openai_server import ScriptedOpenAIServer
from agentexec.testing.plugin import StartWorker
from tests.apps import APP_DIR
from tests.durable_script import DurableScript
from tests.faults.services import PrivateRedis
from tests.faults.test_delivery import (  # noqa: F401  (the fixtures of the fault tests)
    FAST,
    _logs,
    _publish_to_fault_redis,
    _report,
    _statuses,
    agentexec_database_url,
    agentexec_redis_url,
    fault_redis,
)

importlib.import_module("userapp.durable_tasks")

STEPS = 4
#: Seconds per model call, and per tool call: a worker killed at a random moment is in the
#: middle of one or the other.
MODEL_DELAY = 0.8
TOOL_SECONDS = 0.4


def _env(server: ScriptedOpenAIServer, **extra: str) -> dict[str, str]:
    return {**FAST, **server.env(), "OPENAI_AGENTS_DISABLE_TRACING": "1", **extra}


def _counts(pattern: str, ids: list[uuid.UUID], n: int | None = None) -> list[int]:
    client = redis.Redis.from_url(get_settings().redis_url)
    prefix = get_settings().queue_prefix
    try:
        keys = [f"{prefix}.{pattern.format(id=i, n=n)}" for i in ids]
        return [int(c or 0) for c in client.mget(keys)]  # type: ignore[union-attr]
    finally:
        client.close()


def _tools_done(ids: list[uuid.UUID], at_least: int) -> bool:
    """Whether every run has finished `at_least` tool turns."""
    return all(c >= 1 for c in _counts("tool.{id}.{n}", ids, at_least))


async def _steps_runs(n: int) -> list[uuid.UUID]:
    context = {"mode": "steps", "steps": STEPS, "tool_seconds": TOOL_SECONDS}
    handles = await asyncio.gather(*(ax.enqueue("durable_agent", context) for _ in range(n)))
    return [h.agent_id for h in handles]


def _keys(agent_id: uuid.UUID, n: int) -> list[bytes]:
    client = redis.Redis.from_url(get_settings().redis_url)
    try:
        key = f"{get_settings().queue_prefix}.keys.tool.{agent_id}.{n}"
        return list(client.lrange(key, 0, -1))  # type: ignore[arg-type]
    finally:
        client.close()


async def _check_resumed(fault: str, script: DurableScript, ids: list[uuid.UUID]) -> None:
    """Every run completes. Per run, the crash interrupted one thing: either a model call,
    made again, or the tools of a turn whose model response had arrived, run again from
    the replayed response with the same call ids (so the same idempotency keys). No tool of
    a completed turn runs again."""
    results = await asyncio.gather(*(ax.get_result(i, timeout=120) for i in ids))
    assert all(r == {"final": f"done after {STEPS} steps"} for r in results), results
    audit = await asyncio.to_thread(_report, fault, ids, 60)
    assert audit.complete == len(ids)
    repeated = {i: script.calls[str(i)] - (STEPS + 1) for i in ids}
    per_step = [_counts("tool.{id}.{n}", ids, n) for n in range(1, STEPS + 1)]
    rerun = {i: [per_step[n][k] for n in range(STEPS)] for k, i in enumerate(ids)}
    print(f"fault={fault} runs={len(ids)} repeated_calls={sum(repeated.values())} "
          f"rerun_tools={sum(c - 1 for cs in rerun.values() for c in cs)}")  # fmt: skip
    for agent_id in ids:
        counts = rerun[agent_id]
        assert all(c >= 1 for c in counts), (agent_id, counts)
        assert repeated[agent_id] >= 0, (agent_id, repeated[agent_id])
        assert repeated[agent_id] + sum(c - 1 for c in counts) <= 1, (agent_id, counts)
        for n, count in enumerate(counts, 1):
            if count > 1:  # run again from the replayed response: the same call id
                assert len(set(_keys(agent_id, n))) == 1, _keys(agent_id, n)
    resumed = [i for i in ids if any(m.startswith("Resumed at turn") for _, m in _logs(i))]
    assert resumed, "no run resumed from a checkpoint"


@pytest.mark.timeout(300)
async def test_sigkill_mid_run_resumes_from_the_last_turn(agentexec_worker: StartWorker) -> None:
    script = DurableScript(delay=MODEL_DELAY)
    with ScriptedOpenAIServer(script) as server:
        env = _env(server)
        first = agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=env)
        ids = await _steps_runs(30)
        await asyncio.to_thread(wait_for, lambda: _tools_done(ids, 2), 60, "2 turns each")
        first.kill()
        agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=env)
        await _check_resumed("durable-sigkill", script, ids)
    await ax.close_redis()


@pytest.mark.timeout(300)
async def test_sigterm_requeue_resumes_from_the_last_turn(agentexec_worker: StartWorker) -> None:
    script = DurableScript(delay=MODEL_DELAY)
    with ScriptedOpenAIServer(script) as server:
        env = _env(server, AGENTEXEC_SHUTDOWN_TIMEOUT="1", AGENTEXEC_VISIBILITY_TIMEOUT="3600")
        first = agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=env)
        ids = await _steps_runs(30)
        await asyncio.to_thread(wait_for, lambda: _tools_done(ids, 2), 60, "2 turns each")
        assert first.process is not None
        first.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(first.process.wait, 30)
        agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=env)
        await _check_resumed("durable-sigterm", script, ids)
        requeued = [i for i in ids if ("QUEUED", "Requeued at shutdown") in _logs(i)]
        assert requeued
    await ax.close_redis()


@pytest.mark.timeout(300)
async def test_redis_restart_with_aof_keeps_the_checkpoints(
    agentexec_worker: StartWorker,
    fault_redis: PrivateRedis,  # noqa: F811 (the fixture, imported above)
) -> None:
    script = DurableScript(delay=MODEL_DELAY)
    with ScriptedOpenAIServer(script) as server:
        first = agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=_env(server))
        ids = await _steps_runs(30)
        await asyncio.to_thread(wait_for, lambda: _tools_done(ids, 2), 60, "2 turns each")
        first.kill()  # the runs are delivered again only after Redis is back
        await asyncio.to_thread(fault_redis.restart)
        agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=_env(server))
        await _check_resumed("durable-redis-restart-aof", script, ids)
    await ax.close_redis()


def _all_waiting(ids: list[uuid.UUID]) -> bool:
    return all(s is ax.Status.WAITING for s in _statuses(ids).values()) and len(
        _statuses(ids)
    ) == len(ids)


@pytest.mark.timeout(300)
async def test_approvals_outlive_their_worker_and_hold_no_slot(
    agentexec_worker: StartWorker,
) -> None:
    script = DurableScript()
    with ScriptedOpenAIServer(script) as server:
        env = _env(server)
        first = agentexec_worker(
            "-I", "userapp.durable_tasks", "--concurrency=2", cwd=APP_DIR, env=env
        )
        approval = {"mode": "approval"}
        handles = await asyncio.gather(*(ax.enqueue("durable_agent", approval) for _ in range(13)))
        waiting = [h.agent_id for h in handles]
        await asyncio.to_thread(wait_for, lambda: _all_waiting(waiting), 60, "13 WAITING")
        # Two slots, thirteen runs waiting: plain runs still get the slots.
        plain = await asyncio.gather(
            *(ax.enqueue("durable_agent", {"mode": "plain"}) for _ in range(6))
        )
        done = await asyncio.gather(*(ax.get_result(p.agent_id, timeout=60) for p in plain))
        assert all(r == {"final": "done after 0 steps"} for r in done)
        assert _all_waiting(waiting)

        first.kill()
        agentexec_worker("-I", "userapp.durable_tasks", "--concurrency=2", cwd=APP_DIR, env=env)
        approved, rejected, [canceled] = waiting[:6], waiting[6:12], waiting[12:]
        decisions: list[Any] = [ax.approve(i) for i in approved]
        decisions += [ax.reject(i, message=f"no email from {i}") for i in rejected]
        assert all(await asyncio.gather(*decisions))
        assert not await ax.approve(approved[0])  # decided already
        started = asyncio.get_running_loop().time()
        assert await ax.cancel(canceled, "nobody is around")
        with pytest.raises(ax.TaskCanceledError):
            await ax.get_result(canceled, timeout=5)
        assert asyncio.get_running_loop().time() - started < 2

        results = await asyncio.gather(*(ax.get_result(i, timeout=60) for i in waiting[:12]))
    assert results[:6] == [{"final": "final: sent to boss@example.com"}] * 6
    assert results[6:] == [{"final": f"final: no email from {i}"} for i in rejected]
    assert _counts("sent.{id}", approved) == [1] * 6
    assert _counts("sent.{id}", rejected) == [0] * 6
    assert _counts("sent.{id}", [canceled]) == [0]
    statuses = _statuses(waiting)
    assert [statuses[i] for i in waiting[:12]] == [ax.Status.COMPLETE] * 12
    assert statuses[canceled] is ax.Status.CANCELED
    await ax.close_redis()
