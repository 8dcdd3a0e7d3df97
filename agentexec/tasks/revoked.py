"""Revoked runs, remembered in Redis for workers that start later, with their reasons.

Celery keeps revoked ids in each worker's memory, so a worker that starts after the revoke
would run the task anyway. agentexec also keeps them in Redis (a sorted set per queue prefix,
trimmed after `AGENTEXEC_RESULT_EXPIRES`), and every worker loads that set into Celery's
revoked list when it starts.

The reason given to `ax.cancel` is kept beside it, under `agentexec.cancel-reason.<id>` (not
under the queue prefix: like the results, it is read by every worker on the Redis, and a run's
id is unique). Celery stores a revoked run's result with its own words ("revoked",
"terminated"); agentexec's result backend and its workers (`agentexec.worker.signals`) put
the caller's reason in their place.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from celery import Celery
from celery.worker import state as worker_state

from agentexec.config import get_settings


def _key() -> str:
    return f"{get_settings().queue_prefix}.revoked"


def _reason_key(task_id: str) -> str:
    return f"agentexec.cancel-reason.{task_id}"


def remember(app: Celery, task_ids: list[str], reason: str | None = None) -> None:
    """Record revoked ids, and why, where workers that start later will find them."""
    backend: Any = app.backend
    client = backend.client
    settings = get_settings()
    now = time.time()
    with client.pipeline() as pipe:
        pipe.zadd(_key(), dict.fromkeys(task_ids, now))
        pipe.zremrangebyscore(_key(), "-inf", now - settings.result_expires)
        if reason is not None:
            for task_id in task_ids:
                pipe.set(_reason_key(task_id), reason, ex=max(1, int(settings.result_expires)))
        pipe.execute()


def reason(client: Any, task_id: str) -> str | None:
    """The reason a run was revoked with, if `remember` was given one and Redis can say."""
    try:
        value = client.get(_reason_key(task_id))
    except redis.RedisError:
        return None
    return value.decode() if isinstance(value, bytes) else value


def load(app: Celery) -> None:
    """Teach this worker every run revoked while it was down."""
    backend: Any = app.backend
    client = backend.client
    since = time.time() - get_settings().result_expires
    for task_id in client.zrangebyscore(_key(), since, "+inf"):
        worker_state.revoked.add(task_id.decode() if isinstance(task_id, bytes) else task_id)
