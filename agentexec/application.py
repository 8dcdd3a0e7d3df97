"""The Celery app that `celery -A agentexec worker` finds, configured for agents.

Configuration comes in three layers, lowest first: agentexec's defaults derived from the
settings (`REDIS_URL`, `AGENTEXEC_*`), then `celeryconfig.py` (or the module named by
`CELERY_CONFIG_MODULE`) when it can be imported, then anything set on `app.conf` in code.
All of it is read lazily; creating the app connects to nothing.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from agentexec.activity.recorder import ActivityRecorder
from agentexec.backend import backend_url
from agentexec.broker import TRANSPORT
from agentexec.config import Settings, get_settings
from agentexec.queues import declare_queues


def celery_defaults(settings: Settings) -> dict[str, Any]:
    """Celery settings for agent workloads, each with its reason."""
    return {
        "broker_url": settings.redis_url,
        # kombu's Redis transport, appending each agent's QUEUED event with its message (for
        # other schemes, such as rediss://, the recorder appends it after the publish).
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
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": settings.restore_interval,
            "unacked_restore_throttle": 1,
            # Unacknowledged messages are kept per queue prefix, like the queues: a deployment
            # sharing the Redis db never restores another's runs with its own visibility
            # timeout (kombu's default keys are global to the db).
            "unacked_key": f"{settings.queue_prefix}.unacked",
            "unacked_index_key": f"{settings.queue_prefix}.unacked_index",
            "unacked_mutex_key": f"{settings.queue_prefix}.unacked_mutex",
        },
        "worker_prefetch_multiplier": 1,
        # At-least-once: a task is acknowledged when it ends, and redelivered if its
        # worker dies first.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_connection_retry_on_startup": True,
        # Agents wait on models: many cheap thread slots per process, one shared loop.
        "worker_pool": (
            "agentexec.workerpool:AgentThreadPool" if settings.pool == "threads" else settings.pool
        ),
        "worker_concurrency": settings.num_workers,
        # Flower.
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
    }


def create_app(main: str = "agentexec") -> Celery:
    """A Celery app with agentexec's defaults, config module and activity recorder."""
    app = Celery(main)
    app.add_defaults(lambda: celery_defaults(get_settings()))
    app.config_from_object(os.environ.get("CELERY_CONFIG_MODULE", "celeryconfig"), silent=True)
    ActivityRecorder.of(app)
    return app


app = create_app()
