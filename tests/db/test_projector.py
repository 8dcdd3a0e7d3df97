"""The projector: takes over a dead projector's events, and trims only what SQL has applied."""

from __future__ import annotations

import contextlib
import uuid

import pytest
import redis
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.config import get_settings
from agentexec.db.projector import Projector
from agentexec.eventlog.event import Event
from agentexec.keys import PROJECTOR_GROUP
from agentexec.runtime import get_runtime
from agentexec.states import EventKind
from agentexec.testing import wait_for


def _run_events(n: int) -> list[Event]:
    agent_id = uuid.uuid4()
    queued = Event(agent_id, ax.Status.QUEUED, "Task queued", kind=EventKind.QUEUED, task="t")
    reports = [Event(agent_id, ax.Status.RUNNING, f"step {i}", 10 * i) for i in range(1, n)]
    return [queued, *reports]


def _read(consumer: str, count: int) -> list[bytes]:
    runtime = get_runtime()
    reply = runtime.events.client().xreadgroup(
        PROJECTOR_GROUP, consumer, {runtime.events.key: ">"}, count=count
    )
    return [entry_id for _, entries in reply for entry_id, _ in entries]  # type: ignore[union-attr]


@pytest.fixture
def log_without_projector(agentexec_env: dict[str, str], sqlite_only: None) -> None:
    """The test's event log and group, with no projector consuming it."""
    runtime = get_runtime()
    runtime.stop_projector()
    with contextlib.suppress(redis.ResponseError):  # the stopped projector made it already
        runtime.events.client().xgroup_create(
            runtime.events.key, PROJECTOR_GROUP, "0", mkstream=True
        )


def test_a_dead_projectors_events_are_taken_over(
    log_without_projector: None, agentexec_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = get_runtime()
    events = runtime.events.append(_run_events(5))
    assert len(_read("dead-projector", 10)) == 5  # delivered, never acknowledged
    monkeypatch.setattr(get_settings(), "projector_claim_idle", 0.3)
    projector = Projector(runtime.ready_engine, runtime.events, name="alive").start()
    try:

        def projected() -> bool:
            agentexec_session.expire_all()
            activity = ax.activity.detail(agentexec_session, events[0].agent_id)
            return activity is not None and len(activity.logs) == 5

        wait_for(projected, 10, "the dead projector's events applied")
        pending = runtime.events.client().xpending(runtime.events.key, PROJECTOR_GROUP)
        wait_for(
            lambda: (
                runtime.events.client().xpending(runtime.events.key, PROJECTOR_GROUP)["pending"]
                == 0
            ),
            5,
            "acknowledged",
        )
        assert pending is not None
    finally:
        projector.stop()


def test_trim_keeps_every_event_not_yet_applied(
    log_without_projector: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = get_runtime()
    client, key = runtime.events.client(), runtime.events.key
    runtime.events.append(_run_events(10))
    delivered = _read("a", 6)
    client.xack(key, PROJECTOR_GROUP, *delivered[:4])  # 4 applied, 2 in hand, 4 not read
    monkeypatch.setattr(get_settings(), "events_maxlen", 3)
    projector = Projector(runtime.ready_engine, runtime.events, name="trimmer")
    projector.trim()
    assert client.xlen(key) == 6  # the length says 3, but 6 are not applied yet
    client.xack(key, PROJECTOR_GROUP, *delivered[4:], *_read("a", 10))
    projector.trim()
    assert client.xlen(key) == 3


def test_trim_by_age_keeps_what_is_recent(
    log_without_projector: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = get_runtime()
    client, key = runtime.events.client(), runtime.events.key
    runtime.events.append(_run_events(4))
    client.xack(key, PROJECTOR_GROUP, *_read("a", 10))
    projector = Projector(runtime.ready_engine, runtime.events, name="trimmer")
    projector.trim()
    assert client.xlen(key) == 4  # applied, but younger than the retention
    monkeypatch.setattr(get_settings(), "events_retention", -60)  # "older than a minute ahead"
    projector.trim()
    assert client.xlen(key) == 1  # never below the last delivered entry


def test_malformed_entries_are_skipped_and_acknowledged(
    log_without_projector: None, agentexec_session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry nobody can read (broken JSON, or the one-field-per-attribute format of the
    first event log, which is no longer read) is logged, acknowledged and does not hold back
    the events after it."""
    runtime = get_runtime()
    client, key = runtime.events.client(), runtime.events.key
    queued, *reports = _run_events(3)
    runtime.events.append([queued])
    legacy = {
        "agent_id": str(queued.agent_id),
        "kind": "report",
        "status": "RUNNING",
        "message": "legacy step",
        "at": repr(queued.at.timestamp()),
        "percentage": "20",
    }
    client.xadd(key, legacy)  # type: ignore[arg-type]
    client.xadd(key, {"event": "{not json"})
    runtime.events.append(reports[1:])
    projector = Projector(runtime.ready_engine, runtime.events, name="reader").start()
    try:

        def projected() -> bool:
            agentexec_session.expire_all()
            activity = ax.activity.detail(agentexec_session, queued.agent_id)
            return activity is not None and len(activity.logs) == 2

        wait_for(projected, 10, "the readable events applied")
        wait_for(
            lambda: client.xpending(key, PROJECTOR_GROUP)["pending"] == 0, 5, "all acknowledged"
        )
    finally:
        projector.stop()
    activity = ax.activity.detail(agentexec_session, queued.agent_id)
    assert activity is not None
    assert [log.message for log in activity.logs] == ["Task queued", "step 2"]
    assert activity.latest_completion_percentage == 20
    assert caplog.text.count("skipping malformed entry") == 2
    assert "malformed event" in caplog.text
