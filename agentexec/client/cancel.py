"""Cancelling runs, through Celery's own revoke.

A queued run is revoked and never starts, even on a worker that starts later (see
`agentexec.tasks.revoked`). A running one is revoked with `terminate=True`: its worker cancels the
agent's coroutine, and the run ends CANCELED.
"""

from __future__ import annotations

import asyncio
import uuid

from celery import states
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from agentexec.client.activity import detail
from agentexec.eventlog.event import Event
from agentexec.exceptions import ActivityStoreError, UnknownAgentError
from agentexec.ids import parse_agent_id
from agentexec.runtime import get_runtime
from agentexec.states import ACTIVE, EventKind, Status
from agentexec.tasks import revoked
from agentexec.tasks.app import app


async def cancel(agent_id: uuid.UUID | str, reason: str = "Canceled") -> bool:
    """Cancel a run. Returns False when it had already ended.

    While the activity database is unreachable the run is canceled all the same, and its
    CANCELED row appears when the database is back.

    Raises:
        UnknownAgentError: no run has this id (a KeyError).
        InvalidAgentIdError: the id is not a UUID (a KeyError).
    """
    return await asyncio.to_thread(_cancel, parse_agent_id(agent_id), reason)


def _cancel(agent_id: uuid.UUID, reason: str) -> bool:
    runtime = get_runtime()
    try:
        with Session(runtime.engine) as session:
            activity = detail(session, agent_id)
    except (SQLAlchemyError, ActivityStoreError):
        status = None  # the database cannot say: cancel whatever state the run is in
    else:
        if activity is None:
            raise UnknownAgentError(agent_id)
        if activity.status not in ACTIVE:
            return False
        status = activity.status
    task_id = str(agent_id)
    revoked.remember(app, [task_id], reason)
    if app.backend.get_state(task_id) not in states.READY_STATES:
        # Waiters learn it, with its reason, from the result backend. Stored before the
        # broadcast: every Celery worker that hears it stores a pending run's result as
        # revoked with its own reason, "revoked", unless one is there.
        app.backend.mark_as_revoked(task_id, reason)
    # A queued run is skipped by the worker that takes it; a running one is ended by its own.
    app.control.revoke(task_id, terminate=True)
    if status is not Status.RUNNING:
        events = runtime.events.record(
            [Event(agent_id, Status.CANCELED, reason, kind=EventKind.CANCELED)]
        )
        try:
            runtime.write(events)
        except ActivityStoreError:
            pass
    return True
