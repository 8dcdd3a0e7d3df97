"""The Celery app that `celery -A agentexec worker` finds, configured for agents.

Configuration comes in three layers, lowest first: agentexec's defaults derived from the
settings (`agentexec.tasks.config`), then `celeryconfig.py` (or the module named by
`CELERY_CONFIG_MODULE`) when it can be imported, then anything set on `app.conf` in code.
All of it is read lazily; creating the app connects to nothing.
"""

from __future__ import annotations

import os

from celery import Celery

from agentexec.config import get_settings
from agentexec.tasks.config import WORKER_STEP, celery_defaults
from agentexec.tasks.queued import QueuedRecorder


def install(app: Celery) -> Celery:
    """Make `app` record its agent tasks: the QUEUED record in every process that publishes,
    and, in its workers, the worker's side (`agentexec.worker`, a bootstep Celery loads by
    name only in a worker). Idempotent; returns `app`."""
    QueuedRecorder.of(app)
    app.steps["worker"].add(WORKER_STEP)
    return app


def create_app(main: str = "agentexec") -> Celery:
    """A Celery app with agentexec's defaults, config module and activity recording."""
    app = Celery(main)
    app.add_defaults(lambda: celery_defaults(get_settings()))
    app.config_from_object(os.environ.get("CELERY_CONFIG_MODULE", "celeryconfig"), silent=True)
    return install(app)


app = create_app()
