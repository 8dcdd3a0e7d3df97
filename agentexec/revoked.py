"""Revoked runs, remembered in Redis for workers that start later.

Celery keeps revoked ids in each worker's memory, so a worker that starts after the revoke
would run the task anyway. agentexec also keeps them in Redis (a sorted set per queue prefix,
trimmed after `AGENTEXEC_RESULT_EXPIRES`), and every worker loads that set into Celery's
revoked list when it starts.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from celery.worker import state as worker_state

from agentexec.config import get_settings


def _key() -> str:
    return f"{get_settings().queue_prefix}.revoked"


def remember(app: Celery, task_ids: list[str]) -> None:
    """Record revoked ids where workers that start later will find them."""
    backend: Any = app.backend
    client = backend.client
    now = time.time()
    with client.pipeline() as pipe:
        pipe.zadd(_key(), dict.fromkeys(task_ids, now))
        pipe.zremrangebyscore(_key(), "-inf", now - get_settings().result_expires)
        pipe.execute()


def load(app: Celery) -> None:
    """Teach this worker every run revoked while it was down."""
    backend: Any = app.backend
    client = backend.client
    since = time.time() - get_settings().result_expires
    for task_id in client.zrangebyscore(_key(), since, "+inf"):
        worker_state.revoked.add(task_id.decode() if isinstance(task_id, bytes) else task_id)
