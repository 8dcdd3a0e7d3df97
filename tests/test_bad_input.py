"""Bad input gets a specific error and loses nothing, in the library and in the worker."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.config import get_settings
from agentexec.tasks.app import app
from agentexec.testing import wait_for
from agentexec.testing.plugin import StartWorker
from tests.apps import APP_DIR, APP_ENV

pytestmark = pytest.mark.usefixtures("sqlite_only")


def _queued(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        settings = get_settings()
        return int(client.llen(settings.low_queue)) + int(client.llen(settings.high_queue))  # type: ignore[arg-type]
    finally:
        client.close()


async def test_unknown_and_malformed_ids(agentexec_env: dict[str, str]) -> None:
    unknown = uuid.uuid4()
    with pytest.raises(ax.UnknownAgentError, match=str(unknown)) as caught:
        await ax.get_result(unknown, timeout=5)
    assert isinstance(caught.value, KeyError)
    with pytest.raises(ax.UnknownAgentError, match=str(unknown)):
        await ax.cancel(unknown)
    for call in (ax.get_result("not-a-uuid", timeout=5), ax.cancel("not-a-uuid")):
        with pytest.raises(ax.InvalidAgentIdError, match="not-a-uuid"):
            await call
    with pytest.raises(ax.InvalidAgentIdError):
        await ax.enqueue("sleep_agent", {}, agent_id="nope")


@pytest.mark.parametrize("timeout", [0, -1, 10**9])
async def test_get_result_refuses_a_timeout_out_of_range(
    agentexec_env: dict[str, str], timeout: float
) -> None:
    with pytest.raises(ax.InvalidRequestError, match="timeout must be above 0") as caught:
        await ax.get_result(uuid.uuid4(), timeout=timeout)
    assert isinstance(caught.value, ValueError)


async def test_enqueue_refuses_an_unknown_priority_and_an_oversized_context(
    agentexec_env: dict[str, str],
) -> None:
    with pytest.raises(ax.InvalidRequestError, match="unknown priority 'urgent'"):
        await ax.enqueue("sleep_agent", {}, priority="urgent")  # type: ignore[arg-type]
    big = {"label": "x" * (get_settings().max_context_bytes + 1)}
    with pytest.raises(ax.ContextTooLargeError, match="over the limit") as caught:
        await ax.enqueue("sleep_agent", big)
    assert caught.value.size > caught.value.limit
    task = app.tasks["sleep_agent"]
    with pytest.raises(ax.ContextTooLargeError):
        task.delay(big)
    assert _queued(agentexec_env["REDIS_URL"]) == 0  # nothing was sent


@pytest.mark.parametrize(
    ("page", "page_size"), [(0, 20), (-3, 20), (1, 0), (1, get_settings().max_page_size + 1)]
)
def test_list_refuses_pages_out_of_range(
    agentexec_session: Session, page: int, page_size: int
) -> None:
    with pytest.raises(ax.InvalidRequestError):
        ax.activity.list(agentexec_session, page=page, page_size=page_size)


def _publish_raw(payload: bytes) -> None:
    client = redis.Redis.from_url(get_settings().redis_url)
    try:
        client.lpush(get_settings().low_queue, payload)
    finally:
        client.close()


def _publish_pickled(task_id: str) -> None:
    """A protocol-2 message for a known task, serialized with pickle."""
    message = app.amqp.as_task_v2(task_id, "sleep_agent", args=({"label": "pickled"},))
    headers = {**message.headers, "agentexec": 1}
    queue = get_settings().low_queue
    with app.producer_or_acquire() as producer:
        producer.publish(
            message.body,
            serializer="pickle",
            headers=headers,
            routing_key=queue,
            exchange=queue,
            **message.properties,
        )


def _status(session: Session, agent_id: uuid.UUID) -> tuple[str, str] | None:
    session.expire_all()
    activity = ax.activity.detail(session, agent_id)
    if activity is None or activity.status.value in ("QUEUED", "RUNNING"):
        return None
    return activity.status.value, activity.logs[-1].message


async def test_worker_refuses_bad_messages_and_keeps_serving(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    worker = agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)
    # Not JSON at all, then JSON that is no message.
    _publish_raw(b"\x80\x04garbage that is not JSON")
    _publish_raw(b'{"body": "e30=", "headers": {}}')
    # Pickled: refused by content type.
    pickled = uuid.uuid4()
    await asyncio.to_thread(_publish_pickled, str(pickled))
    # A task no worker knows, marked as an agent task.
    unknown = app.send_task(
        "no_such_agent", args=({},), queue=get_settings().low_queue, headers={"agentexec": 1}
    )
    # Schema drift: a context the worker's model refuses (sent around the producer's check).
    drifted = app.send_task(
        "sleep_agent", args=({"seconds": "soon"},), queue=get_settings().low_queue
    )
    # The worker keeps serving.
    fine = await ax.enqueue("sleep_agent", {"label": "fine"})
    assert (await ax.get_result(fine.agent_id, timeout=30))["label"] == "fine"

    ids = {
        "pickled": pickled,
        "unknown": uuid.UUID(unknown.id),
        "drifted": uuid.UUID(drifted.id),
    }
    ended = {
        name: wait_for(lambda i=i: _status(agentexec_session, i), 30, f"{name} recorded")
        for name, i in ids.items()
    }
    assert ended["pickled"][0] == "ERROR" and "pickle" in ended["pickled"][1].lower()
    assert ended["unknown"][0] == "ERROR" and "no_such_agent" in ended["unknown"][1]
    assert ended["drifted"][0] == "ERROR" and "InvalidContextError" in ended["drifted"][1]
    for name in ("unknown", "drifted"):
        with pytest.raises(ax.TaskFailedError):
            await ax.get_result(ids[name], timeout=10)
    assert _queued(get_settings().redis_url) == 0  # every bad message was acknowledged
    unacked = redis.Redis.from_url(get_settings().redis_url).hlen(
        f"{get_settings().queue_prefix}.unacked"
    )
    assert unacked == 0
    assert worker.process is not None and worker.process.poll() is None
