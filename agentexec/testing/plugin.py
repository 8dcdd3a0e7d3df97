"""pytest fixtures for testing agent tasks against a real worker, offline.

Installed with agentexec (the `pytest11` entry point), so a project's tests can use them
without imports. Each test gets its own queues (a unique `AGENTEXEC_QUEUE_PREFIX`) and its
own SQLite activity database, so tests never see each other's tasks. Redis comes from
`REDIS_URL` (default `redis://127.0.0.1:6379/0`) and is shared.

Example:
    ```python
    # tests/test_research.py
    import agentexec as ax
    from myapp.worker import ResearchContext

    async def test_research_runs(agentexec_worker, agentexec_session):
        agentexec_worker(module="myapp.worker")       # `python -m myapp.worker` -> pool.run()
        task = await ax.enqueue("research_company", ResearchContext(company="Acme"))
        result = await ax.get_result(task.agent_id, timeout=30)
        assert result["company"] == "Acme"
        assert ax.activity.detail(agentexec_session, task.agent_id).status.value == "COMPLETE"
    ```

    Make the worker's agents offline by giving them a model that needs no key: see
    `agentexec.runners.offline` and `agentexec.testing.openai_server`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy.orm import Session

from agentexec.config import get_settings
from agentexec.db.models import Base
from agentexec.eventlog.event import Event
from agentexec.processes import WorkerProcess, celery_worker_argv
from agentexec.runtime import Runtime, get_runtime, set_runtime

StartWorker = Callable[..., WorkerProcess]


def require_service(name: str, error: Exception) -> None:
    """Skip the test locally when a service is down, but fail it in CI (`CI` is set)."""
    message = f"{name} is not available: {error}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def agentexec_redis_url() -> str:
    """`REDIS_URL`, checked to answer."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        require_service("Redis", exc)
    finally:
        client.close()
    return url


@pytest.fixture
def agentexec_database_url(tmp_path: Path) -> str:
    """The activity database of one test: a new SQLite file. Override it for PostgreSQL."""
    return f"sqlite:///{tmp_path / 'activity.db'}"


@pytest.fixture
def agentexec_env(
    monkeypatch: pytest.MonkeyPatch, agentexec_redis_url: str, agentexec_database_url: str
) -> Iterator[dict[str, str]]:
    """The environment of one test, applied to this process and given to its workers.

    Gives the test queues (and so an event log) of its own, and a runtime of its own bound to
    `agentexec_database_url`, with the tables created and a projector running, so activity
    recorded in the test process reaches SQL without a worker. `agentexec_flush()` waits
    until it has.
    """
    env = {
        "REDIS_URL": agentexec_redis_url,
        "DATABASE_URL": agentexec_database_url,
        "AGENTEXEC_QUEUE_PREFIX": f"test-{uuid.uuid4().hex[:12]}",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    runtime = Runtime(database_url=agentexec_database_url)
    previous = set_runtime(runtime)
    Base.metadata.create_all(runtime.engine)
    runtime.start_projector()
    yield env
    runtime.wait_projected(10)
    runtime.stop()
    runtime.engine.dispose()
    set_runtime(previous)
    _drop_queues(agentexec_redis_url, env["AGENTEXEC_QUEUE_PREFIX"])
    get_settings.cache_clear()


def _drop_queues(url: str, prefix: str) -> None:
    """Delete what is left in a test's queues, and kombu's bindings for them."""
    client = redis.Redis.from_url(url)
    try:
        keys = [*client.scan_iter(f"{prefix}.*"), *client.scan_iter(f"_kombu.binding*{prefix}.*")]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def agentexec_session(agentexec_env: dict[str, str]) -> Iterator[Session]:
    """A session on the test's activity database."""
    with Session(get_runtime().engine) as session:
        yield session


def record_events(*events: Event) -> list[Event]:
    """Append `events` to the event log and write them to SQL, as the publish path does."""
    runtime = get_runtime()
    appended = runtime.events.append(events)
    runtime.write(appended)
    return appended


def agentexec_flush(timeout: float = 30.0) -> None:
    """Wait until the activity this process recorded is in SQL (see `agentexec_env`)."""
    assert get_runtime().wait_projected(timeout), f"activity not projected within {timeout}s"


@pytest.fixture
def agentexec_worker(agentexec_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    """Start real worker processes; all are stopped when the test ends.

    Call it as `agentexec_worker(*extra_args, module=None, cwd=None, env=None)`. With
    `module`, the worker is `python -m module` (a module that calls `pool.run()`); otherwise
    it is `celery -A agentexec worker` plus `extra_args`, such as `"-I", "myapp.worker"`.
    """
    started: list[WorkerProcess] = []

    def start(
        *extra: str,
        module: str | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 60.0,
    ) -> WorkerProcess:
        import sys

        argv = [sys.executable, "-m", module, *extra] if module else celery_worker_argv(*extra)
        full_env = {**os.environ, **agentexec_env, **(env or {})}
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(argv, full_env, cwd or Path.cwd(), log)
        started.append(worker)
        return worker.start(ready_timeout)

    yield start
    for worker in started:
        worker.stop()
