"""Shutdown that fits container platforms: after SIGTERM, in-flight agents get
`AGENTEXEC_SHUTDOWN_TIMEOUT` seconds; those still running are then cancelled and their
messages requeued at once, for another worker to start again."""

from __future__ import annotations

import logging
import os
import signal
import threading

from celery.exceptions import Reject

from agentexec.worker.loop import EventLoopThread

logger = logging.getLogger(__name__)

#: The reason of the `Reject` that puts a run's message back on its queue at shutdown.
REQUEUED_AT_SHUTDOWN = "requeued at shutdown"


class QuietRequeue(logging.Filter):
    """Drops the traceback Celery logs with a rejected task, for runs requeued at shutdown:
    they are an expected part of a shutdown, logged once by agentexec."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, Reject) and REQUEUED_AT_SHUTDOWN in str(exc):
            record.exc_info = None
            record.exc_text = None
        return True


class ShutdownTimer:
    """After SIGTERM: wait `timeout`, then cancel what still runs on `loop`, marking each in
    `requeue` so its task body puts its message back on the queue."""

    def __init__(self, timeout: float, loop: EventLoopThread, requeue: set[str]) -> None:
        self.timeout = timeout
        self.loop = loop
        self.requeue = requeue
        self._thread = threading.Thread(target=self._run, name="agentexec-shutdown", daemon=True)

    def start(self) -> None:
        """Start counting (from a signal handler: it only starts a thread)."""
        self._thread.start()

    def _run(self) -> None:
        if self.loop.wait_idle(self.timeout):
            return
        keys = self.loop.running_keys()
        logger.warning(
            "shutdown timeout (%ss): cancelling %d agent(s) still running, to requeue them",
            self.timeout,
            len(keys),
        )
        for key in keys:
            self.requeue.add(key)
            self.loop.cancel(key)
        if self.loop.wait_idle(4.0):
            return
        logger.error("agents did not stop within 4s of their cancellation: cold shutdown")
        os.kill(os.getpid(), signal.SIGQUIT)
