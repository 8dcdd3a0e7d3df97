"""Cancelling runs, through Celery's own revoke."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.orm import Session

from agentexec.activity import store
from agentexec.activity.models import ACTIVE, Status
from agentexec.activity.queries import detail
from agentexec.activity.store import Entry
from agentexec.ids import parse_agent_id


async def cancel(agent_id: uuid.UUID | str, reason: str = "Canceled") -> bool:
    """Cancel a run. Returns False when it had already ended.

    A queued run is revoked and never starts. A running one is revoked with
    `terminate=True`: its worker cancels the agent's coroutine, and the run ends CANCELED.

    Raises:
        KeyError: no run has this id.
    """
    return await asyncio.to_thread(_cancel, parse_agent_id(agent_id), reason)


def _cancel(agent_id: uuid.UUID, reason: str) -> bool:
    from agentexec.application import app

    with Session(store.get_engine()) as session:
        activity = detail(session, agent_id)
    if activity is None:
        raise KeyError(str(agent_id))
    if activity.status not in ACTIVE:
        return False
    app.control.revoke(str(agent_id), terminate=True)
    if activity.status is Status.QUEUED:
        # No worker may be up to hear the revoke: record it where the next one will look.
        app.backend.mark_as_revoked(str(agent_id), reason)
        store.write([Entry(agent_id, Status.CANCELED, reason)])
    return True
