"""agentexec's Celery settings, derived from its own (`agentexec.config`), each with its reason.

Light on purpose: the health probe (`agentexec check`) reads the transport options without
loading the Celery app. Classes are named by their import path, which Celery resolves where
they are used: the transport and the result backend in every process that publishes or reads
results, the pool and the bootstep only in a worker. So a web app that enqueues never loads
the worker's code (`agentexec.worker`).
"""

from __future__ import annotations

from typing import Any

from agentexec.config import Settings
from agentexec.tasks.queues import declare_queues

#: The `broker_transport` that publishes an agent's message and its QUEUED event together.
TRANSPORT = "agentexec.tasks.transport:Transport"
#: The result backend class, as `result_backend` names it (`<class>+<redis url>`).
BACKEND = "agentexec.tasks.backend:AgentRedisBackend"
#: The worker pools of `AGENTEXEC_POOL=lanes` (the default) and `AGENTEXEC_POOL=threads`.
POOLS = {
    "lanes": "agentexec.worker.lanes:AgentLanePool",
    "threads": "agentexec.worker.threads:AgentThreadPool",
}
#: The worker bootstep that runs agents and records their activity (`app.steps["worker"]`).
WORKER_STEP = "agentexec.worker.boot:AgentWorkerStep"


def backend_url(redis_url: str) -> str:
    """`result_backend` for `redis_url`, in Celery's `class+url` form."""
    return f"{BACKEND}+{redis_url}"


def transport_options(settings: Settings) -> dict[str, Any]:
    """kombu's keys of unacknowledged messages, per queue prefix like the queues, and their
    visibility timeout.

    kombu's default keys are global to the Redis db, and any connection that consumes (a
    worker, or a probe waiting for its replies) sweeps them back to their queues: a deployment
    sharing the db would restore another's runs with its own visibility timeout.
    """
    keys = settings.keys
    return {
        "visibility_timeout": settings.visibility_timeout,
        "unacked_key": keys.unacked,
        "unacked_index_key": keys.unacked_index,
        "unacked_mutex_key": keys.unacked_mutex,
    }


def celery_defaults(settings: Settings) -> dict[str, Any]:
    """Celery settings for agent workloads, each with its reason."""
    return {
        "broker_url": settings.redis_url,
        # kombu's Redis transport, appending each agent's QUEUED event with its message (for
        # other schemes, such as rediss://, `tasks.queued` appends it after the publish).
        "broker_transport": TRANSPORT if settings.redis_url.startswith("redis://") else None,
        "result_backend": backend_url(settings.redis_url),
        # JSON on the wire, never pickle.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "result_expires": settings.result_expires,
        # A result whose store fails (the broker's Redis restarting) is retried, not lost: a
        # lost store would run the agent again on redelivery.
        "result_backend_always_retry": True,
        "result_backend_max_retries": 20,
        "result_backend_max_sleep_between_retries_ms": 2_000,
        # Two queues, HIGH drained first; nothing reserved beyond what can start now.
        "task_queues": declare_queues(settings),
        "task_default_queue": settings.low_queue,
        "broker_transport_options": {
            "queue_order_strategy": "priority",
            "unacked_restore_interval": settings.restore_interval,
            "unacked_restore_throttle": 1,
            # Unacknowledged messages are kept per queue prefix, like the queues: a deployment
            # sharing the Redis db never restores another's runs with its own visibility
            # timeout (kombu's default keys are global to the db).
            **transport_options(settings),
        },
        "worker_prefetch_multiplier": 1,
        # A task's `rate_limit` is global, kept by agentexec in Redis
        # (`agentexec.tasks.ratelimits`), not Celery's per worker.
        "worker_disable_rate_limits": True,
        # At-least-once: a task is acknowledged when it ends, and redelivered if its
        # worker dies first.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_connection_retry_on_startup": True,
        # Agents wait on models: many cheap slots per process, one shared loop.
        "worker_pool": POOLS.get(settings.pool, settings.pool),
        "worker_concurrency": settings.num_workers,
        # Schedules (`agentexec beat`): celery-redbeat keeps them in the broker's Redis, under
        # the queue prefix, with its lock so that one beat runs.
        "timezone": settings.timezone,
        "redbeat_redis_url": settings.redis_url,
        "redbeat_key_prefix": f"{settings.queue_prefix}.redbeat:",  # (as redbeat's own "redbeat:")
        "redbeat_redis_options": {},
        "redbeat_lock_timeout": 30,
        # `celery beat` and `worker -B` too, not only `agentexec beat`.
        "beat_scheduler": "agentexec.tasks.schedules:Scheduler",
        "beat_max_loop_interval": 5,
        # Flower.
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
    }
