"""Turns Celery's task signals into activity rows, like `celery/fixups/django.py`.

Signals fire for every task in the app, so each handler first checks that the task is an
agent task. Where they fire:

- `before_task_publish` in the producer: QUEUED, written before the message leaves, so a
  status request right after enqueue finds the run.
- `task_prerun`, `task_success`, `task_failure`, `task_retry` in the process running the
  task: RUNNING, COMPLETE 100, ERROR with the reason, QUEUED again.
- `task_revoked`, `task_rejected`, `task_unknown` and `task_failure` for a lost child
  (`WorkerLostError`) in the worker's main process.
- `status_reported`, agentexec's own signal, on the agent's event loop: a RUNNING log row.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, ClassVar, Self

from celery import Celery, signals, states

from agentexec.activity import store
from agentexec.activity.models import Status
from agentexec.activity.signals import status_reported
from agentexec.activity.store import Entry
from agentexec.activity.writer import writer
from agentexec.exceptions import InvalidAgentIdError
from agentexec.ids import parse_agent_id

logger = logging.getLogger(__name__)

#: Message header that marks an agent task, for workers that do not know the task.
AGENT_HEADER = "agentexec"
#: Seconds a terminal write may hold the pool thread before the task is acknowledged.
TERMINAL_WAIT = 30.0


class ActivityRecorder:
    """Connects every signal agentexec records activity from."""

    _installed: ClassVar[weakref.WeakKeyDictionary[Celery, ActivityRecorder]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, app: Celery) -> None:
        self.app = app

    @classmethod
    def of(cls, app: Celery) -> ActivityRecorder:
        """The recorder of `app`, installed on first use."""
        recorder = cls._installed.get(app)
        return recorder if recorder is not None else cls(app).install()

    def install(self) -> Self:
        """Connect the handlers; returns self."""
        self._installed[self.app] = self
        for signal, handler in (
            (signals.before_task_publish, self.on_before_task_publish),
            (signals.task_prerun, self.on_task_prerun),
            (signals.task_success, self.on_task_success),
            (signals.task_failure, self.on_task_failure),
            (signals.task_retry, self.on_task_retry),
            (signals.task_revoked, self.on_task_revoked),
            (signals.task_rejected, self.on_task_rejected),
            (signals.task_unknown, self.on_task_unknown),
            (status_reported, self.on_status_reported),
        ):
            signal.connect(handler, weak=False)
        return self

    def is_agent_task(self, task: Any) -> bool:
        """Whether `task` (a task or a task name) is an agent task of this app."""
        from agentexec.tasks import AgentTask

        if isinstance(task, str):
            task = self.app.tasks.get(task)
        return isinstance(task, AgentTask) and task.app is self.app

    # Producer

    def on_before_task_publish(
        self, sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if headers is None or not self.is_agent_task(sender):
            return
        headers[AGENT_HEADER] = 1
        retries = headers.get("retries") or 0
        entry = Entry(
            parse_agent_id(headers["id"]),
            Status.QUEUED,
            f"Retry {retries} queued" if retries else "Task queued",
            agent_type=str(sender),
        )
        # Synchronous: the row must exist before the message can reach a worker.
        store.record_queued(entry)

    # Worker, task process

    def on_task_prerun(self, sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        if not self.is_agent_task(sender) or task_id is None:
            return
        request = sender.request
        redelivered = (request.delivery_info or {}).get("redelivered")
        entry = Entry(
            parse_agent_id(task_id),
            Status.RUNNING,
            "Task started again (redelivered)" if redelivered else "Task started",
            0,
            agent_type=sender.name,
            worker=sender.request.hostname,
        )
        writer.submit(entry, ensure=True)

    def finished(
        self, task: Any, error: BaseException | None = None, *, retrying: bool = False
    ) -> None:
        """Record a run's end from inside the task body, before Celery stores its result.

        Celery stores the result before it sends `task_success` or `task_failure`, so a
        client could see the result while the activity still says RUNNING. The body calls
        this first; the signal handlers then skip the runs it has recorded.
        """
        # The run's RUNNING entry (which creates a missing row) is ahead in the writer's queue.
        if error is None:
            self._terminal(task.request.id, Status.COMPLETE, "Task completed", 100, ensure=False)
        elif retrying:
            message = f"Attempt failed, retrying: {describe(error)}"
            self._terminal(task.request.id, Status.QUEUED, message, ensure=False)
        else:
            self._terminal(task.request.id, Status.ERROR, describe(error), ensure=False)
        task.request.agentexec_recorded = True

    def on_task_success(self, sender: Any = None, **_: Any) -> None:
        if self.is_agent_task(sender) and not _recorded(sender):
            self._terminal(sender.request.id, Status.COMPLETE, "Task completed", 100)

    def on_task_failure(
        self,
        sender: Any = None,
        task_id: str | None = None,
        exception: BaseException | None = None,
        **_: Any,
    ) -> None:
        if self.is_agent_task(sender) and task_id is not None and not _recorded(sender):
            self._terminal(task_id, Status.ERROR, describe(exception))

    def on_task_retry(
        self, sender: Any = None, request: Any = None, reason: Any = None, **_: Any
    ) -> None:
        # The task body logged the failed attempt before the retry was published, and the
        # publish logged "Retry N queued". Writing here would race with the next attempt,
        # which may already have finished, and leave the run looking QUEUED.
        if self.is_agent_task(sender) and not _recorded(sender):
            logger.info("agent %s retrying: %s", getattr(request, "id", "?"), reason)

    # Worker, main process

    def on_task_revoked(
        self,
        sender: Any = None,
        request: Any = None,
        terminated: bool = False,
        expired: bool = False,
        **_: Any,
    ) -> None:
        if not self.is_agent_task(sender) or request is None:
            return
        if terminated:
            from agentexec.loop import event_loop

            event_loop.cancel(str(request.id))
        reason = "Expired before it started" if expired else "Canceled"
        self._terminal(request.id, Status.CANCELED, reason)

    def on_task_rejected(self, message: Any = None, exc: Any = None, **_: Any) -> None:
        self._from_message(message, f"Rejected by the worker: {describe(exc)}")

    def on_task_unknown(
        self, message: Any = None, name: str | None = None, exc: Any = None, **_: Any
    ) -> None:
        self._from_message(message, f"No worker knows the task {name!r}: {describe(exc)}")

    # Agent, on the event loop

    def on_status_reported(
        self,
        sender: Any = None,
        agent_id: Any = None,
        message: str = "",
        percentage: int | None = None,
        status: Status = Status.RUNNING,
        **_: Any,
    ) -> None:
        writer.submit(Entry(parse_agent_id(agent_id), Status(status), message, percentage))

    def _terminal(
        self,
        task_id: Any,
        status: Status,
        message: str,
        percentage: int | None = None,
        *,
        ensure: bool = True,
    ) -> None:
        entry = Entry(parse_agent_id(task_id), status, message, percentage)
        if not writer.submit(entry, ensure=ensure, wait=TERMINAL_WAIT):
            logger.error("activity for %s not committed within %ss", task_id, TERMINAL_WAIT)

    def _from_message(self, message: Any, reason: str) -> None:
        headers = getattr(message, "headers", None) or {}
        if not headers.get(AGENT_HEADER):
            return
        try:
            agent_id = parse_agent_id(headers.get("id", ""))
        except InvalidAgentIdError:
            logger.error("agent task message without a valid id: %r", headers)
            return
        entry = Entry(agent_id, Status.ERROR, reason, agent_type=headers.get("task"))
        writer.submit(entry, ensure=True, wait=TERMINAL_WAIT)
        if self.app.backend.get_state(str(agent_id)) not in states.READY_STATES:
            # So that waiters hear of it at once (Celery stores none for a rejected message).
            self.app.backend.mark_as_failure(str(agent_id), RuntimeError(reason))


def _recorded(task: Any) -> bool:
    return bool(getattr(task.request, "agentexec_recorded", False))


def describe(exc: BaseException | None) -> str:
    """`Type: message`, the way an error reads in the activity log."""
    if exc is None:
        return "unknown error"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
