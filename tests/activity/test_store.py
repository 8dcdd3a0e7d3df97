"""The SQL behind the activity log: the publish path's single statement, batches, commit mode."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.activity import database, store
from agentexec.activity.store import Entry


def test_record_queued_creates_then_requeues(agentexec_session: Session) -> None:
    agent_id = uuid.uuid4()
    store.record_queued(Entry(agent_id, ax.Status.QUEUED, "Task queued", agent_type="t"))
    store.write([Entry(agent_id, ax.Status.ERROR, "boom")])
    store.record_queued(Entry(agent_id, ax.Status.QUEUED, "Retry 1 queued", agent_type="t"))
    activity = ax.activity.detail(agentexec_session, agent_id)
    assert activity is not None
    assert activity.status is ax.Status.QUEUED
    assert [log.message for log in activity.logs] == ["Task queued", "boom", "Retry 1 queued"]
    page = ax.activity.list(agentexec_session)
    assert page.items[0].latest_log == "Retry 1 queued"


def test_write_creates_missing_rows_only_when_asked(agentexec_session: Session) -> None:
    known, unknown = uuid.uuid4(), uuid.uuid4()
    started = Entry(known, ax.Status.RUNNING, "Task started", 0, agent_type="t", worker="w1")
    store.write([started], [started])
    store.write([Entry(known, ax.Status.RUNNING, "step", None)])
    activity = ax.activity.detail(agentexec_session, known)
    assert activity is not None
    assert activity.latest_completion_percentage == 0  # a report without one keeps it
    assert ax.activity.detail(agentexec_session, unknown) is None


def test_postgres_activity_writes_skip_the_wal_flush(
    agentexec_database_url: str, agentexec_session: Session
) -> None:
    if not agentexec_database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite has no synchronous_commit")
    # An engine agentexec creates: every connection skips the flush.
    with database.get_engine().connect() as conn:
        assert conn.execute(text("SHOW synchronous_commit")).scalar() == "off"
    # The user's own engine: only agentexec's statements do, for their own transaction.
    users = create_engine(agentexec_database_url)
    try:
        database.bind(users)
        with users.begin() as conn:
            entry = Entry(uuid.uuid4(), ax.Status.QUEUED, "Task queued", agent_type="t")
            store.record_queued_pg(conn, entry, synchronous=False)
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "off"
        store.write([Entry(entry.agent_id, ax.Status.RUNNING, "step")])
        with users.begin() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
        activity = ax.activity.detail(agentexec_session, entry.agent_id)
        assert activity is not None and activity.logs[-1].message == "step"
    finally:
        users.dispose()
