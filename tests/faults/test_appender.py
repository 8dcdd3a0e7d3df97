"""The appender's buffer is bounded: while the log's Redis is away, status reports coalesce
(each run's newest kept) and lifecycle events wait for room; none of the latter is lost."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator

import pytest

from agentexec.eventlog.appender import EventAppender
from agentexec.eventlog.event import Event
from agentexec.runtime import get_runtime
from agentexec.states import EventKind, Status
from agentexec.testing import wait_for
from tests.faults.services import PrivateRedis, redis_available, require_server

#: The database plays no part here: SQLite alone keeps the suite short.
pytestmark = pytest.mark.usefixtures("sqlite_only")


@pytest.fixture
def log_redis() -> Iterator[PrivateRedis]:
    require_server("Redis", redis_available())
    with PrivateRedis(appendonly=False) as server:
        yield server


@pytest.fixture
def agentexec_redis_url(log_redis: PrivateRedis) -> str:
    return log_redis.url


def test_reports_coalesce_and_lifecycle_events_wait_for_room(
    agentexec_env: dict[str, str], log_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    log = get_runtime().events
    appender = EventAppender(log, capacity=10)
    runs = [uuid.uuid4() for _ in range(3)]
    log_redis.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="agentexec.eventlog.appender"):
            for step in range(50):
                for agent_id in runs:
                    appender.submit(Event(agent_id, Status.RUNNING, f"step {step}", step))
            ended = threading.Event()

            def end_first_run() -> None:  # a worker thread: it waits for room
                appender.submit_and_wait(
                    Event(runs[0], Status.COMPLETE, "Task completed", 100, kind=EventKind.COMPLETE),
                    timeout=60,
                )
                ended.set()

            threading.Thread(target=end_first_run, daemon=True).start()
            assert not ended.wait(0.5)  # no room while Redis is away: it waits, not dropped
            log_redis.start()
            wait_for(ended.is_set, 30, "the end to be appended")
            assert appender.flush(30)
    finally:
        if not log_redis.running:
            log_redis.start()
        appender.stop()
    entries = log.client().xrange(log.key)
    events = [Event.from_entry(i, f) for i, f in entries]  # type: ignore[union-attr]
    assert len(events) < 3 * 50  # coalesced
    for agent_id in runs:
        mine = [e for e in events if e.agent_id == agent_id]
        reports = [e.percentage for e in mine if e.kind is EventKind.REPORT]
        assert reports == sorted(reports), "a run's reports keep their order"
        assert reports[-1] == 49, "each run's newest report is kept"
    first = [e for e in events if e.agent_id == runs[0]]
    assert first[-1].kind is EventKind.COMPLETE  # its held report went out before its end
    assert "coalescing status reports" in caplog.text
    assert "status reports were coalesced" in caplog.text
