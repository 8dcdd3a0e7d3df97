"""Celery's Redis result backend, without the subscription on every publish.

Celery's Redis backend subscribes the *producer* to each task's result channel as the task is
published, in case the caller later blocks on `AsyncResult.get()`. A web app that enqueues
agents never does: it reads results with `ax.get_result`, which subscribes when asked. The
early subscription costs a round trip on every enqueue, and the messages it collects are never
read. `AsyncResult.get()` still works: it subscribes itself before it waits.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend


class AgentRedisBackend(RedisBackend):
    """The Redis result backend agentexec configures by default."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Subscribe later, when someone waits for the result."""


def backend_url(redis_url: str) -> str:
    """`result_backend` for `redis_url`, in Celery's `class+url` form."""
    return f"agentexec.backend:AgentRedisBackend+{redis_url}"
