"""Approvals through the router over real HTTP, with a real worker and a scripted model."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import userapp.durable_tasks  # noqa: F401  (registers the durable agents here too)

import agentexec as ax
from agentexec.states import EventKind
from agentexec.testing import wait_for
from agentexec.testing.openai_server import ScriptedOpenAIServer
from tests.apps import APP_DIR, APP_ENV
from tests.durable_script import DurableScript
from tests.web.conftest import Served

pytestmark = pytest.mark.usefixtures("sqlite_only")


async def test_a_run_waits_is_listed_watched_and_approved_over_http(served: Served) -> None:
    with ScriptedOpenAIServer(DurableScript()) as server:
        env = {**APP_ENV, **server.env(), "OPENAI_AGENTS_DISABLE_TRACING": "1"}
        served.start_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=env)
        run = await ax.enqueue("durable_agent", {"mode": "approval"})
        agent_id = str(run.agent_id)

        async def waiting_event() -> ax.Status:
            async for event in ax.watch(run.agent_id):
                if event.kind is EventKind.WAITING or event.status is ax.Status.WAITING:
                    return event.status
            raise AssertionError("the run ended without waiting")

        assert await asyncio.wait_for(waiting_event(), 30) is ax.Status.WAITING

        def listed() -> bool:
            page = served.http.get("/agents", params={"status": "WAITING"}).json()
            return agent_id in [item["agent_id"] for item in page["items"]]

        await asyncio.to_thread(wait_for, listed, 30, "the run listed as WAITING")
        detail = served.http.get(f"/agents/{agent_id}").json()
        [asked] = detail["approvals"]
        assert (asked["tool"], asked["approved"]) == ("send_email", None)
        call = asked["call_id"]
        url = f"/agents/{agent_id}/approvals/{call}"

        assert served.anon.post(url, json={"approve": True}).status_code in (401, 403)
        assert served.http.post(url, json={"approve": "maybe"}).status_code == 422
        missing = served.http.post(
            f"/agents/{agent_id}/approvals/call_nope", json={"approve": True}
        )
        assert missing.status_code == 404
        unknown = served.http.post(
            f"/agents/{uuid.uuid4()}/approvals/{call}", json={"approve": True}
        )
        assert unknown.status_code == 404

        decided = served.http.post(url, json={"approve": True, "message": "go ahead"})
        assert decided.status_code == 200, decided.text
        assert decided.json() == {"agent_id": agent_id, "call_id": call, "approved": True}
        assert served.http.post(url, json={"approve": False}).status_code == 409

        result = served.http.get(f"/agents/{agent_id}/result", params={"timeout": 30})
        assert result.status_code == 200, result.text
        assert result.json()["result"] == {"final": "final: sent to boss@example.com"}

        def approved() -> bool:
            found = served.http.get(f"/agents/{agent_id}").json()
            return found["status"] == "COMPLETE" and found["approvals"][0]["approved"] is True

        await asyncio.to_thread(wait_for, approved, 30, "the approval in the detail")
        assert (
            served.http.get(f"/agents/{agent_id}").json()["approvals"][0]["decision_message"]
            == "go ahead"
        )
