"""The worker's signal handlers, connected in one place (`celery/fixups/django.py` style).

`WorkerSignals(worker).install()` connects every signal a worker listens to; each handler
first checks that the signal concerns its app's agent tasks (signals fire for every task).
Every change becomes an event in the event log; the end of a run is also written to SQL at
once (`agentexec.worker.recording`).

Where they fire:

- `task_prerun`, `task_postrun`, `task_success`, `task_failure`, `task_retry`, in the process
  running the task (the pool's process). `task_prerun` admits the delivery
  (`agentexec.worker.delivery`) and hands the request its `execute`.
- `task_revoked`, `task_rejected`, `task_unknown`, and `task_failure` for a lost child, in
  the worker's main process.
- `worker_ready`, `worker_shutting_down`, `worker_shutdown`, `worker_process_shutdown`: the
  worker's lifecycle (`AgentWorker`).
- `status_reported` (agentexec's own): a status report, shown in Flower.
"""

from __future__ import annotations

import logging
from typing import Any, Self

from celery import signals, states

from agentexec.client.activity import status_reported
from agentexec.eventlog.event import Event
from agentexec.exceptions import InvalidAgentIdError, describe
from agentexec.ids import parse_agent_id
from agentexec.runtime import get_runtime
from agentexec.states import EventKind, Status
from agentexec.tasks import revoked
from agentexec.tasks.queued import (
    AGENT_HEADER,
    OWNER_HEADER,
    RESUME_HEADER,
    is_agent_task,
)
from agentexec.worker import delivery
from agentexec.worker.execution import take_slot
from agentexec.worker.process import AgentWorker
from agentexec.worker.recording import TASK_COMPLETED, record_end, was_recorded

logger = logging.getLogger(__name__)


class WorkerSignals:
    """Records the activity of one worker's agent tasks, from Celery's signals."""

    def __init__(self, worker: AgentWorker) -> None:
        self.worker = worker
        self.app = worker.app

    def install(self) -> Self:
        """Connect the handlers; returns self."""
        for signal, handler in (
            (signals.task_prerun, self.on_task_prerun),
            (signals.task_postrun, self.on_task_postrun),
            (signals.task_success, self.on_task_success),
            (signals.task_failure, self.on_task_failure),
            (signals.task_retry, self.on_task_retry),
            (signals.task_revoked, self.on_task_revoked),
            (signals.task_rejected, self.on_task_rejected),
            (signals.task_unknown, self.on_task_unknown),
            (signals.worker_ready, self.on_worker_ready),
            (signals.worker_shutting_down, self.on_worker_shutting_down),
            (signals.worker_shutdown, self.on_worker_shutdown),
            (signals.worker_process_shutdown, self.on_worker_process_shutdown),
            (status_reported, self.on_status_reported),
        ):
            signal.connect(handler, weak=False)
        return self

    def _is_agent_task(self, task: Any) -> bool:
        return is_agent_task(self.app, task)

    def _is_mine(self, sender: Any) -> bool:
        return getattr(sender, "app", None) is self.app

    # The task's process

    def on_task_prerun(
        self,
        sender: Any = None,
        task_id: str | None = None,
        args: Any = None,
        kwargs: Any = None,
        **_: Any,
    ) -> None:
        """Admit the delivery, start the run's journal, record that it started."""
        if not self._is_agent_task(sender) or task_id is None:
            return
        request = sender.request
        agent_id = parse_agent_id(task_id)
        loop = self.worker.loop
        retries = request.retries or 0
        resumes = int(getattr(request, RESUME_HEADER, 0) or 0)
        deliveries = delivery.admit(
            self.app, task_id, retries, request.hostname, loop.is_running, resumes
        )
        request.agentexec_execute = self.worker.execute
        if deliveries is None:
            # Delivered again after it finished (its ack was lost): acknowledge it unrun.
            request.agentexec_skip = True
            logger.warning("run %s delivered again after it finished; not run again", task_id)
            return
        request.agentexec_deliveries = deliveries
        slot = take_slot(sender, args, kwargs)
        if isinstance(slot, str):  # parked: it never started
            request.agentexec_parked = slot
            return
        request.agentexec_slot = slot
        if deliveries > 1:
            message = f"Task started again (delivery {deliveries})"
        elif (request.delivery_info or {}).get("redelivered"):
            message = "Task started again"
        else:
            message = "Task started"
        appender = get_runtime().appender
        owner = getattr(request, OWNER_HEADER, None)
        request.agentexec_journal = appender.start_journal(agent_id, sender.name, owner)
        appender.submit(
            Event(
                agent_id,
                Status.RUNNING,
                message,
                0,
                kind=EventKind.STARTED,
                task=sender.name,
                worker=request.hostname,
                owner=owner,
            )
        )

    def on_task_postrun(self, sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        if self._is_agent_task(sender) and task_id is not None:
            delivery.release_delivery(task_id)
            journal = getattr(sender.request, "agentexec_journal", None)
            get_runtime().appender.end_journal(parse_agent_id(task_id), journal)

    def on_task_success(self, sender: Any = None, **_: Any) -> None:
        if self._is_agent_task(sender) and not was_recorded(sender):
            journal = getattr(sender.request, "agentexec_journal", None)
            record_end(sender.request.id, Status.COMPLETE, TASK_COMPLETED, 100, journal=journal)

    def on_task_failure(
        self,
        sender: Any = None,
        task_id: str | None = None,
        exception: BaseException | None = None,
        **_: Any,
    ) -> None:
        if self._is_agent_task(sender) and task_id is not None and not was_recorded(sender):
            journal = getattr(sender.request, "agentexec_journal", None)
            record_end(task_id, Status.ERROR, describe(exception), journal=journal)

    def on_task_retry(
        self, sender: Any = None, request: Any = None, reason: Any = None, **_: Any
    ) -> None:
        # The task body logged the failed attempt before the retry was published, and the
        # publish logged "Retry N queued". Writing here would race with the next attempt.
        if self._is_agent_task(sender) and not was_recorded(sender):
            logger.info("agent %s retrying: %s", getattr(request, "id", "?"), reason)

    # The worker's main process

    def on_task_revoked(
        self,
        sender: Any = None,
        request: Any = None,
        terminated: bool = False,
        expired: bool = False,
        **_: Any,
    ) -> None:
        if not self._is_agent_task(sender) or request is None:
            return
        if terminated:
            self.worker.loop.cancel(str(request.id))
        if expired:
            reason = "Expired before it started"
        else:
            backend: Any = self.app.backend
            reason = revoked.reason(backend.client, str(request.id)) or "Canceled"
        record_end(request.id, Status.CANCELED, reason)

    def on_task_rejected(self, message: Any = None, exc: Any = None, **_: Any) -> None:
        self._from_message(message, f"Rejected by the worker: {describe(exc)}")

    def on_task_unknown(
        self, message: Any = None, name: str | None = None, exc: Any = None, **_: Any
    ) -> None:
        self._from_message(message, f"No worker knows the task {name!r}: {describe(exc)}")

    def _from_message(self, message: Any, reason: str) -> None:
        headers = getattr(message, "headers", None) or {}
        if not headers.get(AGENT_HEADER):
            return
        try:
            agent_id = parse_agent_id(headers.get("id", ""))
        except InvalidAgentIdError:
            logger.error("agent task message without a valid id: %r", headers)
            return
        record_end(agent_id, Status.ERROR, reason, task=headers.get("task"))
        if self.app.backend.get_state(str(agent_id)) not in states.READY_STATES:
            # So that waiters hear of it at once (Celery stores none for a rejected message).
            self.app.backend.mark_as_failure(str(agent_id), RuntimeError(reason))

    # The worker's lifecycle

    def on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        if self._is_mine(sender):
            self.worker.ready()

    def on_worker_shutting_down(self, how: str = "", **_: Any) -> None:
        if how == "Warm":
            self.worker.shutting_down()

    def on_worker_shutdown(self, sender: Any = None, **_: Any) -> None:
        if self._is_mine(sender):
            self.worker.stop()

    def on_worker_process_shutdown(self, **_: Any) -> None:
        self.worker.stop_process()

    def on_status_reported(
        self,
        agent_id: Any = None,
        message: str = "",
        percentage: int | None = None,
        **_: Any,
    ) -> None:
        self.worker.report_progress(agent_id, message, percentage)
