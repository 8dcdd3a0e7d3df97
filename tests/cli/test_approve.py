"""`agentexec approve`, `resume`, `list -s WAITING` and `show` of a waiting run, against a live
worker and a scripted model over HTTP."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import userapp.durable_tasks  # noqa: F401  (registers the durable agents here too)
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.testing import wait_for
from agentexec.testing.openai_server import ScriptedOpenAIServer
from agentexec.testing.plugin import StartWorker
from tests.apps import APP_DIR, APP_ENV
from tests.durable_script import DurableScript

pytestmark = pytest.mark.usefixtures("sqlite_only")


def _enqueue(context: dict[str, Any]) -> uuid.UUID:
    async def run() -> uuid.UUID:
        return (await ax.enqueue("durable_agent", context)).agent_id

    return asyncio.run(run())


def _status(session: Session, agent_id: uuid.UUID, status: ax.Status) -> None:
    def reached() -> bool:
        session.expire_all()
        found = ax.activity.detail(session, agent_id)
        return found is not None and found.status is status

    wait_for(reached, 30, f"{agent_id} {status}")


def test_approve_reject_and_resume_from_the_command_line(
    agentexec_worker: StartWorker, agentexec_session: Session, cli: Any
) -> None:
    with ScriptedOpenAIServer(DurableScript()) as server:
        env = {**APP_ENV, **server.env(), "OPENAI_AGENTS_DISABLE_TRACING": "1"}
        agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=env)
        approved, rejected = _enqueue({"mode": "approval"}), _enqueue({"mode": "approval"})
        short = _enqueue({"mode": "steps", "steps": 3, "max_turns": 2})
        for run in (approved, rejected):
            _status(agentexec_session, run, ax.Status.WAITING)
        listed = json.loads(cli("list", "-s", "WAITING", "--json").output)
        assert {row["agent_id"] for row in listed} == {str(approved), str(rejected)}
        shown = cli("show", str(approved))
        assert "approvals" in shown.output and "send_email" in shown.output
        assert "pending" in shown.output

        assert cli("approve", str(approved)).exit_code == 0
        again = cli("approve", str(approved))
        assert again.exit_code == 1 and "no such decision" in again.output
        refused = cli("approve", str(rejected), "--reject", "--message", "[/x] not now")
        assert refused.exit_code == 0, refused.output
        assert cli("approve", str(uuid.uuid4())).exit_code == 1

        done = json.loads(cli("result", str(approved), "--timeout", "30").output)
        assert done == {"final": "final: sent to boss@example.com"}
        done = json.loads(cli("result", str(rejected), "--timeout", "30").output)
        assert done == {"final": "final: [/x] not now"}

        assert cli("result", str(short), "--timeout", "30").exit_code == 1  # turn limit
        _status(agentexec_session, short, ax.Status.ERROR)
        resumed = cli("resume", str(short), "--max-turns", "5")
        assert resumed.exit_code == 0, resumed.output
        done = json.loads(cli("result", str(short), "--timeout", "30").output)
        assert done == {"final": "done after 3 steps"}
        finished = cli("resume", str(short))
        assert finished.exit_code == 1 and "COMPLETE, not ERROR" in finished.output
    shown = cli("show", str(rejected)).output
    assert "rejected" in shown and "[/x] not now" in shown
