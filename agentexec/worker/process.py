"""What an agentexec worker process owns, in one object, and how it starts and stops.

The worker's bootstep (`agentexec.worker.boot`) makes it before the pool starts; a prefork
pool's child inherits it and gets a loop of its own (`os.register_at_fork`).
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import sys
import weakref
from typing import Any

from celery import Celery
from sqlalchemy.exc import SQLAlchemyError

from agentexec import telemetry
from agentexec.config import get_settings
from agentexec.exceptions import ActivityStoreError
from agentexec.runtime import freeze_startup_objects, get_runtime
from agentexec.tasks import revoked
from agentexec.worker.execution import Execution
from agentexec.worker.heartbeat import Supervisor
from agentexec.worker.loop import EventLoopThread
from agentexec.worker.model_client import size_model_pool
from agentexec.worker.progress import ProgressEvents
from agentexec.worker.shutdown import QuietRequeue, ShutdownTimer

logger = logging.getLogger(__name__)


class AgentWorker:
    """What an agentexec worker process owns: the agents' event loop, the heartbeat and
    reaper, the shutdown timer, the Flower progress events.

    Args:
        app: the worker's Celery app.
        hostname: the worker's node name.
    """

    def __init__(self, app: Celery, hostname: str) -> None:
        self.app = app
        self.hostname = hostname
        #: The loop every agent of this process runs on.
        self.loop = EventLoopThread()
        #: Runs cancelled by the shutdown timeout: their messages go back on the queue.
        self.requeue: set[str] = set()
        #: Runs agent task bodies on the loop (handed to each admitted request).
        self.execute = Execution(self.loop, self.requeue)
        #: Sends status reports to Flower as task events, once one is reported.
        self.progress: ProgressEvents | None = None
        self._supervisor: Supervisor | None = None
        os.register_at_fork(after_in_child=functools.partial(_after_fork, weakref.ref(self)))

    def boot(self) -> None:
        """Before consuming: learn revoked runs, tune the process for thousands of agents (its
        GIL handoffs, garbage collector and model connections), and open (or create) the
        activity tables."""
        revoked.load(self.app)
        settings = get_settings()
        if settings.switch_interval:
            sys.setswitchinterval(settings.switch_interval)
        if settings.gc_threshold:
            gc.set_threshold(settings.gc_threshold, *gc.get_threshold()[1:])
        size_model_pool(settings)
        telemetry.configure("agentexec-worker")  # spans, when OTEL_* variables ask for them
        logging.getLogger("celery.app.trace").addFilter(QuietRequeue())
        runtime = get_runtime()
        runtime.worker = self.hostname
        try:
            runtime.ready_engine()
        except ActivityStoreError as exc:
            logger.error("%s; activity waits in the event log until this is fixed", exc)
        except SQLAlchemyError as exc:
            logger.warning(
                "the activity database is unreachable (%s); activity waits in the event log",
                str(getattr(exc, "orig", None) or exc).strip().splitlines()[0],
            )

    def ready(self) -> None:
        """Consuming: start the heartbeat and reaper, and the projector; freeze the imports'
        objects out of the garbage collector's way (`AGENTEXEC_GC_FREEZE`)."""
        self._supervisor = Supervisor(self.app, self.hostname).start()
        if get_settings().projector:
            get_runtime().start_projector()
        freeze_startup_objects()

    def shutting_down(self) -> None:
        """SIGTERM: in-flight agents get `AGENTEXEC_SHUTDOWN_TIMEOUT`, then are requeued."""
        if self._supervisor is not None:
            ShutdownTimer(get_settings().shutdown_timeout, self.loop, self.requeue).start()

    def report_progress(self, agent_id: Any, message: str, percentage: int | None) -> None:
        """Show a status report in Flower, when the worker sends task events."""
        if not self.app.conf.worker_send_task_events:
            return
        if self.progress is None:
            self.progress = ProgressEvents(self.app, self.hostname)
        self.progress.report(agent_id, message, percentage)

    def stop(self) -> None:
        """Stop beating (telling the others this worker is gone), and stop the loop and the
        process's runtime."""
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None
        self.stop_process()

    def stop_process(self) -> None:
        """Stop what this process runs: Flower events, the loop, the runtime."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.loop.stop()
        get_runtime().stop()
        telemetry.shutdown()


def _after_fork(ref: weakref.ref[AgentWorker]) -> None:
    """A forked child (a prefork pool process) gets a loop of its own; the parent's threads
    did not survive the fork."""
    worker = ref()
    if worker is not None:
        worker.loop = EventLoopThread()
        worker.requeue = set()
        worker.execute = Execution(worker.loop, worker.requeue)
        worker.progress = None
        worker._supervisor = None
