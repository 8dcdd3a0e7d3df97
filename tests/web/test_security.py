"""The router is secure by default, over real HTTP: auth on every endpoint, runs scoped to
their owner, bounded bodies and streams, errors people can act on, a locked-down dashboard."""

from __future__ import annotations

import importlib
import json
import logging
import socket
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Cookie, Depends, FastAPI, Header, HTTPException
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import agentexec as ax
import agentexec.web
from agentexec.config import get_settings
from agentexec.eventlog.event import Event
from agentexec.states import EventKind
from agentexec.testing.plugin import StartWorker, agentexec_flush, record_events
from tests.web.conftest import AUTH, Served, lifespan, serve, verify_token

#: The database plays no part here: SQLite alone keeps the suite short.
pytestmark = pytest.mark.usefixtures("sqlite_only")


def _queued(owner: str | None = None, task: str = "research") -> uuid.UUID:
    agent_id = uuid.uuid4()
    event = Event(
        agent_id, ax.Status.QUEUED, "Task queued", kind=EventKind.QUEUED, task=task, owner=owner
    )
    record_events(event)
    return agent_id


def _routes(served: Served, agent_id: uuid.UUID) -> list[tuple[str, str]]:
    """Every HTTP endpoint of the router, as (method, path) with a real run's id."""
    schema = httpx.get(served.url.rsplit("/agentexec", 1)[0] + "/openapi.json").json()
    return [
        (
            method.upper(),
            path.replace("{agent_id}", str(agent_id))
            .replace("{task_name}", "t")
            .replace("{call_id}", "call_1"),
        )
        for path, operations in schema["paths"].items()
        for method in operations
    ]


def test_create_router_needs_auth_or_says_it_is_open(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="auth=") as refused:
        agentexec.web.create_router()
    assert "allow_anonymous=True" in str(refused.value)
    router_module = importlib.import_module("agentexec.web.router")
    monkeypatch.setattr(router_module, "_warned_anonymous", False)
    with caplog.at_level(logging.WARNING, logger="agentexec.web.router"):
        agentexec.web.create_router(allow_anonymous=True)
        agentexec.web.create_router(allow_anonymous=True)
    warnings = [r for r in caplog.records if "allow_anonymous=True" in r.getMessage()]
    assert len(warnings) == 1


def test_every_endpoint_refuses_an_unauthenticated_request(served: Served) -> None:
    agent_id = _queued()
    routes = _routes(served, agent_id)
    # list, events, dashboard, enqueue, detail, result, cancel, approvals, events
    assert len(routes) == 9
    for method, path in routes:
        path = path.removeprefix("/agentexec")
        for headers in ({}, {"Authorization": "Bearer wrong-token"}):
            response = served.anon.request(method, path, headers=headers, json={})
            assert response.status_code in (401, 403), (method, path, response.status_code)
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{served.ws_url}/agents/{agent_id}/ws", open_timeout=10)
    assert refused.value.response.status_code in (401, 403)
    # The dashboard's refusal is the page itself, asking for a token; it holds no data.
    page = served.anon.get("/agents/dashboard")
    assert page.status_code in (401, 403) and str(agent_id) not in page.text
    assert 'id="token"' in page.text


def test_read_auth_relaxes_reads_only_when_given(agentexec_env: dict[str, str]) -> None:
    def anyone() -> None:
        return None

    app = FastAPI(lifespan=lifespan)
    router = agentexec.web.create_router(auth=verify_token, read_auth=anyone)
    app.include_router(router, prefix="/agentexec")
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        assert client.get("/agentexec/agents").status_code == 200
        response = client.post("/agentexec/agents/tasks/sleep_agent", json={})
        assert response.status_code in (401, 403)


@pytest.fixture
def scoped(agentexec_env: dict[str, str], agentexec_worker: StartWorker) -> Iterator[Served]:
    """The router scoped by owner: the caller's owner is its `X-User`, after the token."""

    def user(
        _: Annotated[str, Depends(verify_token)], x_user: Annotated[str | None, Header()] = None
    ) -> str:
        if not x_user:
            raise HTTPException(403, "no user")
        return x_user

    app = FastAPI(lifespan=lifespan)
    app.include_router(
        agentexec.web.create_router(auth=verify_token, owner=user), prefix="/agentexec"
    )
    with serve(app, agentexec_worker) as running:
        yield running


def _as(user: str) -> dict[str, str]:
    return {**AUTH, "X-User": user}


def _frames(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def test_another_owners_run_is_a_404_everywhere(scoped: Served) -> None:
    alices = _queued("alice")
    bobs = _queued("bob")
    http = scoped.http
    page = http.get("/agents", headers=_as("alice")).json()
    assert [item["agent_id"] for item in page["items"]] == [str(alices)]
    assert page["items"][0]["owner"] == "alice"
    assert http.get(f"/agents/{alices}", headers=_as("alice")).status_code == 200
    for method, path in (
        ("GET", f"/agents/{bobs}"),
        ("GET", f"/agents/{bobs}/result?timeout=1"),
        ("POST", f"/agents/{bobs}/cancel"),
        ("GET", f"/agents/{bobs}/events"),
        ("GET", f"/agents/{bobs}/events?after=1"),
    ):
        response = http.request(method, path, headers=_as("alice"))
        assert response.status_code == 404, (method, path, response.text)
        unknown = http.request(
            method, path.replace(str(bobs), str(uuid.uuid4())), headers=_as("alice")
        )
        assert response.json()["detail"].split()[:4] == unknown.json()["detail"].split()[:4]
    url = f"{scoped.ws_url}/agents/{bobs}/ws"
    with connect(url, open_timeout=10, additional_headers=_as("alice")) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
    # Bob's run is untouched by Alice's cancel.
    assert http.get(f"/agents/{bobs}", headers=_as("bob")).json()["status"] == "QUEUED"
    # A run enqueued through the router is its caller's.
    response = http.post("/agents/tasks/sleep_agent", json={}, headers=_as("carol"))
    carols = response.json()["agent_id"]
    assert http.get(f"/agents/{carols}", headers=_as("carol")).json()["owner"] == "carol"
    assert http.get(f"/agents/{carols}", headers=_as("alice")).status_code == 404


def test_the_stream_of_every_run_shows_only_the_callers_runs(scoped: Served) -> None:
    alices, bobs = _queued("alice"), _queued("bob")
    with scoped.http.stream("GET", "/agents/events", headers=_as("alice")) as response:
        lines = response.iter_lines()
        snapshot = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        assert snapshot["agent_id"] == str(alices)
        record_events(
            Event(bobs, ax.Status.RUNNING, "bob's secret", 10, owner="bob"),
            Event(alices, ax.Status.RUNNING, "alice's step", 20),  # owner known from SQL
        )
        live = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
    assert (live["agent_id"], live["message"], live["owner"]) == (
        str(alices),
        "alice's step",
        "alice",
    )
    # Resumed from the start: the whole history, still only Alice's.
    with scoped.http.stream(
        "GET", "/agents/events", params={"after": 1}, headers=_as("alice")
    ) as response:
        lines = response.iter_lines()
        seen = []
        for line in lines:
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
            if len(seen) == 2:
                break
    assert {event["agent_id"] for event in seen} == {str(alices)}
    assert [event["message"] for event in seen] == ["Task queued", "alice's step"]


def test_a_body_over_the_limit_is_refused_before_it_is_read(served: Served) -> None:
    limit = get_settings().max_context_bytes
    host, port = served.url.removeprefix("http://").split("/")[0].split(":")
    # Chunked, with no declared length: the answer comes once the limit is passed, while
    # most of a 10 MB body is still unsent.
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = (
            "POST /agentexec/agents/tasks/sleep_agent HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nAuthorization: {AUTH['Authorization']}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(head.encode())
        chunk = b" " * 65_536
        sent = 0
        while sent <= 2 * limit:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        answer = sock.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert sent < 10_000_000 / 4
    # With a declared length: refused from the header alone.
    response = served.http.post("/agents/tasks/sleep_agent", content=b"x" * 10_000_000)
    assert response.status_code == 413
    assert "over" in response.json()["detail"]
    # The context limit of agentexec itself: 413 too.
    big = {"label": "x" * (limit - 100), "seconds": 0, "fail": "y" * 200}
    response = served.http.post("/agents/tasks/sleep_agent", json=big)
    assert response.status_code == 413
    assert served.http.get("/agents").json()["total"] == 0


@pytest.mark.parametrize("bad", ["0", "-5", "x", "1.5"])
def test_bad_positions_are_422_and_websocket_1008(served: Served, bad: str) -> None:
    agent_id = _queued()
    for path in ("/agents/events", f"/agents/{agent_id}/events"):
        assert served.http.get(path, headers={"Last-Event-ID": bad}).status_code == 422
        if bad != "x" and bad != "1.5":
            assert served.http.get(path, params={"after": bad}).status_code == 422
    url = f"{served.ws_url}/agents/{agent_id}/ws?after={bad}"
    with connect(url, open_timeout=10, additional_headers=AUTH) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_streams_are_capped_per_process(
    agentexec_env: dict[str, str], agentexec_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "max_streams", 1)
    app = FastAPI(lifespan=lifespan)
    app.include_router(agentexec.web.create_router(auth=verify_token), prefix="/agentexec")
    agent_id = _queued()
    with serve(app, agentexec_worker) as served:
        with served.http.stream("GET", "/agents/events") as first:
            lines = first.iter_lines()  # kept: a collected iterator closes the connection
            next(lines)
            refused = served.http.get(f"/agents/{agent_id}/events")
            assert refused.status_code == 503 and refused.headers["Retry-After"]
            with connect(f"{served.ws_url}/agents/{agent_id}/ws", additional_headers=AUTH) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        # The first stream's slot came back when it closed.
        with served.http.stream("GET", f"/agents/{agent_id}/events") as again:
            assert again.status_code == 200


def test_a_fresh_database_reads_as_empty(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentexec.db.models import Base
    from agentexec.runtime import get_runtime

    runtime = get_runtime()
    Base.metadata.drop_all(runtime.engine)
    runtime._prepared.clear()
    monkeypatch.setattr(get_settings(), "create_tables", False)
    page = served.http.get("/agents")
    assert (page.status_code, page.json()["total"], page.json()["items"]) == (200, 0, [])
    assert served.http.get(f"/agents/{uuid.uuid4()}").status_code == 404


def test_an_internal_error_answers_an_error_id_and_logs_the_detail(
    served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from agentexec.web import reads

    def broken(*args: Any) -> None:
        raise RuntimeError("secret internals: password=hunter2")

    monkeypatch.setattr(reads, "page", broken)
    with caplog.at_level(logging.ERROR, logger="agentexec.web.guard"):
        response = served.http.get("/agents")
    body = response.json()
    assert response.status_code == 500
    assert "hunter2" not in response.text and body["error_id"] in body["detail"]
    assert any(body["error_id"] in r.getMessage() and r.exc_info for r in caplog.records)


def test_the_dashboard_is_locked_down(served: Served) -> None:
    response = served.http.get("/agents/dashboard")
    policy = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    assert "'unsafe-inline'" not in policy and "script-src 'sha256-" in policy
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "localStorage.setItem" not in response.text
    assert "sessionStorage.setItem" in response.text


def test_cross_site_writes_need_a_bearer_token(
    agentexec_env: dict[str, str], agentexec_worker: StartWorker
) -> None:
    def session_or_token(
        cookie: Annotated[str | None, Cookie(alias="session")] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> str:
        if cookie == "alice-session" or authorization == AUTH["Authorization"]:
            return "ok"
        raise HTTPException(401, "sign in")

    app = FastAPI(lifespan=lifespan)
    app.include_router(agentexec.web.create_router(auth=session_or_token), prefix="/agentexec")
    with serve(app, agentexec_worker) as served:
        here = served.url.rsplit("/agentexec", 1)[0]
        url = "/agents/tasks/sleep_agent"
        cookie = {"Cookie": "session=alice-session"}
        # Cookie auth: the request's origin decides.
        foreign = {"Origin": "https://evil.example", **cookie}
        assert served.anon.post(url, json={}, headers=foreign).status_code == 403
        assert served.anon.post(url, json={}, headers=cookie).status_code == 403  # no Origin
        cross = {"Sec-Fetch-Site": "cross-site", "Origin": here, **cookie}
        assert served.anon.post(url, json={}, headers=cross).status_code == 403
        same = {"Origin": here, "Sec-Fetch-Site": "same-origin", **cookie}
        assert served.anon.post(url, json={}, headers=same).status_code == 202
        # Reads are not state-changing: a cookie alone will do.
        assert served.anon.get("/agents", headers=cookie).status_code == 200
        # A bearer token, which a browser never adds by itself, passes from anywhere.
        response = served.http.post(url, json={}, headers={"Origin": "https://evil.example"})
        assert response.status_code == 202


def test_an_owner_over_its_daily_budget_gets_a_429(
    scoped: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`AGENTEXEC_OWNER_DAILY_TOKENS`: an owner whose runs spent it today is refused with 429
    and why; nothing is queued for it. Another owner still enqueues."""
    spent = _queued("alice")
    record_events(
        Event(spent, ax.Status.RUNNING, "", kind=EventKind.USAGE,
              data={"model": "gpt-4o", "requests": 1, "input": 900, "output": 200}),
    )  # fmt: skip
    agentexec_flush()
    monkeypatch.setattr(ax.get_settings(), "owner_daily_tokens", 1000)
    response = scoped.http.post("/agents/tasks/sleep_agent", json={}, headers=_as("alice"))
    assert response.status_code == 429, response.text
    assert "owner 'alice' daily budget exceeded: 1,100 tokens" in response.json()["detail"]
    page = scoped.http.get("/agents", headers=_as("alice")).json()
    assert [item["agent_id"] for item in page["items"]] == [str(spent)]  # nothing queued
    response = scoped.http.post("/agents/tasks/sleep_agent", json={}, headers=_as("bob"))
    assert response.status_code == 202, response.text
