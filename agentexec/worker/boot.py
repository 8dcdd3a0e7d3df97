"""The bootstep that makes a Celery worker an agentexec worker.

The app names `AgentWorkerStep` in `app.steps["worker"]` by its import path
(`agentexec.tasks.config.WORKER_STEP`), so Celery loads this package in a worker only: a web
app that enqueues never imports it. The step builds the process's `AgentWorker` before the
pool starts (a prefork child inherits it) and connects the worker's signal handlers.
"""

from __future__ import annotations

from typing import Any

from celery import bootsteps

from agentexec.worker.process import AgentWorker
from agentexec.worker.signals import WorkerSignals


class AgentWorkerStep(bootsteps.Step):
    """The bootstep that makes a Celery worker an agentexec worker."""

    name = "agentexec"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        worker = AgentWorker(parent.app, parent.hostname)
        WorkerSignals(worker).install()
        worker.boot()
