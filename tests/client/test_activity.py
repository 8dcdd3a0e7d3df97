"""The activity API the web app reads, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
import userapp.worker  # noqa: F401  (registers sleep_agent in this process)
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.db.models import ActivityLog
from agentexec.eventlog.event import Event
from agentexec.runtime import get_runtime
from agentexec.states import EventKind, utcnow
from agentexec.testing import wait_for
from agentexec.testing.plugin import StartWorker, agentexec_flush, record_events
from tests.apps import APP_DIR, APP_ENV


def _queued(agent_type: str = "research", created_at: datetime | None = None) -> uuid.UUID:
    agent_id = uuid.uuid4()
    at = created_at or utcnow()
    record_events(Event(agent_id, ax.Status.QUEUED, "Task queued", task=agent_type, at=at))
    return agent_id


def _end(agent_id: uuid.UUID, status: ax.Status, message: str, pct: int | None = None) -> None:
    record_events(Event(agent_id, status, message, pct, kind=EventKind(status.value.lower())))


def test_detail_has_logs_oldest_first(agentexec_session: Session) -> None:
    agent_id = _queued()
    ax.activity.update(agent_id, "Searching", 10)
    ax.activity.update(agent_id, "Reading", 60)
    agentexec_flush()
    activity = ax.activity.detail(agentexec_session, agent_id)
    assert activity is not None
    assert activity.status.value == "RUNNING"
    assert activity.latest_completion_percentage == 60
    assert [(log.message, log.completion_percentage) for log in activity.logs] == [
        ("Task queued", None),
        ("Searching", 10),
        ("Reading", 60),
    ]
    assert activity.logs[0].created_at <= activity.logs[-1].created_at
    assert activity.updated_at == activity.logs[-1].created_at
    assert activity.created_at.tzinfo is not None


def test_detail_is_none_for_unknown_and_malformed_ids(agentexec_session: Session) -> None:
    assert ax.activity.detail(agentexec_session, "nonexistent") is None
    assert ax.activity.detail(agentexec_session, "") is None
    assert ax.activity.detail(agentexec_session, uuid.uuid4()) is None
    assert ax.activity.detail(agentexec_session, str(uuid.uuid4())) is None


def test_list_pages_newest_first(agentexec_session: Session) -> None:
    now = utcnow()
    ids = [_queued(created_at=now + timedelta(seconds=i)) for i in range(5)]
    page = ax.activity.list(agentexec_session, page=1, page_size=2)
    assert (page.total, page.page, page.page_size, page.pages) == (5, 1, 2, 3)
    assert [item.agent_id for item in page.items] == [ids[4], ids[3]]
    last = ax.activity.list(agentexec_session, page=3, page_size=2)
    assert [item.agent_id for item in last.items] == [ids[0]]
    assert last.items[0].latest_log == "Task queued"


def test_list_shows_error_and_canceled_rows(agentexec_session: Session) -> None:
    failed, canceled = _queued(), _queued()
    _end(failed, ax.Status.ERROR, "ValueError: bad")
    _end(canceled, ax.Status.CANCELED, "Canceled")
    statuses = {i.agent_id: i.status for i in ax.activity.list(agentexec_session).items}
    assert statuses == {failed: ax.Status.ERROR, canceled: ax.Status.CANCELED}


def test_cancel_pending_and_count_active(agentexec_session: Session) -> None:
    queued, running, done = _queued(), _queued(), _queued()
    ax.activity.update(running, "Working", 30)
    _end(done, ax.Status.COMPLETE, "Task completed", 100)
    agentexec_flush()
    assert ax.activity.count_active(agentexec_session) == 2
    assert ax.activity.cancel_pending(agentexec_session) == 2
    assert ax.activity.count_active(agentexec_session) == 0
    assert ax.activity.cancel_pending(agentexec_session) == 0
    for agent_id in (queued, running):
        activity = ax.activity.detail(agentexec_session, agent_id)
        assert activity is not None and activity.status is ax.Status.CANCELED
        assert activity.logs[-1].status is ax.Status.CANCELED
    finished = ax.activity.detail(agentexec_session, done)
    assert finished is not None and finished.status is ax.Status.COMPLETE


def test_update_rejects_bad_input() -> None:
    import pytest

    with pytest.raises(ValueError, match="percentage"):
        ax.activity.update(uuid.uuid4(), "x", 101)
    with pytest.raises(KeyError):
        ax.activity.update("not-a-uuid", "x", 1)


def test_report_for_unknown_run_does_not_sink_the_batch(agentexec_session: Session) -> None:
    known = _queued()
    ax.activity.update(uuid.uuid4(), "orphan report", 5)
    ax.activity.update(known, "kept", 40)
    agentexec_flush()
    activity = ax.activity.detail(agentexec_session, known)
    assert activity is not None and activity.logs[-1].message == "kept"


def test_guide_cleanup_sql_deletes_activities_with_their_logs(
    agentexec_session: Session,
) -> None:
    old, fresh = _queued(), _queued()
    ax.activity.update(old, "step", 50)
    agentexec_flush()
    agentexec_session.execute(
        text("UPDATE agentexec_activity SET updated_at = :t WHERE agent_id = :a"),
        {
            "t": utcnow() - timedelta(days=40),
            "a": old if get_runtime().engine.dialect.name == "postgresql" else old.hex,
        },
    )
    agentexec_session.commit()
    # The guide's own statement: a plain string and a naive UTC datetime.
    cutoff = datetime.utcnow() - timedelta(days=30)
    agentexec_session.execute(
        "DELETE FROM agentexec_activity WHERE updated_at < :cutoff", {"cutoff": cutoff}
    )
    agentexec_session.commit()
    assert ax.activity.detail(agentexec_session, old) is None
    assert ax.activity.detail(agentexec_session, fresh) is not None
    orphans = agentexec_session.scalar(
        select(func.count()).select_from(ActivityLog).where(ActivityLog.agent_id == old)
    )
    assert orphans == 0


async def test_cancel_pending_leaves_waiting_and_running_runs_alone(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    """Startup cleanup is safe with many replicas: a run a live worker holds, and one that
    waits in its queue, are left alone; only a run whose message is nowhere is canceled."""
    agentexec_worker("-I", "userapp.worker", "-c", "1", cwd=APP_DIR, env=APP_ENV)
    running = (await ax.enqueue("sleep_agent", {"seconds": 60})).agent_id

    def started() -> bool:
        agentexec_session.expire_all()
        detail = ax.activity.detail(agentexec_session, running)
        return detail is not None and detail.status is ax.Status.RUNNING

    wait_for(started, 30, "the first run to start")
    waiting = (await ax.enqueue("sleep_agent", {"seconds": 60})).agent_id
    stale = _queued("sleep_agent")  # a row whose message the broker never had
    try:
        assert ax.activity.cancel_pending(agentexec_session) == 1
        agentexec_session.expire_all()
        statuses = {
            agent_id: ax.activity.detail(agentexec_session, agent_id).status  # type: ignore[union-attr]
            for agent_id in (running, waiting, stale)
        }
        assert statuses == {
            running: ax.Status.RUNNING,
            waiting: ax.Status.QUEUED,
            stale: ax.Status.CANCELED,
        }
        # The stale run is revoked too: a message that turned up would not run.
        with pytest.raises(ax.TaskCanceledError, match="Canceled at startup"):
            await ax.get_result(stale, timeout=5)
    finally:
        for agent_id in (running, waiting):
            await ax.cancel(agent_id)
