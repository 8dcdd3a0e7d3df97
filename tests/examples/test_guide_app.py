"""The FastAPI integration guide's example app, end to end, on SQLite and PostgreSQL.

`examples/fastapi_app` holds the guide's code verbatim. Here it runs the way the guide tells
users to run it: the API under uvicorn and the worker as `python -m myapp.worker`, both real
subprocesses, with the agent's model served by a local `ScriptedOpenAIServer` (its default
responder calls `report_status("Working on it", 50)` once, then answers "Done: <input>").
Every check goes through the API over HTTP or WebSocket, as the guide's users would.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import agentexec as ax
from agentexec.db.models import Activity, ActivityLog
from agentexec.runtime import get_runtime
from agentexec.states import utcnow
from agentexec.testing import ScriptedOpenAIServer, WorkerProcess, wait_for
from agentexec.testing.openai_script import Reply, default_responder, last_user_text
from agentexec.testing.plugin import StartWorker

APP_DIR = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app"
SRC = APP_DIR / "src"
TERMINAL = ("COMPLETE", "ERROR", "CANCELED")
TOKEN = "guide-app-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: The activity log of one run of the guide's task against the scripted model.
EXPECTED_LOGS = [
    ("QUEUED", "Task queued", None),
    ("RUNNING", "Task started", 0),
    ("RUNNING", "Working on it", 50),
    ("COMPLETE", "Task completed", 100),
]


class ApiProcess(WorkerProcess):
    """`uvicorn myapp.main:app` in a subprocess of its own session, always stopped."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "uvicorn", "myapp.main:app", "--port", str(self.port)]
        super().__init__(argv, env, SRC, log_path)

    def start(
        self, ready_timeout: float = 90.0, ready: Callable[[], bool] | None = None
    ) -> ApiProcess:
        super().start(ready_timeout, ready or self._answers)
        return self

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/openapi.json", timeout=2).status_code == 200
        except httpx.TransportError:
            return False


@dataclass
class GuideApp:
    """The running example: its API, the scripted model, and a way to start its worker."""

    api: ApiProcess
    server: ScriptedOpenAIServer
    http: httpx.Client
    env: dict[str, str]
    start_worker_fixture: StartWorker
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return self.api.url.replace("http://", "ws://", 1)

    def start_worker(self) -> WorkerProcess:
        """`python -m myapp.worker`, i.e. the guide's `pool.run()`, waited on until ready."""
        worker = self.start_worker_fixture(module="myapp.worker", cwd=SRC, env=self.env)
        self.workers.append(worker)
        return worker

    def research(self, company: str, **extra: Any) -> str:
        response = self.http.post("/api/tasks/research", json={"company": company, **extra})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["message"] == f"Research task queued for {company}"
        return str(uuid.UUID(body["agent_id"]))

    def status(self, agent_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/tasks/{agent_id}/status")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_terminal(self, agent_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll the status endpoint until the run ends; returns every status seen."""
        seen: list[dict[str, Any]] = []

        def ended() -> bool:
            seen.append(self.status(agent_id))
            return seen[-1]["status"] in TERMINAL

        wait_for(ended, timeout, f"task {agent_id} to end", interval=0.1, on_timeout=self.logs)
        return seen

    def logs(self) -> str:
        worker_logs = "\n".join(w.log()[-3000:] for w in self.workers)
        return f"--- api ---\n{self.api.log()[-3000:]}\n--- workers ---\n{worker_logs}"


@pytest.fixture
def guide_app(
    agentexec_env: dict[str, str], agentexec_worker: StartWorker, tmp_path: Path
) -> Iterator[GuideApp]:
    """The guide's API under uvicorn on this test's database and queues; no worker yet."""
    with ScriptedOpenAIServer() as server:
        env = {
            "PYTHONPATH": str(SRC),
            **server.env(),
            # Traces would go to api.openai.com, which is not reachable.
            "OPENAI_AGENTS_DISABLE_TRACING": "1",
            "AGENTEXEC_NUM_WORKERS": "4",
            # The lifespan's print() must reach the log while the API runs.
            "PYTHONUNBUFFERED": "1",
            "API_TOKENS": TOKEN,
        }
        api = ApiProcess({**os.environ, **agentexec_env, **env}, tmp_path / "api.log")
        try:
            api.start()
            with httpx.Client(base_url=api.url, timeout=20, headers=AUTH) as http:
                yield GuideApp(api, server, http, env, agentexec_worker)
        finally:
            api.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tuples(detail: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    return [(log["status"], log["message"], log["progress"]) for log in detail["logs"]]


def test_research_task_over_http(guide_app: GuideApp) -> None:
    app = guide_app
    # No worker yet: the run waits in the queue, and a result request times out.
    acme = app.research("Acme", focus_areas=["products", "pricing"])
    assert app.status(acme) == {
        "agent_id": acme,
        "status": "QUEUED",
        "progress": None,
        "message": "Task queued",
    }
    response = app.http.get(f"/api/tasks/{acme}/result", params={"timeout": 1})
    assert response.status_code == 408
    assert response.json() == {"detail": "Task not completed within 1 seconds"}

    app.start_worker()
    globex = app.research("Globex", priority="high")

    for agent_id in (acme, globex):
        seen = app.wait_terminal(agent_id)
        assert {s["status"] for s in seen} <= {"QUEUED", "RUNNING", "COMPLETE"}
        assert seen[-1] == {
            "agent_id": agent_id,
            "status": "COMPLETE",
            "progress": 100,
            "message": "Task completed",
        }
    for agent_id, company in ((acme, "Acme"), (globex, "Globex")):
        response = app.http.get(f"/api/tasks/{agent_id}/result")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "agent_id": agent_id,
            "result": {"company": company, "findings": f"Done: Research {company}"},
        }

    # The guide's agent reached the model with its instructions and the report_status tool.
    instructions = [r["instructions"] for r in app.server.requests]
    assert any("Research Acme." in i and "Focus on: products, pricing" in i for i in instructions)
    assert any("Research Globex." in i and "Focus on: general info" in i for i in instructions)
    assert all("report_status" in [t.get("name") for t in r["tools"]] for r in app.server.requests)

    # Activity detail: the whole log, oldest first.
    response = app.http.get(f"/api/activities/{acme}")
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["agent_id"] == acme
    assert detail["task_type"] == "research_company"
    assert (detail["status"], detail["progress"]) == ("COMPLETE", 100)
    assert _log_tuples(detail) == EXPECTED_LOGS
    stamps = [datetime.fromisoformat(log["created_at"]) for log in detail["logs"]]
    assert stamps == sorted(stamps)
    created = datetime.fromisoformat(detail["created_at"])
    updated = datetime.fromisoformat(detail["updated_at"])
    assert created.utcoffset() == timedelta(0)
    assert created <= updated == stamps[-1]

    # Activity list: newest first, with the latest status of each run.
    response = app.http.get("/api/activities")
    assert response.status_code == 200, response.text
    page = response.json()
    assert (page["total"], page["page"], page["pages"]) == (2, 1, 1)
    assert [item["agent_id"] for item in page["items"]] == [globex, acme]
    for item in page["items"]:
        assert item["task_type"] == "research_company"
        assert (item["status"], item["progress"], item["message"]) == (
            "COMPLETE",
            100,
            "Task completed",
        )
        datetime.fromisoformat(item["updated_at"])
    second = app.http.get("/api/activities", params={"page": 2, "page_size": 1}).json()
    assert (second["total"], second["page"], second["pages"]) == (2, 2, 2)
    assert [item["agent_id"] for item in second["items"]] == [acme]


def test_websocket_follows_a_task_to_its_end(guide_app: GuideApp) -> None:
    app = guide_app
    app.server.delay = 0.5  # two model calls: the run takes over a second
    app.start_worker()
    agent_id = app.research("Initech")

    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    with connect(
        f"{app.ws_url}/api/ws/tasks/{agent_id}", open_timeout=10, additional_headers=AUTH
    ) as ws:
        while True:
            try:
                raw = ws.recv(timeout=deadline - time.monotonic())
            except ConnectionClosed:
                # The guide's endpoint returns after a terminal status without calling
                # `websocket.close()`, so uvicorn drops the connection with no close frame.
                break
            messages.append(json.loads(raw))

    assert messages, app.logs()
    assert messages[-1] == {"status": "COMPLETE", "progress": 100, "message": "Task completed"}
    assert all(m["status"] in ("QUEUED", "RUNNING") for m in messages[:-1]), messages
    progress = [m["progress"] or 0 for m in messages]
    assert progress == sorted(progress)

    # A finished run gives its final status at once; an unknown one an error.
    with connect(
        f"{app.ws_url}/api/ws/tasks/{agent_id}", open_timeout=10, additional_headers=AUTH
    ) as ws:
        assert json.loads(ws.recv(timeout=10))["status"] == "COMPLETE"
    for unknown in (str(uuid.uuid4()), "nonexistent"):
        with connect(
            f"{app.ws_url}/api/ws/tasks/{unknown}", open_timeout=10, additional_headers=AUTH
        ) as ws:
            assert json.loads(ws.recv(timeout=10)) == {"error": "Task not found"}


def test_unknown_ids_answer_404(guide_app: GuideApp) -> None:
    app = guide_app
    for unknown in (str(uuid.uuid4()), "nonexistent"):
        response = app.http.get(f"/api/tasks/{unknown}/status")
        assert (response.status_code, response.json()) == (404, {"detail": "Task not found"})
        response = app.http.get(f"/api/activities/{unknown}")
        assert (response.status_code, response.json()) == (404, {"detail": "Activity not found"})
        # At once, not after the 30 s the endpoint would wait for a known run.
        started = time.monotonic()
        response = app.http.get(f"/api/tasks/{unknown}/result", timeout=10)
        assert (response.status_code, response.json()) == (404, {"detail": "Result not found"})
        assert time.monotonic() - started < 5


def test_restart_cancels_only_stale_activities(guide_app: GuideApp) -> None:
    """The guide's lifespan cancels at startup the runs that can no longer end: one whose
    message the broker lost is CANCELED, one still waiting in its queue is left alone (so
    many API replicas can restart while runs wait)."""
    app = guide_app
    waiting = app.research("Umbrella")
    lost = app.research("Initech")
    _drop_message(lost)  # the broker loses it, say in a restart without persistence
    app.api.stop()
    app.api.start()
    assert app.status(waiting)["status"] == "QUEUED"
    assert app.status(lost) == {
        "agent_id": lost,
        "status": "CANCELED",
        "progress": None,
        "message": "Canceled at startup",
    }
    assert "Cleaned up 1 stale activities" in app.api.log()


def _drop_message(agent_id: str) -> None:
    """Remove a run's message from its queue, as a broker that lost it would."""
    settings = ax.get_settings()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        for raw in client.lrange(settings.low_queue, 0, -1):  # type: ignore[union-attr]
            if agent_id.encode() in raw:
                client.lrem(settings.low_queue, 1, raw)
                copies = client.hgetall(settings.keys.messages)  # kept until acknowledged
                tags = [tag for tag, copy in copies.items() if agent_id.encode() in copy]  # type: ignore[union-attr]
                client.hdel(settings.keys.messages, *tags)
                return
        raise AssertionError(f"no message of {agent_id} on its queue")
    finally:
        client.close()


def test_admin_cleanup_deletes_old_activities_and_their_logs(guide_app: GuideApp) -> None:
    app = guide_app
    app.start_worker()
    old, fresh = app.research("Old Corp"), app.research("Fresh Corp")
    for agent_id in (old, fresh):
        assert app.http.get(f"/api/tasks/{agent_id}/result").status_code == 200
        assert app.wait_terminal(agent_id)[-1]["status"] == "COMPLETE"

    engine = get_runtime().engine
    with engine.begin() as conn:
        conn.execute(
            update(Activity)
            .where(Activity.agent_id == uuid.UUID(old))
            .values(updated_at=utcnow() - timedelta(days=40))
        )

    def log_count(session: Session, agent_id: str) -> int:
        stmt = select(func.count()).where(ActivityLog.agent_id == uuid.UUID(agent_id))
        return session.scalar(stmt) or 0

    with Session(engine) as session:
        assert log_count(session, old) == len(EXPECTED_LOGS)

    response = app.http.post("/api/admin/cleanup")
    assert (response.status_code, response.json()) == (200, {"message": "Cleanup scheduled"})

    def old_gone() -> bool:
        return app.http.get(f"/api/activities/{old}").status_code == 404

    wait_for(old_gone, 15, "the cleanup to delete the old activity", on_timeout=app.logs)
    with Session(engine) as session:
        assert session.get(Activity, uuid.UUID(old)) is None
        assert log_count(session, old) == 0
        assert log_count(session, fresh) == len(EXPECTED_LOGS)

    fresh_detail = app.http.get(f"/api/activities/{fresh}").json()
    assert _log_tuples(fresh_detail) == EXPECTED_LOGS
    page = app.http.get("/api/activities").json()
    assert [item["agent_id"] for item in page["items"]] == [fresh]


def test_guide_tests_pass_unchanged(tmp_path: Path) -> None:
    """The guide's own tests (examples/fastapi_app/tests), run the way its users run them.

    They run in a copy of the project, so the `test.db` and `agents.db` the guide's code
    creates in the working directory land in the copy.
    """
    project = tmp_path / "fastapi_app"
    ignore = shutil.ignore_patterns("__pycache__", "*.db", "*.db-*", ".pytest_cache")
    for part in ("src", "tests"):
        shutil.copytree(APP_DIR / part, project / part, ignore=ignore)
    shutil.copy(APP_DIR / "conftest.py", project / "conftest.py")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "API_TOKENS")
        and not key.startswith(("AGENTEXEC_", "PYTEST_"))
    }
    env["PYTHONPATH"] = "src"
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "tests",
        "-q",
        "-p",
        "no:cacheprovider",
        # As strict as this repository's own configuration.
        "-W",
        "error",
        # agentexec's editable install (this repository's venv) loads its import hook first.
        "-W",
        "ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    ]
    result = subprocess.run(
        argv, cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "2 passed" in output, output
    assert (project / "test.db").exists()


def test_bad_input_gets_a_specific_status(guide_app: GuideApp) -> None:
    """The example's handlers (errors.py) give each bad input its own status; the guide's
    views are unchanged."""
    app = guide_app

    def respond(request: dict[str, Any]) -> Any:
        if "Doomed" in last_user_text(request):
            return Reply.failure(400, "Invalid parameter", error_type="invalid_request_error")
        return default_responder(request)

    app.server.responder = respond
    # A canceled run: 409 with its reason (canceled while queued, before any worker).
    stopped = app.research("Stopped Ltd")
    assert asyncio.run(ax.cancel(stopped, reason="Not needed")) is True
    response = app.http.get(f"/api/tasks/{stopped}/result")
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "TaskCanceledError"
    assert response.json()["reason"] == "Not needed"
    app.start_worker()
    # A failed run: 409 with its reason, not 500.
    doomed = app.research("Doomed Inc")
    app.wait_terminal(doomed)
    response = app.http.get(f"/api/tasks/{doomed}/result")
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "TaskFailedError"
    assert "Error code: 400" in response.json()["reason"]
    # A timeout out of range: 422, even for an unknown id.
    for timeout in (0, -5, 10**6):
        response = app.http.get(f"/api/tasks/{uuid.uuid4()}/result", params={"timeout": timeout})
        assert response.status_code == 422, (timeout, response.text)
        assert "timeout must be above 0" in response.json()["detail"]
    # An unknown priority: 422, and nothing is queued.
    response = app.http.post("/api/tasks/research", json={"company": "X", "priority": "urgent"})
    assert (response.status_code, response.json()["error"]) == (422, "InvalidRequestError")
    # Pages out of range: 422.
    for params in ({"page": 0}, {"page_size": 0}, {"page_size": 501}, {"page": -1}):
        response = app.http.get("/api/activities", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"] == "InvalidRequestError"
    # A body over the limit: 413 from the guard, and nothing is queued.
    response = app.http.post("/api/tasks/research", content=b"x" * (1_048_576 + 1))
    assert (response.status_code, response.json()["error"]) == (413, "BodyTooLarge")
    assert app.http.get("/api/activities").json()["total"] == 2  # the doomed and the stopped


def test_research_pipeline_over_http(guide_app: GuideApp) -> None:
    """The example's research pipeline (docs/pipelines.md): a planner agent writes 5
    questions, 5 researcher agents answer them in runs of their own, a writer agent reports."""
    app = guide_app

    def respond(request: dict[str, Any]) -> Any:
        if "Write exactly 5 research questions" in request.get("instructions", ""):
            questions = [f"Question {i} on Acme?" for i in range(1, 7)]  # one too many
            return Reply.message(json.dumps({"response": questions}))
        return default_responder(request)

    app.server.responder = respond
    app.start_worker()
    response = app.http.post(
        "/api/secure/pipelines/research", json={"company": "Acme", "focus_areas": ["pricing"]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["message"] == "Research pipeline started for Acme"
    pipeline_id = response.json()["agent_id"]

    response = app.http.get(f"/api/secure/tasks/{pipeline_id}/result", params={"timeout": 60})
    assert response.status_code == 200, response.text
    report = response.json()["result"]
    questions = [f"Question {i} on Acme?" for i in range(1, 6)]
    assert [f["question"] for f in report["findings"]] == questions
    assert [f["answer"] for f in report["findings"]] == [f"Done: {q}" for q in questions]
    assert report["company"] == "Acme"
    assert report["report"].startswith("Done: Q: Question 1 on Acme?")

    # The planner saw the focus areas; the writer saw every finding.
    planner = [r for r in app.server.requests if "research questions" in r["instructions"]]
    assert len(planner) == 1 and "Focus on: pricing" in planner[0]["instructions"]

    # The pipeline's run and its children: 3 steps and 5 researchers, all COMPLETE.
    def children_done() -> bool:
        detail = app.http.get(f"/agentexec/agents/{pipeline_id}").json()
        return len(detail["children"]) == 8 and all(
            c["status"] == "COMPLETE" for c in detail["children"]
        )

    wait_for(children_done, 30, "the 8 runs of the pipeline COMPLETE")
    detail = app.http.get(f"/agentexec/agents/{pipeline_id}").json()
    assert detail["status"] == "COMPLETE"
    tasks = sorted(c["task"] for c in detail["children"])
    assert tasks == sorted(
        ["research_pipeline.plan", "research_pipeline.research", "research_pipeline.write"]
        + ["research_question"] * 5
    )
