"""Durable runs on real workers, over real HTTP to a scripted model: turn checkpoints,
approvals that free the slot, resume."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
import userapp.durable_tasks  # noqa: F401  (registers the durable agents here too)
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.config import get_settings
from agentexec.testing import wait_for
from agentexec.testing.openai_server import ScriptedOpenAIServer
from agentexec.testing.plugin import StartWorker
from tests.apps import APP_DIR, APP_ENV
from tests.durable_script import DurableScript

ENV = {**APP_ENV, "OPENAI_AGENTS_DISABLE_TRACING": "1", "AGENTEXEC_REAPER_INTERVAL": "1"}


def _detail(session: Session, agent_id: uuid.UUID) -> ax.activity.ActivityDetail:
    session.expire_all()
    found = ax.activity.detail(session, agent_id)
    assert found is not None
    return found


def _status_is(session: Session, agent_id: uuid.UUID, status: ax.Status) -> bool:
    session.expire_all()
    found = ax.activity.detail(session, agent_id)
    return found is not None and found.status is status


def _counter(key: str) -> int:
    client = redis.Redis.from_url(get_settings().redis_url)
    try:
        return int(client.get(f"{get_settings().queue_prefix}.{key}") or 0)
    finally:
        client.close()


def _checkpoint_exists(agent_id: uuid.UUID) -> bool:
    client = redis.Redis.from_url(get_settings().redis_url)
    try:
        return bool(client.exists(get_settings().keys.checkpoint(str(agent_id))))
    finally:
        client.close()


async def _waiting(session: Session, agent_id: uuid.UUID) -> None:
    await asyncio.to_thread(
        wait_for,
        lambda: _status_is(session, agent_id, ax.Status.WAITING),
        30,
        f"run {agent_id} WAITING",
        interval=0.1,
    )


async def test_approve_and_reject_free_the_slot_and_continue(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    script = DurableScript()
    with ScriptedOpenAIServer(script) as server:
        env = {**ENV, **server.env()}
        agentexec_worker("-I", "userapp.durable_tasks", "--concurrency=1", cwd=APP_DIR, env=env)
        approved = await ax.enqueue("durable_agent", {"mode": "approval"}, owner="acme")
        rejected = await ax.enqueue("durable_agent", {"mode": "approval"})
        for run in (approved, rejected):
            await _waiting(agentexec_session, run.agent_id)
        # One slot, two runs waiting: a plain run still gets the slot.
        plain = await ax.enqueue("durable_agent", {"mode": "plain"})
        assert (await ax.get_result(plain.agent_id, timeout=30))["final"] == "done after 0 steps"

        detail = _detail(agentexec_session, approved.agent_id)
        [asked] = detail.approvals
        assert (asked.tool, asked.pending) == ("send_email", True)
        assert '"to":"boss@example.com"' in asked.arguments.replace(" ", "")
        with pytest.raises(asyncio.TimeoutError):
            await ax.get_result(approved.agent_id, timeout=0.5)  # waits like any unfinished run
        with pytest.raises(ax.UnknownAgentError):
            await ax.approve(approved.agent_id, owner="someone-else")
        with pytest.raises(ax.ApprovalError, match="no pending call"):
            await ax.approve(approved.agent_id, "call_nope")
        with pytest.raises(ax.UnknownAgentError):
            await ax.approve(uuid.uuid4())

        assert await ax.approve(approved.agent_id, asked.call_id, owner="acme")
        assert not await ax.approve(approved.agent_id, asked.call_id)  # decided already
        assert await ax.reject(rejected.agent_id, message="Not to the boss, please.")

        result = await ax.get_result(approved.agent_id, timeout=30)
        assert result["final"] == "final: sent to boss@example.com"
        result = await ax.get_result(rejected.agent_id, timeout=30)
        assert result["final"] == "final: Not to the boss, please."
    assert _counter(f"sent.{approved.agent_id}") == 1
    assert _counter(f"sent.{rejected.agent_id}") == 0
    decided = _detail(agentexec_session, approved.agent_id)
    assert decided.status is ax.Status.COMPLETE
    [asked] = decided.approvals
    assert (asked.approved, asked.decided_by) == (True, "acme")
    messages = [log.message for log in decided.logs]
    assert "Waiting for approval: send_email" in messages
    assert any(m.startswith("Approved send_email") and "by acme" in m for m in messages)
    assert "Queued again to resume" in messages
    assert any(m.startswith("Resumed at turn") for m in messages)
    [refused] = _detail(agentexec_session, rejected.agent_id).approvals
    assert (refused.approved, refused.decision_message) == (False, "Not to the boss, please.")
    assert not _checkpoint_exists(approved.agent_id)
    await ax.close_redis()


async def test_cancel_and_expiry_of_a_waiting_run(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    with ScriptedOpenAIServer(DurableScript()) as server:
        env = {**ENV, **server.env()}
        agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=env)
        canceled = await ax.enqueue("durable_agent", {"mode": "approval"})
        hurried = await ax.enqueue("durable_agent_hurried", {"mode": "approval"})
        await _waiting(agentexec_session, canceled.agent_id)
        started = asyncio.get_running_loop().time()
        assert await ax.cancel(canceled.agent_id, "Nobody is around")
        with pytest.raises(ax.TaskCanceledError, match="Nobody is around"):
            await ax.get_result(canceled.agent_id, timeout=5)
        assert asyncio.get_running_loop().time() - started < 2
        assert not await ax.approve(canceled.agent_id)  # it waits for nothing any more
        with pytest.raises(ax.TaskFailedError, match="approval expired after 2s"):
            await ax.get_result(hurried.agent_id, timeout=30)
    assert _detail(agentexec_session, canceled.agent_id).status is ax.Status.CANCELED
    assert _detail(agentexec_session, hurried.agent_id).status is ax.Status.ERROR
    assert _counter(f"sent.{canceled.agent_id}") == 0
    await ax.close_redis()


async def test_steps_complete_with_checkpoints_and_resume_after_the_turn_limit(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    script = DurableScript()
    with ScriptedOpenAIServer(script) as server:
        env = {**ENV, **server.env()}
        agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=env)
        whole = await ax.enqueue("durable_agent", {"mode": "steps", "steps": 4})
        short = await ax.enqueue("durable_agent", {"mode": "steps", "steps": 4, "max_turns": 3})
        assert (await ax.get_result(whole.agent_id, timeout=30))["final"] == "done after 4 steps"
        with pytest.raises(ax.TaskFailedError, match="limit of 3 turns"):
            await ax.get_result(short.agent_id, timeout=30)
        assert not _checkpoint_exists(whole.agent_id)
        assert _checkpoint_exists(short.agent_id)  # kept for resume
        with pytest.raises(ax.NotResumableError, match="COMPLETE"):
            await ax.resume(whole.agent_id)
        assert await ax.resume(short.agent_id, max_turns=5)
        result = await ax.get_result(short.agent_id, timeout=30)
        assert result["final"] == "done after 4 steps"
    # Three turns, then two more from the checkpoint: no model call and no tool twice.
    assert script.calls[str(short.agent_id)] == 5
    assert [_counter(f"tool.{short.agent_id}.{n}") for n in range(1, 5)] == [1, 1, 1, 1]
    logs = [log.message for log in _detail(agentexec_session, short.agent_id).logs]
    assert "Resumed at turn 4 (delivery 1)" in logs
    assert _detail(agentexec_session, short.agent_id).status is ax.Status.COMPLETE
    await ax.close_redis()


async def test_size_cap_opt_out_and_a_custom_runner(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    with ScriptedOpenAIServer(DurableScript()) as server:
        env = {**ENV, **server.env(), "AGENTEXEC_CHECKPOINT_MAX_BYTES": "65536"}
        agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=env)
        big = await ax.enqueue("durable_agent", {"steps": 3, "output_bytes": 40_000})
        off = await ax.enqueue("durable_agent_off", {"steps": 4, "max_turns": 2})
        counting = await ax.enqueue("counting_agent", {})
        with pytest.raises(ax.TaskFailedError, match=r"CheckpointTooLargeError: .*65,536"):
            await ax.get_result(big.agent_id, timeout=30)
        with pytest.raises(ax.TaskFailedError, match="limit of 2 turns"):
            await ax.get_result(off.agent_id, timeout=30)
        assert not _checkpoint_exists(off.agent_id)  # opted out: nothing stored
        with pytest.raises(ax.NotResumableError, match="no checkpoint"):
            await ax.resume(off.agent_id)
        # The custom runner's retry resumes after the two steps its first attempt saved.
        result = await ax.get_result(counting.agent_id, timeout=30)
        assert result == {"done": 3, "resumed_from": 2}
    assert not _checkpoint_exists(counting.agent_id)
    await ax.close_redis()
