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

TOKEN = "example-token-0123456789"
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
            "API_TOKENS": f"another-token-0123456789,{TOKEN}",
            "RATE_LIMIT": "3/minute",
        }
        process = ApiProcess({**os.environ, **agentexec_env, **env}, tmp_path / "api.log")
        try:
            process.start(ready_timeout=120)
            with httpx.Client(base_url=process.url, timeout=30, headers=AUTH) as http:
                http.start_worker = lambda: agentexec_worker(  # type: ignore[attr-defined]
                    module="myapp.worker", cwd=SRC, env=env
                )
                yield http
        finally:
            process.stop()


def test_bearer_auth_on_every_endpoint(api: httpx.Client, sqlite_only: None) -> None:
    body = {"company": "Acme"}
    with httpx.Client(base_url=str(api.base_url), timeout=30) as anonymous:
        response = anonymous.post("/api/secure/tasks/research", json=body)
        assert response.status_code in (401, 403)  # HTTPBearer: no credentials
        response = anonymous.post(
            "/api/secure/tasks/research", json=body, headers={"Authorization": "Bearer x"}
        )
        assert (response.status_code, response.json()) == (401, {"detail": "Invalid token"})
    response = api.post("/api/secure/tasks/research", json=body)
    assert response.status_code == 200
    agent_id = response.json()["agent_id"]
    assert api.get(f"/api/tasks/{agent_id}/status").json()["status"] == "QUEUED"
    # Every endpoint of the app, the guide's own included, needs the token.
    schema = api.get("/openapi.json").json()
    paths = [
        (method, path.replace("{agent_id}", agent_id).replace("{task_name}", "research_company"))
        for path, operations in schema["paths"].items()
        for method in operations
    ]
    assert len(paths) >= 15
    with httpx.Client(base_url=str(api.base_url), timeout=30) as anonymous:
        for method, path in paths:
            response = anonymous.request(method, path, json={})
            assert response.status_code in (401, 403), (method, path, response.status_code)


def test_rate_limit_with_slowapi(api: httpx.Client, sqlite_only: None) -> None:
    codes = [
        api.post("/api/secure/tasks/research", json={"company": f"C{i}"}).status_code
        for i in range(5)
    ]
    assert codes == [200, 200, 200, 429, 429]
    response = api.post("/api/secure/tasks/research", json={"company": "late"})
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
    queued = api.post("/api/secure/tasks/research", json={"company": "Slow"})
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
    assert "function follow(" in api.get("/agentexec/agents/dashboard").text
    body = {"company": "Initech"}
    response = api.post("/agentexec/agents/tasks/research_company", json=body)
    assert response.status_code == 202
    agent_id = response.json()["agent_id"]
    page = api.get("/agentexec/agents", params={"task": "research_company"}).json()
    assert [item["agent_id"] for item in page["items"]] == [agent_id]
    response = api.post(f"/agentexec/agents/{agent_id}/cancel")
    assert response.status_code == 200
    assert api.get(f"/agentexec/agents/{agent_id}").json()["status"] == "CANCELED"


@pytest.mark.parametrize("tokens", [None, "", "short", "long-enough-token-0123,short"])
def test_the_app_refuses_to_start_without_good_tokens(tokens: str | None) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "API_TOKENS"}
    if tokens is not None:
        env["API_TOKENS"] = tokens
    env["PYTHONPATH"] = str(SRC)
    out = subprocess.run(
        [sys.executable, "-c", "import myapp.main"], env=env, capture_output=True, text=True,
        cwd=SRC, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert "set API_TOKENS" in out.stderr and "at least 16 characters" in out.stderr
