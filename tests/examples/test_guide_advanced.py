"""The guide's advanced patterns in the example app, and agentexec's router mounted in it.

The API runs under uvicorn as in `test_guide_app.py`, with a token and a low rate limit.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentexec.testing import ScriptedOpenAIServer
from agentexec.testing.plugin import StartWorker
from tests.examples.test_guide_app import SRC, ApiProcess

#: The database plays no part here: SQLite alone keeps the suite short.
pytestmark = pytest.mark.usefixtures("sqlite_only")

TOKEN = "example-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(
    agentexec_env: dict[str, str], agentexec_worker: StartWorker, tmp_path: Path
) -> Iterator[httpx.Client]:
    with ScriptedOpenAIServer() as server:
        env = {
            "PYTHONPATH": str(SRC),
            **server.env(),
            "OPENAI_AGENTS_DISABLE_TRACING": "1",
            "API_TOKENS": f"other,{TOKEN}",
            "RATE_LIMIT": "3/minute",
        }
        process = ApiProcess({**os.environ, **agentexec_env, **env}, tmp_path / "api.log")
        try:
            process.start(ready_timeout=120)
            with httpx.Client(base_url=process.url, timeout=30) as http:
                http.start_worker = lambda: agentexec_worker(  # type: ignore[attr-defined]
                    module="myapp.worker", cwd=SRC, env=env
                )
                yield http
        finally:
            process.stop()


def test_bearer_auth_on_the_mutating_endpoint(api: httpx.Client, sqlite_only: None) -> None:
    body = {"company": "Acme"}
    response = api.post("/api/secure/tasks/research", json=body)
    assert response.status_code in (401, 403)  # HTTPBearer: no credentials
    response = api.post(
        "/api/secure/tasks/research", json=body, headers={"Authorization": "Bearer x"}
    )
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid token"})
    response = api.post("/api/secure/tasks/research", json=body, headers=AUTH)
    assert response.status_code == 200
    agent_id = response.json()["agent_id"]
    assert api.get(f"/api/tasks/{agent_id}/status").json()["status"] == "QUEUED"
    # The guide's plain endpoints stay open, as the guide's tests expect.
    assert api.post("/api/tasks/research", json=body).status_code == 200


def test_rate_limit_with_slowapi(api: httpx.Client, sqlite_only: None) -> None:
    codes = [
        api.post("/api/secure/tasks/research", json={"company": f"C{i}"}, headers=AUTH).status_code
        for i in range(5)
    ]
    assert codes == [200, 200, 200, 429, 429]
    response = api.post("/api/secure/tasks/research", json={"company": "late"}, headers=AUTH)
    assert response.status_code == 429
    assert "Rate limit exceeded" in response.text
    assert api.get("/api/activities").json()["total"] == 3


def test_custom_exception_handlers(api: httpx.Client, sqlite_only: None) -> None:
    unknown = str(uuid.uuid4())
    response = api.get(f"/api/secure/tasks/{unknown}/result", params={"timeout": 5})
    assert (response.status_code, response.json()) == (
        404,
        {"error": "Task not found", "agent_id": unknown},
    )
    queued = api.post("/api/secure/tasks/research", json={"company": "Slow"}, headers=AUTH)
    agent_id = queued.json()["agent_id"]
    response = api.get(f"/api/secure/tasks/{agent_id}/result", params={"timeout": 1})
    assert (response.status_code, response.json()) == (
        408,
        {"error": "Task timed out", "agent_id": agent_id, "timeout": 1},
    )
    api.start_worker()  # type: ignore[attr-defined]
    response = api.get(f"/api/secure/tasks/{agent_id}/result", params={"timeout": 60})
    assert response.status_code == 200
    assert response.json()["result"]["findings"] == "Done: Research Slow"


def test_agentexec_router_is_mounted(api: httpx.Client, sqlite_only: None) -> None:
    assert "EventSource" in api.get("/agentexec/agents/dashboard").text
    body = {"company": "Initech"}
    assert api.post("/agentexec/agents/tasks/research_company", json=body).status_code in (401, 403)
    response = api.post("/agentexec/agents/tasks/research_company", json=body, headers=AUTH)
    assert response.status_code == 202
    agent_id = response.json()["agent_id"]
    page = api.get("/agentexec/agents", params={"task": "research_company"}).json()
    assert [item["agent_id"] for item in page["items"]] == [agent_id]
    response = api.post(f"/agentexec/agents/{agent_id}/cancel", headers=AUTH)
    assert response.status_code == 200
    assert api.get(f"/agentexec/agents/{agent_id}").json()["status"] == "CANCELED"
