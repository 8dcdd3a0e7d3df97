"""Agents on real worker processes, driven by the real SDK: scripted models and real HTTP."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest
import userapp.agent_tasks  # noqa: F401  (registers scripted_agent here too)
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.testing.openai_server import ScriptedOpenAIServer
from agentexec.testing.plugin import StartWorker
from tasks.research import ResearchContext
from tests.apps import APP_DIR
from tests.apps import APP_ENV as USER_APP_ENV

ROOT = Path(__file__).parent.parent.parent
APP_ENV = {**USER_APP_ENV, "OPENAI_AGENTS_DISABLE_TRACING": "1"}


def _logs(session: Session, agent_id: uuid.UUID) -> list[tuple[str, str, int | None]]:
    session.expire_all()
    activity = ax.activity.detail(session, agent_id)
    assert activity is not None
    return [(log.status.value, log.message, log.completion_percentage) for log in activity.logs]


async def test_guide_research_agent_end_to_end(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    env = {k: "" for k in ("OPENAI_API_KEY",) if k in os.environ}
    agentexec_worker(cwd=ROOT, env={**env, "RESEARCH_SCRIPTED_LATENCY": "0.05"})
    task = await ax.enqueue("research_company", ResearchContext(company="Acme"))
    result = await ax.get_result(task.agent_id, timeout=60)
    assert result["company"] == "Acme"
    assert result["findings"].startswith("Acme: offline summary covering general info")
    logs = _logs(agentexec_session, task.agent_id)
    assert logs[0] == ("QUEUED", "Task queued", None)
    assert logs[1] == ("RUNNING", "Task started", 0)
    assert ("RUNNING", "Gathering public information about Acme", 20) in logs
    assert logs[-1] == ("COMPLETE", "Task completed", 100)
    await ax.close_redis()


async def test_endless_agent_with_and_without_recovery(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    agentexec_worker("-I", "userapp.agent_tasks", cwd=APP_DIR, env=APP_ENV)
    context = {"scenario": "endless", "max_turns": 3}
    recovered = await ax.enqueue("scripted_agent", {**context, "recovery": True})
    failed = await ax.enqueue("scripted_agent", context)
    result = await ax.get_result(recovered.agent_id, timeout=30)
    assert result["final"] == "wrapped up with partial findings"
    assert _logs(agentexec_session, recovered.agent_id)[-1][0] == "COMPLETE"
    with pytest.raises(ax.TaskFailedError, match=r"MaxTurnsError: .*limit of 3 turns"):
        await ax.get_result(failed.agent_id, timeout=30)
    status, message, _ = _logs(agentexec_session, failed.agent_id)[-1]
    assert status == "ERROR" and "limit of 3 turns" in message
    await ax.close_redis()


async def test_tool_and_model_errors_end_error_and_the_worker_keeps_serving(
    agentexec_worker: StartWorker, agentexec_session: Session, sqlite_only: None
) -> None:
    agentexec_worker("-I", "userapp.agent_tasks", cwd=APP_DIR, env=APP_ENV)
    tool = await ax.enqueue("scripted_agent", {"scenario": "tool_raises"})
    model = await ax.enqueue("scripted_agent", {"scenario": "model_raises"})
    with pytest.raises(ax.TaskFailedError, match="search backend refused 'acme'"):
        await ax.get_result(tool.agent_id, timeout=30)
    with pytest.raises(ax.TaskFailedError, match="ConnectionError: provider down"):
        await ax.get_result(model.agent_id, timeout=30)
    assert "search backend refused" in _logs(agentexec_session, tool.agent_id)[-1][1]
    assert _logs(agentexec_session, model.agent_id)[-1] == (
        "ERROR",
        "ConnectionError: provider down",
        None,
    )
    after = await ax.enqueue("scripted_agent", {"reports": 1})
    assert (await ax.get_result(after.agent_id, timeout=30))["final"] == "all done"
    await ax.close_redis()


@pytest.mark.parametrize("scenario", ["http", "http_streamed"])
async def test_real_openai_client_path(
    scenario: str,
    agentexec_worker: StartWorker,
    agentexec_session: Session,
    sqlite_only: None,
) -> None:
    with ScriptedOpenAIServer() as server:
        env = {**APP_ENV, **server.env()}
        agentexec_worker("-I", "userapp.agent_tasks", cwd=APP_DIR, env=env)
        task = await ax.enqueue("scripted_agent", {"scenario": scenario})
        result = await ax.get_result(task.agent_id, timeout=30)
        assert result["final"] == "Done: Research Acme"
        if scenario == "http_streamed":
            assert result["streamed_events"] > 0
        requests = server.requests
        assert [r.get("stream", False) for r in requests] == [scenario == "http_streamed"] * 2
        assert requests[0]["model"] == "gpt-4o"
    assert ("RUNNING", "Working on it", 50) in _logs(agentexec_session, task.agent_id)
    await ax.close_redis()


async def test_two_hundred_agents_report_in_order_on_one_process(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    agentexec_worker("-I", "userapp.agent_tasks", "--concurrency=200", cwd=APP_DIR, env=APP_ENV)
    context = {"scenario": "reports", "reports": 5, "latency": 0.2}
    tasks = await asyncio.gather(*(ax.enqueue("scripted_agent", context) for _ in range(200)))
    results = await asyncio.gather(*(ax.get_result(t.agent_id, timeout=120) for t in tasks))
    assert all(r["final"] == "all done" for r in results)
    expected = [f"report {i}" for i in range(1, 6)]
    for task in tasks:
        messages = [m for s, m, _ in _logs(agentexec_session, task.agent_id) if s == "RUNNING"]
        assert messages == ["Task started", *expected]
    await ax.close_redis()
