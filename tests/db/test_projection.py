"""The SQL projection of the event log: idempotent, ordered per run, finished stays finished."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.db import projection
from agentexec.db.models import Activity, ActivityLog
from agentexec.eventlog.event import Event, seq_of
from agentexec.runtime import get_runtime
from agentexec.states import EventKind

S = ax.Status


def _events(agent_id: uuid.UUID, *steps: tuple[ax.Status, str, int | None]) -> list[Event]:
    """Events with consecutive positions, as the log would give them."""
    base = seq_of("1700000000000-0")
    return [
        Event(agent_id, status, message, pct, task="t").appended(base + n)
        for n, (status, message, pct) in enumerate(steps)
    ]


def _apply(*events: Event) -> None:
    with get_runtime().ready_engine().begin() as conn:
        projection.apply(conn, events)


def _log(session: Session, agent_id: uuid.UUID) -> list[tuple[str, str]]:
    session.expire_all()
    activity = ax.activity.detail(session, agent_id)
    assert activity is not None
    return [(log.status.value, log.message) for log in activity.logs]


def test_applying_twice_is_a_no_op(agentexec_session: Session) -> None:
    agent_id = uuid.uuid4()
    events = _events(
        agent_id,
        (S.QUEUED, "Task queued", None),
        (S.RUNNING, "step", 40),
        (S.COMPLETE, "done", 100),
    )
    _apply(*events)
    _apply(*events)
    _apply(events[1])
    assert _log(agentexec_session, agent_id) == [
        ("QUEUED", "Task queued"),
        ("RUNNING", "step"),
        ("COMPLETE", "done"),
    ]
    rows = agentexec_session.scalar(
        select(func.count()).select_from(ActivityLog).where(ActivityLog.agent_id == agent_id)
    )
    assert rows == 3


def test_out_of_order_batches_keep_log_order_and_newest_state(agentexec_session: Session) -> None:
    agent_id = uuid.uuid4()
    queued, started, report, done = _events(
        agent_id,
        (S.QUEUED, "Task queued", None),
        (S.RUNNING, "Task started", 0),
        (S.RUNNING, "half way", 50),
        (S.COMPLETE, "Task completed", 100),
    )
    _apply(queued, done)  # the end got there first (the task writes it synchronously)
    _apply(started, report)  # a slower projector applies the middle later
    activity = ax.activity.detail(agentexec_session, agent_id)
    assert activity is not None
    assert activity.status is S.COMPLETE and activity.latest_completion_percentage == 100
    assert [log.message for log in activity.logs] == [
        "Task queued",
        "Task started",
        "half way",
        "Task completed",
    ]


def test_a_finished_run_never_goes_back_to_running(agentexec_session: Session) -> None:
    agent_id = uuid.uuid4()
    queued, canceled, late, retry = _events(
        agent_id,
        (S.QUEUED, "Task queued", None),
        (S.CANCELED, "Canceled", None),
        (S.RUNNING, "still working", 70),
        (S.QUEUED, "Retry 1 queued", None),
    )
    _apply(queued, canceled, late)  # in one batch
    activity = ax.activity.detail(agentexec_session, agent_id)
    assert activity is not None and activity.status is S.CANCELED
    _apply(late)  # and again, alone
    agentexec_session.expire_all()
    activity = ax.activity.detail(agentexec_session, agent_id)
    assert activity is not None and activity.status is S.CANCELED
    assert activity.logs[-1].message == "still working"  # the log keeps what happened
    _apply(retry)  # a new attempt may move it again
    agentexec_session.expire_all()
    activity = ax.activity.detail(agentexec_session, agent_id)
    assert activity is not None and activity.status is S.QUEUED


def test_events_of_unknown_runs_create_them(agentexec_session: Session) -> None:
    """A run started with `celery call`, which no agentexec producer recorded."""
    agent_id = uuid.uuid4()
    started = Event(agent_id, S.RUNNING, "Task started", 0, kind=EventKind.STARTED, task="x")
    _apply(started.appended(seq_of("1700000000000-5")))
    activity = ax.activity.detail(agentexec_session, agent_id)
    assert activity is not None
    assert (activity.agent_type, activity.status) == ("x", S.RUNNING)


def test_report_without_percentage_keeps_the_last_one(agentexec_session: Session) -> None:
    agent_id = uuid.uuid4()
    _apply(*_events(agent_id, (S.RUNNING, "started", 30), (S.RUNNING, "no number", None)))
    activity = ax.activity.detail(agentexec_session, agent_id)
    assert activity is not None and activity.latest_completion_percentage == 30


@pytest.mark.parametrize("batch", [1, 2], ids=["one event", "a batch"])
def test_every_field_arrives_as_it_was_reported(agentexec_session: Session, batch: int) -> None:
    """Text of any kind (quotes, backslashes, emoji, a NUL that PostgreSQL cannot store),
    the worker and the microseconds of each time survive the trip, alone and in a batch."""
    agent_id = uuid.uuid4()
    at = datetime(2026, 11, 30, 12, 34, 56, 789012, tzinfo=UTC)
    message = 'It\'s "50%" done \\ step 🚀 with\nnewline and a NUL:\x00.'
    events = [
        Event(agent_id, S.RUNNING, message, 55, task="research", worker="w1@host", at=at).appended(
            seq_of("1700000000000-1") + n
        )
        for n in range(batch)
    ]
    _apply(*events)
    run = agentexec_session.get(Activity, agent_id)
    assert run is not None
    logs = agentexec_session.scalars(
        select(ActivityLog).where(ActivityLog.agent_id == agent_id).order_by(ActivityLog.seq)
    ).all()
    stored = message.replace("\x00", "\ufffd") if _dialect() == "postgresql" else message
    assert (run.agent_type, run.status, run.latest_log) == ("research", S.RUNNING, stored)
    assert (run.latest_completion_percentage, run.worker) == (55, "w1@host")
    assert [(log.message, log.completion_percentage) for log in logs] == [(stored, 55)] * batch
    for when in (run.created_at, run.updated_at, logs[0].created_at):
        assert (when if when.tzinfo else when.replace(tzinfo=UTC)) == at  # SQLite's are naive


def _dialect() -> str:
    return get_runtime().ready_engine().dialect.name
