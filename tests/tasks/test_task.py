"""The publish path tells the truth: nothing is queued that is not recorded, and vice versa."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.config import get_settings
from agentexec.db.models import Activity
from agentexec.runtime import Runtime, get_runtime, set_runtime
from tests.apps import APP_DIR, APP_ENV
from tests.faults.services import free_port


def _delay_in_subprocess(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`.delay()` from a fresh process; prints the error's type and message."""
    code = (
        "import agentexec as ax\n"
        "from userapp.worker import sleep_agent\n"
        "try:\n"
        "    sleep_agent.delay({'label': 'x'})\n"
        "except ax.AgentExecError as exc:\n"
        "    print(type(exc).__name__, '|', exc)\n"
        "else:\n"
        "    print('published')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env, **APP_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def _activities(url: str) -> int:
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            return session.scalar(select(func.count()).select_from(Activity)) or 0
    finally:
        engine.dispose()


def test_delay_against_an_unreachable_broker_raises_and_records_nothing(
    agentexec_env: dict[str, str], tmp_path: Path, sqlite_only: None
) -> None:
    database = f"sqlite:///{tmp_path / 'producer.db'}"
    env = {**agentexec_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    out = _delay_in_subprocess({**env, "DATABASE_URL": database})
    assert out.stdout.startswith("BrokerUnavailableError |"), out.stdout + out.stderr
    assert "nothing was queued" in out.stdout
    assert _activities(database) == 0  # no QUEUED row left behind


def test_delay_against_an_unknown_database_raises_and_publishes_nothing(
    agentexec_env: dict[str, str], agentexec_redis_url: str, sqlite_only: None
) -> None:
    base = os.environ["POSTGRES_URL"].rsplit("/", 1)[0]
    env = {**agentexec_env, "DATABASE_URL": f"{base}/agentexec_no_such_database"}
    out = _delay_in_subprocess(env)
    assert out.stdout.startswith("ActivityStoreError |"), out.stdout + out.stderr
    assert "agentexec_no_such_database" in out.stdout and "does not exist" in out.stdout
    client = redis.Redis.from_url(agentexec_redis_url)
    try:
        prefix = env["AGENTEXEC_QUEUE_PREFIX"]
        assert client.llen(f"{prefix}.low") == 0
        assert client.xlen(f"{prefix}.events") == 0
    finally:
        client.close()


def test_delay_with_a_missing_driver_raises(
    agentexec_env: dict[str, str], sqlite_only: None
) -> None:
    env = {**agentexec_env, "DATABASE_URL": "mysql+nosuchdriver://u@127.0.0.1/x"}
    out = _delay_in_subprocess(env)
    assert out.stdout.startswith("ActivityStoreError |"), out.stdout + out.stderr


async def test_a_failed_publish_leaves_no_queued_row(
    agentexec_env: dict[str, str],
    agentexec_redis_url: str,
    agentexec_session: Session,
    sqlite_only: None,
) -> None:
    sys.path.insert(0, str(APP_DIR))
    import userapp.worker  # noqa: F401  (registers the agent tasks here)

    # The queue's key holds a string, so the broker refuses the message (WRONGTYPE).
    client = redis.Redis.from_url(agentexec_redis_url)
    try:
        client.set(get_settings().low_queue, "not a list")
        with pytest.raises(ax.BrokerUnavailableError):
            await ax.enqueue("sleep_agent", {"label": "refused"})
    finally:
        client.delete(get_settings().low_queue)
        client.close()
    # The message and its QUEUED event go to Redis together, or not at all.
    assert ax.activity.list(agentexec_session).total == 0
    client = redis.Redis.from_url(agentexec_redis_url)
    try:
        assert client.xlen(get_runtime().events.key) == 0
    finally:
        client.close()


async def test_concurrent_enqueues_each_get_their_own_outcome(
    agentexec_env: dict[str, str],
    agentexec_redis_url: str,
    agentexec_session: Session,
    sqlite_only: None,
) -> None:
    sys.path.insert(0, str(APP_DIR))
    import userapp.worker  # noqa: F401  (registers the agent tasks here)

    settings = get_settings()
    client = redis.Redis.from_url(agentexec_redis_url)
    try:
        # HIGH is declared by a first run, then the broker refuses HIGH messages (WRONGTYPE):
        # at the flush of their batch, or at the queue's declaration (on another connection).
        first = await ax.enqueue("sleep_agent", {"label": "first"}, priority=ax.Priority.HIGH)
        client.delete(settings.high_queue)
        client.set(settings.high_queue, "not a list")
        outcomes = await asyncio.gather(
            *(
                ax.enqueue(
                    "sleep_agent",
                    {"label": f"run {i}"},
                    priority=ax.Priority.HIGH if i % 5 == 0 else ax.Priority.LOW,
                )
                for i in range(40)
            ),
            return_exceptions=True,
        )
        refused = [o for i, o in enumerate(outcomes) if i % 5 == 0]
        taken = [o for i, o in enumerate(outcomes) if i % 5]
        assert all(isinstance(o, ax.BrokerUnavailableError) for o in refused), refused
        assert "WRONGTYPE" in str(refused[0])
        assert all(isinstance(o, ax.AgentResult) for o in taken), taken
        # Each taken run: one standard Celery message, one QUEUED event, one QUEUED row.
        assert client.llen(settings.low_queue) == len(taken)
        messages = [json.loads(raw) for raw in client.lrange(settings.low_queue, 0, -1)]
        assert {m["headers"]["id"] for m in messages} == {str(o.id) for o in taken}
        assert all(m["headers"]["task"] == "sleep_agent" for m in messages)
        assert all(m["content-type"] == "application/json" for m in messages)
        assert not any("agentexec_event" in m["headers"] for m in messages)
        assert client.xlen(get_runtime().events.key) == len(taken) + 1
    finally:
        client.delete(settings.high_queue)
        client.close()
    page = ax.activity.list(agentexec_session, page_size=100)
    assert {str(item.agent_id) for item in page.items} == {str(o.id) for o in [first, *taken]}
    assert {item.status for item in page.items} == {ax.Status.QUEUED}


def test_tables_are_created_on_first_use_unless_turned_off(
    agentexec_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(APP_DIR))
    from userapp.worker import sleep_agent

    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setattr(get_settings(), "create_tables", False)
    previous = set_runtime(Runtime(database_url=fresh))
    try:
        with pytest.raises(ax.ActivityStoreError, match="AGENTEXEC_CREATE_TABLES"):
            sleep_agent.delay({"label": "no tables"})
        monkeypatch.setattr(get_settings(), "create_tables", True)
        result = sleep_agent.delay({"label": "tables made"})
        with Session(get_runtime().engine) as session:
            activity = ax.activity.detail(session, result.agent_id)
        assert activity is not None and activity.status is ax.Status.QUEUED
    finally:
        get_runtime().stop()
        get_runtime().engine.dispose()
        set_runtime(previous)


async def test_get_result_never_fails_on_a_missing_activity_table(
    agentexec_env: dict[str, str], tmp_path: Path
) -> None:
    agent_id = str(uuid.uuid4())
    ax.app.backend.store_result(agent_id, {"answer": 42}, "SUCCESS")
    previous = set_runtime(Runtime(database_url=f"sqlite:///{tmp_path / 'empty.db'}"))
    try:
        assert await ax.get_result(agent_id, timeout=5) == {"answer": 42}
        with pytest.raises(TimeoutError):
            await ax.get_result(uuid.uuid4(), timeout=1.0)  # unknown, and SQL cannot say
    finally:
        get_runtime().engine.dispose()
        set_runtime(previous)
        ax.app.backend.forget(agent_id)


def test_a_second_app_does_not_write_reports_twice(
    agentexec_session: Session, sqlite_only: None
) -> None:
    from agentexec.testing.plugin import agentexec_flush

    ax.create_app("second")
    agent_id = uuid.uuid4()
    ax.activity.update(agent_id, "once", 10)
    agentexec_flush()
    activity = ax.activity.detail(agentexec_session, agent_id)
    assert activity is not None
    assert [log.message for log in activity.logs] == ["once"]
