"""Celery's Redis result backend, tuned for many agents per process.

Three changes to `celery.backends.redis.RedisBackend`:

- No subscription on every publish. Celery's Redis backend subscribes the *producer* to each
  task's result channel as the task is published, in case the caller later blocks on
  `AsyncResult.get()`. A web app that enqueues agents never does: it reads results with
  `ax.get_result`, which subscribes when asked. The early subscription costs a round trip on
  every enqueue, and the messages it collects are never read. `AsyncResult.get()` still
  works: it subscribes itself before it waits.
- One connection pool per process. Celery keeps a backend per thread, and each opens its own
  pool; with agentexec's thread slots that is a Redis connection (and its handshake) per
  slot. The backends of one process share a pool here, keyed by connection parameters. It
  is a blocking pool: with more threads than connections, a thread waits for a free one
  (stores take well under a millisecond) instead of failing with MaxConnectionsError.
- A revoked run's result carries the reason given to `ax.cancel`, where Celery's workers
  store their own words ("revoked", "terminated"); see `agentexec.tasks.revoked`.
"""

from __future__ import annotations

import os
import threading
from typing import Any, ClassVar

import redis
from celery.backends.redis import RedisBackend

from agentexec.tasks import revoked

#: What Celery's workers give as the reason of a revoke.
_CELERY_REASONS = frozenset({"", "revoked", "terminated"})


class AgentRedisBackend(RedisBackend):
    """The Redis result backend agentexec configures by default."""

    #: Connections per process when `redis_max_connections` is not set.
    pool_size: ClassVar[int] = 50

    _pools: ClassVar[dict[tuple[int, str], Any]] = {}
    _pools_lock: ClassVar[threading.Lock] = threading.Lock()

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Subscribe later, when someone waits for the result."""

    def mark_as_revoked(self, task_id: str, reason: str = "", *args: Any, **kwargs: Any) -> Any:
        """Store the revoke with the caller's reason, when `ax.cancel` gave one."""
        if reason in _CELERY_REASONS:
            reason = revoked.reason(self.client, task_id) or reason
        return super().mark_as_revoked(task_id, reason, *args, **kwargs)

    def _get_pool(self, **params: Any) -> Any:
        key = (os.getpid(), repr(sorted(params.items())))  # a forked child gets its own
        with self._pools_lock:
            pool = self._pools.get(key)
            if pool is None:
                params["max_connections"] = params.get("max_connections") or self.pool_size
                pool = redis.BlockingConnectionPool(timeout=60, **params)  # type: ignore[no-untyped-call]
                self._pools[key] = pool
            return pool
