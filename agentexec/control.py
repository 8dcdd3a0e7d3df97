"""Cancelling runs, through Celery's own revoke.

Celery keeps revoked ids in each worker's memory, so a worker that starts after the revoke
would run the task anyway. agentexec also keeps them in Redis (a sorted set per queue prefix,
trimmed after `AGENTEXEC_RESULT_EXPIRES`), and every worker loads that set into Celery's
revoked list when it starts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from celery import Celery, signals
from celery.worker import state as worker_state
from sqlalchemy.orm import Session

from agentexec.activity import database, store
from agentexec.activity.models import ACTIVE, Status
from agentexec.activity.queries import detail
from agentexec.activity.store import Entry
from agentexec.config import get_settings
from agentexec.ids import parse_agent_id


async def cancel(agent_id: uuid.UUID | str, reason: str = "Canceled") -> bool:
    """Cancel a run. Returns False when it had already ended.

    A queued run is revoked and never starts, even on a worker that starts later. A running
    one is revoked with `terminate=True`: its worker cancels the agent's coroutine, and the
    run ends CANCELED.

    Raises:
        KeyError: no run has this id.
    """
    return await asyncio.to_thread(_cancel, parse_agent_id(agent_id), reason)


def _cancel(agent_id: uuid.UUID, reason: str) -> bool:
    from agentexec.application import app

    with Session(database.get_engine()) as session:
        activity = detail(session, agent_id)
    if activity is None:
        raise KeyError(str(agent_id))
    if activity.status not in ACTIVE:
        return False
    remember_revoked(app, [str(agent_id)])
    app.control.revoke(str(agent_id), terminate=True)
    if activity.status is Status.QUEUED:
        # Waiters learn it from the result backend; the worker that takes it will skip it.
        app.backend.mark_as_revoked(str(agent_id), reason)
        store.write([Entry(agent_id, Status.CANCELED, reason)])
    return True


def _revoked_key() -> str:
    return f"{get_settings().queue_prefix}.revoked"


def remember_revoked(app: Celery, task_ids: list[str]) -> None:
    """Record revoked ids where workers that start later will find them."""
    backend: Any = app.backend
    client = backend.client
    now = time.time()
    with client.pipeline() as pipe:
        pipe.zadd(_revoked_key(), dict.fromkeys(task_ids, now))
        pipe.zremrangebyscore(_revoked_key(), "-inf", now - get_settings().result_expires)
        pipe.execute()


@signals.worker_init.connect
def _load_revoked(sender: Any = None, **_: Any) -> None:
    """Before a worker consumes anything, teach it every run revoked while it was down."""
    app = getattr(sender, "app", None)
    if app is None:
        return
    client: Any = app.backend.client
    since = time.time() - get_settings().result_expires
    for task_id in client.zrangebyscore(_revoked_key(), since, "+inf"):
        worker_state.revoked.add(task_id.decode() if isinstance(task_id, bytes) else task_id)
