"""agentexec.web's router over real HTTP: every endpoint, its error codes, auth, SSE resume."""

from __future__ import annotations

import gc
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import agentexec as ax
import agentexec.web
from agentexec.config import get_settings
from agentexec.eventlog.event import Event
from agentexec.runtime import get_runtime
from agentexec.states import EventKind
from agentexec.testing.plugin import record_events
from tests.web.conftest import AUTH, Served

WS_AUTH: dict[str, Any] = {"additional_headers": AUTH}

#: The database plays no part here: SQLite alone keeps the suite short.
pytestmark = pytest.mark.usefixtures("sqlite_only")


def _queued(task: str = "research") -> uuid.UUID:
    agent_id = uuid.uuid4()
    record_events(
        Event(agent_id, ax.Status.QUEUED, "Task queued", kind=EventKind.QUEUED, task=task)
    )
    return agent_id


def _append(*events: Event) -> list[Event]:
    return get_runtime().events.append(events)


def _events(lines: Iterator[str], n: int | None = None) -> list[tuple[int | None, dict[str, Any]]]:
    """SSE frames as (id, data), until the stream ends or `n` frames came."""
    frames: list[tuple[int | None, dict[str, Any]]] = []
    event_id: int | None = None
    for line in lines:
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            frames.append((event_id, json.loads(line[6:])))
            event_id = None
            if n is not None and len(frames) == n:
                break
    return frames


def _enqueue(served: Served, task: str, context: dict[str, Any], **params: str) -> str:
    response = served.http.post(f"/agents/tasks/{task}", json=context, params=params, headers=AUTH)
    assert response.status_code == 202, response.text
    return str(response.json()["agent_id"])


def test_list_filters_and_pages(served: Served) -> None:
    research = [_queued("research") for _ in range(3)]
    summary = _queued("summary")
    record_events(
        Event(research[0], ax.Status.COMPLETE, "Task completed", 100, kind=EventKind.COMPLETE)
    )
    page = served.http.get("/agents", params={"page_size": 2}).json()
    assert (page["total"], page["page"], page["page_size"], page["pages"]) == (4, 1, 2, 2)
    assert [i["agent_id"] for i in page["items"]] == [str(summary), str(research[2])]
    second = served.http.get("/agents", params={"page_size": 2, "page": 2}).json()
    assert [i["agent_id"] for i in second["items"]] == [str(research[1]), str(research[0])]
    done = served.http.get("/agents", params={"status": "COMPLETE"}).json()
    assert [(i["agent_id"], i["percentage"], i["task"]) for i in done["items"]] == [
        (str(research[0]), 100, "research")
    ]
    by_task = served.http.get("/agents", params={"task": "summary"}).json()
    assert [i["agent_id"] for i in by_task["items"]] == [str(summary)]
    assert isinstance(by_task["items"][0]["seq"], int)
    for bad in ({"status": "DONE"}, {"page": 0}, {"page_size": 501}):
        assert served.http.get("/agents", params=bad).status_code == 422


def test_detail_with_logs_and_404(served: Served) -> None:
    agent_id = _queued()
    record_events(Event(agent_id, ax.Status.RUNNING, "Reading", 40))
    detail = served.http.get(f"/agents/{agent_id}").json()
    assert (detail["status"], detail["percentage"], detail["message"], detail["task"]) == (
        "RUNNING",
        40,
        "Reading",
        "research",
    )
    assert [(log["status"], log["message"], log["percentage"]) for log in detail["logs"]] == [
        ("QUEUED", "Task queued", None),
        ("RUNNING", "Reading", 40),
    ]
    for unknown in (uuid.uuid4(), "nonexistent"):
        response = served.http.get(f"/agents/{unknown}")
        assert response.status_code == 404
        assert "no run has the id" in response.json()["detail"]


def test_enqueue_validates_and_needs_auth(served: Served, sqlite_only: None) -> None:
    body = {"seconds": 0, "label": "x"}
    assert served.anon.post("/agents/tasks/sleep_agent", json=body).status_code == 401
    bad_token = {"Authorization": "Bearer wrong"}
    assert (
        served.anon.post("/agents/tasks/sleep_agent", json=body, headers=bad_token).status_code
        == 401
    )
    agent_id = _enqueue(served, "sleep_agent", body, priority="high")
    detail = served.http.get(f"/agents/{agent_id}").json()
    assert (detail["status"], detail["task"]) == ("QUEUED", "sleep_agent")
    assert _enqueue(served, "sleep_agent", {})  # the defaults validate; priority low

    response = served.http.post("/agents/tasks/sleep_agent", json={"seconds": -1}, headers=AUTH)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["loc"], error["type"]) == (["body", "seconds"], "greater_than_equal")
    response = served.http.post("/agents/tasks/sleep_agent", json=[1], headers=AUTH)
    assert response.status_code == 422
    response = served.http.post(
        "/agents/tasks/sleep_agent", json=body, params={"priority": "urgent"}, headers=AUTH
    )
    assert response.status_code == 422
    response = served.http.post("/agents/tasks/nope", json=body, headers=AUTH)
    assert response.status_code == 404
    assert "unknown agent task 'nope'" in response.json()["detail"]
    # Nothing was queued by the refused requests.
    assert served.http.get("/agents").json()["total"] == 2


def test_result_codes(served: Served, sqlite_only: None) -> None:
    waiting = _enqueue(served, "sleep_agent", {"label": "slow"})
    response = served.http.get(f"/agents/{waiting}/result", params={"timeout": 0.5})
    assert response.status_code == 408
    assert "did not finish within 0.5s" in response.json()["detail"]
    for timeout in (0, -1, 61):
        response = served.http.get(f"/agents/{waiting}/result", params={"timeout": timeout})
        assert response.status_code == 422
    for unknown in (uuid.uuid4(), "nonexistent"):
        response = served.http.get(f"/agents/{unknown}/result", params={"timeout": 30})
        assert response.status_code == 404

    served.worker()
    response = served.http.get(f"/agents/{waiting}/result", params={"timeout": 30})
    assert response.status_code == 200
    assert response.json()["result"]["label"] == "slow"

    failing = _enqueue(served, "sleep_agent", {"fail": "boom"})
    response = served.http.get(f"/agents/{failing}/result", params={"timeout": 30})
    assert response.status_code == 409
    body = response.json()
    assert (body["status"], body["agent_id"]) == ("ERROR", failing)
    assert body["reason"] == "RuntimeError: boom"


def test_cancel_codes_and_409_for_a_canceled_result(served: Served, sqlite_only: None) -> None:
    agent_id = _enqueue(served, "sleep_agent", {"seconds": 30})
    assert served.anon.post(f"/agents/{agent_id}/cancel").status_code == 401
    response = served.http.post(f"/agents/{agent_id}/cancel", headers=AUTH)
    assert (response.status_code, response.json()) == (
        200,
        {"agent_id": agent_id, "canceled": True},
    )
    response = served.http.get(f"/agents/{agent_id}/result", params={"timeout": 10})
    assert response.status_code == 409
    assert response.json()["status"] == "CANCELED"
    response = served.http.post(f"/agents/{agent_id}/cancel", headers=AUTH)
    assert response.status_code == 409
    for unknown in (uuid.uuid4(), "nonexistent"):
        assert served.http.post(f"/agents/{unknown}/cancel", headers=AUTH).status_code == 404


def test_agent_events_stream_and_resume_with_last_event_id(
    served: Served, sqlite_only: None
) -> None:
    agent_id = _queued()
    with served.http.stream("GET", f"/agents/{agent_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        [(state_id, state)] = _events(lines, 1)
        assert (state["kind"], state["status"], state["seq"]) == ("snapshot", "QUEUED", state_id)
        appended = _append(
            Event(agent_id, ax.Status.RUNNING, "Task started", 0, kind=EventKind.STARTED),
            Event(agent_id, ax.Status.RUNNING, "Searching", 30),
            Event(agent_id, ax.Status.RUNNING, "Writing", 80),
        )
        frames = _events(lines, 2)
    assert [(i, f["message"]) for i, f in frames] == [
        (appended[0].seq, "Task started"),
        (appended[1].seq, "Searching"),
    ]
    # The client reconnects with the last id it saw: it gets what came after, then the end.
    _append(Event(agent_id, ax.Status.COMPLETE, "Task completed", 100, kind=EventKind.COMPLETE))
    resumed = served.http.get(
        f"/agents/{agent_id}/events", headers={"Last-Event-ID": str(appended[1].seq)}
    )
    frames = _events(iter(resumed.text.splitlines()))
    assert [(f["message"], f["percentage"]) for _, f in frames] == [
        ("Writing", 80),
        ("Task completed", 100),
    ]
    last_id = frames[-1][0]
    # After the end: 204, which stops an EventSource from reconnecting.
    response = served.http.get(
        f"/agents/{agent_id}/events", headers={"Last-Event-ID": str(last_id)}
    )
    assert response.status_code == 204
    # `after` does the same as the header.
    response = served.http.get(f"/agents/{agent_id}/events", params={"after": appended[1].seq})
    assert [f["message"] for _, f in _events(iter(response.text.splitlines()))] == [
        "Writing",
        "Task completed",
    ]
    assert served.http.get(f"/agents/{uuid.uuid4()}/events").status_code == 404
    assert served.http.get("/agents/nonexistent/events").status_code == 404
    bad = served.http.get(f"/agents/{agent_id}/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 422


def test_all_events_stream_filters_and_resumes(served: Served, sqlite_only: None) -> None:
    research, summary = _queued("research"), _queued("summary")
    with served.http.stream("GET", "/agents/events", params={"task": "research"}) as response:
        lines = response.iter_lines()
        [(state_id, state)] = _events(lines, 1)
        assert state_id is None  # snapshots carry no id on the stream of every run
        assert (state["agent_id"], state["kind"]) == (str(research), "snapshot")
        appended = _append(
            Event(summary, ax.Status.RUNNING, "Summing up", 50),
            Event(research, ax.Status.RUNNING, "Digging", 20),
            Event(research, ax.Status.RUNNING, "Deeper", 60),
        )
        [(first_id, first)] = _events(lines, 1)
    assert (first_id, first["message"], first["task"]) == (appended[1].seq, "Digging", "research")
    with served.http.stream(
        "GET", "/agents/events", headers={"Last-Event-ID": str(appended[0].seq)}
    ) as response:
        frames = _events(response.iter_lines(), 2)
    assert [f["message"] for _, f in frames] == ["Digging", "Deeper"]
    with served.http.stream("GET", "/agents/events", params={"status": "COMPLETE"}) as response:
        lines = response.iter_lines()
        _append(Event(summary, ax.Status.COMPLETE, "Task completed", 100, kind=EventKind.COMPLETE))
        [(_, done)] = _events(lines, 1)
    assert (done["agent_id"], done["status"]) == (str(summary), "COMPLETE")


def test_websocket_sends_events_until_the_end(served: Served, sqlite_only: None) -> None:
    agent_id = _queued()
    with connect(f"{served.ws_url}/agents/{agent_id}/ws", open_timeout=10, **WS_AUTH) as ws:
        state = json.loads(ws.recv(timeout=10))
        assert (state["kind"], state["status"]) == ("snapshot", "QUEUED")
        _append(
            Event(agent_id, ax.Status.RUNNING, "Halfway", 50),
            Event(agent_id, ax.Status.COMPLETE, "Task completed", 100, kind=EventKind.COMPLETE),
        )
        messages = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
        assert [(m["message"], m["percentage"]) for m in messages] == [
            ("Halfway", 50),
            ("Task completed", 100),
        ]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    # Resumed after the report: only the end.
    after = messages[0]["seq"]
    url = f"{served.ws_url}/agents/{agent_id}/ws?after={after}"
    with connect(url, open_timeout=10, **WS_AUTH) as ws:
        assert json.loads(ws.recv(timeout=10))["message"] == "Task completed"
    with connect(f"{served.ws_url}/agents/{uuid.uuid4()}/ws", open_timeout=10, **WS_AUTH) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


def test_dashboard_is_served_from_the_package(served: Served, sqlite_only: None) -> None:
    response = served.http.get("/agents/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "function follow(" in page  # a fetch stream that sends the token, not EventSource
    assert "setInterval(() => {   // ages tick locally" in page  # the only timer: no polling
    assert "http://" not in page and "https://" not in page  # no CDN


def test_openapi_documents_models_and_error_codes(served: Served, sqlite_only: None) -> None:
    schema = httpx.get(served.url.rsplit("/agentexec", 1)[0] + "/openapi.json").json()
    paths = schema["paths"]
    assert set(paths["/agentexec/agents/{agent_id}/result"]["get"]["responses"]) >= {
        "200",
        "404",
        "408",
        "409",
        "422",
    }
    assert set(paths["/agentexec/agents/tasks/{task_name}"]["post"]["responses"]) >= {
        "202",
        "404",
        "422",
    }
    assert set(paths["/agentexec/agents/{agent_id}/cancel"]["post"]["responses"]) >= {
        "200",
        "404",
        "409",
    }
    assert (
        "text/event-stream"
        in paths["/agentexec/agents/events"]["get"]["responses"]["200"]["content"]
    )
    stream = paths["/agentexec/agents/events"]["get"]["responses"]["200"]["content"]
    assert "seq" in stream["text/event-stream"]["schema"]["properties"]
    for name in ("AgentPage", "AgentDetail", "RunEndedBody", "Enqueued"):
        assert name in schema["components"]["schemas"]
    # The mutating endpoints declare the bearer scheme.
    assert paths["/agentexec/agents/{agent_id}/cancel"]["post"]["security"] == [{"HTTPBearer": []}]


@pytest.mark.parametrize("freeze", [True, False])
async def test_the_app_startup_freezes_its_imports_out_of_the_garbage_collector(
    monkeypatch: pytest.MonkeyPatch, freeze: bool
) -> None:
    monkeypatch.setenv("AGENTEXEC_GC_FREEZE", str(freeze).lower())
    get_settings.cache_clear()
    app = FastAPI()
    app.include_router(agentexec.web.create_router(allow_anonymous=True), prefix="/agentexec")
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()
        monkeypatch.undo()
        get_settings.cache_clear()
    assert frozen > 50_000 if freeze else frozen == 0
