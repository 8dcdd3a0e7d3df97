"""The web router while the broker's Redis is stopped: 503 with `Retry-After`, nothing lost."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI

import agentexec.web
from agentexec.testing.plugin import StartWorker
from tests.faults.services import PrivateRedis, app_on, redis_available, require_server
from tests.web.conftest import Served, lifespan, serve, verify_token

#: The database plays no part here: SQLite alone keeps the suite short.
pytestmark = pytest.mark.usefixtures("sqlite_only")


@pytest.fixture
def broker() -> Iterator[PrivateRedis]:
    require_server("Redis", redis_available())
    with PrivateRedis(appendonly=False) as server:
        yield server


@pytest.fixture
def agentexec_redis_url(broker: PrivateRedis) -> str:
    return broker.url


@pytest.fixture
def served(
    agentexec_env: dict[str, str], agentexec_worker: StartWorker, broker: PrivateRedis
) -> Iterator[Served]:
    app = FastAPI(lifespan=lifespan)
    app.include_router(agentexec.web.create_router(auth=verify_token), prefix="/agentexec")
    with app_on(broker.url), serve(app, agentexec_worker) as running:
        yield running


def test_a_stopped_broker_answers_503_with_retry_after(
    served: Served, broker: PrivateRedis
) -> None:
    queued = served.http.post("/agents/tasks/sleep_agent", json={}).json()["agent_id"]
    broker.stop()
    try:
        for method, path in (
            ("POST", "/agents/tasks/sleep_agent"),
            ("GET", "/agents/events"),
            ("GET", f"/agents/{queued}/events"),
        ):
            response = served.http.request(method, path, json={})
            assert response.status_code == 503, (path, response.text)
            assert response.headers["Retry-After"] == "5"
            assert "unavailable" in response.json()["detail"]
            assert "127.0.0.1" not in response.text  # no internals
        # Reads of the database still answer: the run queued before the outage is there.
        assert served.http.get("/agents").json()["total"] == 1
    finally:
        broker.start()
