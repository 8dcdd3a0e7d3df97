"""Turns Celery's signals into activity events, one installer per app (`celery/fixups/django.py`).

`ActivityRecorder(app).install()` connects every signal agentexec listens to, the worker's
lifecycle included, and each handler first checks that the signal concerns its own app.

Every change becomes an event in the event log (see `agentexec.eventlog`). Two writes also go
to SQL at once, because readers rely on them:

- QUEUED, by the producer, before the publish returns: a status request right after enqueue
  finds the run;
- the end of a run, by the task body, before Celery stores the result (`finished`): a client
  that holds the result never reads a stale RUNNING.

Where they fire:

- `before_task_publish` and `after_task_publish`, in the producer: the QUEUED event goes out
  with the message (see `agentexec.broker`), and the QUEUED row is written before the publish
  returns. `.delay()`, `apply_async`, `ax.enqueue` and `app.send_task` all come this way.
  `ax.enqueue` publishes the calls that arrive together as one batch (`deferred_queued_rows`):
  `after_task_publish` then fires as each message joins the batch, and the batch's QUEUED rows
  are written in one statement once Redis has taken its messages.
- `task_prerun`, `task_postrun`, `task_success`, `task_failure`, `task_retry`, in the process
  running the task.
- `task_revoked`, `task_rejected`, `task_unknown` and `task_failure` for a lost child, in the
  worker's main process.
- `worker_init`, `worker_ready`, `worker_shutdown`, `worker_process_shutdown`: the worker
  loads revoked ids and prepares the database, starts its projector, and stops its runtime.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar, Self

from celery import Celery, signals, states
from sqlalchemy.exc import SQLAlchemyError

from agentexec import delivery, revoked, supervision
from agentexec.activity.signals import status_reported
from agentexec.broker import EVENT_HEADER, SEQ_HEADER
from agentexec.config import get_settings
from agentexec.db.models import Status
from agentexec.delivery import TASK_COMPLETED
from agentexec.eventlog import Journal
from agentexec.events import Event, EventKind, clock_seq
from agentexec.exceptions import ActivityStoreError, InvalidAgentIdError, describe
from agentexec.ids import parse_agent_id
from agentexec.progress import ProgressEvents
from agentexec.runtime import freeze_startup_objects, get_runtime

logger = logging.getLogger(__name__)

#: Message header that marks an agent task, for workers that do not know the task.
AGENT_HEADER = "agentexec"
#: Seconds the end of a run may wait for the event log before the task goes on.
TERMINAL_WAIT = 30.0

_KIND = {
    Status.COMPLETE: EventKind.COMPLETE,
    Status.ERROR: EventKind.ERROR,
    Status.CANCELED: EventKind.CANCELED,
    Status.QUEUED: EventKind.RETRY,
    Status.RUNNING: EventKind.REPORT,
}

_deferred = threading.local()


@contextlib.contextmanager
def deferred_queued_rows() -> Iterator[list[dict[str, Any]]]:
    """Collect, rather than write, the QUEUED rows of the agent messages this thread publishes.

    Yields the list that receives each message's headers; `write_queued` writes them. For a
    publish batch, whose messages reach Redis only when it is flushed.
    """
    previous = getattr(_deferred, "rows", None)
    rows: list[dict[str, Any]] = []
    _deferred.rows = rows
    try:
        yield rows
    finally:
        _deferred.rows = previous


def write_queued(published: list[dict[str, Any]]) -> None:
    """Write the QUEUED rows of published agent messages (their headers) in one transaction.

    While the database is unreachable the runs are queued all the same, and their rows
    appear when it is back.
    """
    runtime = get_runtime()
    events: list[Event] = []
    unplaced: list[Event] = []
    for headers in published:
        event = Event.from_fields(headers[EVENT_HEADER]["fields"], headers.get(SEQ_HEADER))
        (events if event.seq is not None else unplaced).append(event)
    if unplaced:  # a transport of the user's own: append the events now
        events += runtime.events.append(unplaced)
    try:
        runtime.write_queued(events)
    except ActivityStoreError as exc:
        logger.error("QUEUED rows of %d runs not written: %s", len(events), exc)


class ActivityRecorder:
    """Records the activity of one app's agent tasks."""

    _installed: ClassVar[weakref.WeakKeyDictionary[Celery, ActivityRecorder]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._supervisor: supervision.Supervisor | None = None

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
            (signals.after_task_publish, self.on_after_task_publish),
            (signals.task_prerun, self.on_task_prerun),
            (signals.task_postrun, self.on_task_postrun),
            (signals.task_success, self.on_task_success),
            (signals.task_failure, self.on_task_failure),
            (signals.task_retry, self.on_task_retry),
            (signals.task_revoked, self.on_task_revoked),
            (signals.task_rejected, self.on_task_rejected),
            (signals.task_unknown, self.on_task_unknown),
            (signals.worker_init, self.on_worker_init),
            (signals.worker_ready, self.on_worker_ready),
            (signals.worker_shutting_down, self.on_worker_shutting_down),
            (signals.worker_shutdown, self.on_worker_shutdown),
            (signals.worker_process_shutdown, self.on_worker_process_shutdown),
            (status_reported, self.on_status_reported),
        ):
            signal.connect(handler, weak=False)
        return self

    def is_agent_task(self, task: Any) -> bool:
        """Whether `task` (a task or a task name) is an agent task of this app."""
        if isinstance(task, str):
            task = self.app.tasks.get(task)
        return bool(getattr(task, "agentexec_agent", False)) and task.app is self.app

    def _is_mine(self, sender: Any) -> bool:
        return getattr(sender, "app", None) is self.app

    # Producer

    def on_before_task_publish(
        self, sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any
    ) -> None:
        """Put the run's QUEUED event in the message's headers: the transport appends it."""
        if headers is None or not self.is_agent_task(sender):
            return
        headers[AGENT_HEADER] = 1
        retries = headers.get("retries") or 0
        event = Event(
            parse_agent_id(headers["id"]),
            Status.QUEUED,
            f"Retry {retries} queued" if retries else "Task queued",
            kind=EventKind.RETRY if retries else EventKind.QUEUED,
            task=str(sender),
        )
        headers[EVENT_HEADER] = {"key": get_runtime().events.key, "fields": event.fields()}

    def on_after_task_publish(
        self, sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any
    ) -> None:
        """Write the QUEUED row before the publish returns to its caller.

        A status request right after enqueue then finds the run. In a publish batch the row
        is written with the batch's, after its flush.
        """
        if headers is None or EVENT_HEADER not in headers or not self.is_agent_task(sender):
            return
        rows = getattr(_deferred, "rows", None)
        if rows is not None:
            rows.append(headers)
        else:
            write_queued([headers])

    # Worker, task process

    def on_task_prerun(self, sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        if not self.is_agent_task(sender) or task_id is None:
            return
        request = sender.request
        agent_id = parse_agent_id(task_id)
        deliveries = delivery.admit(self.app, task_id, request.retries or 0, request.hostname)
        if deliveries is None:
            # Delivered again after it finished (its ack was lost): acknowledge it unrun.
            request.agentexec_skip = True
            logger.warning("run %s delivered again after it finished; not run again", task_id)
            return
        request.agentexec_deliveries = deliveries
        if deliveries > 1:
            message = f"Task started again (delivery {deliveries})"
        elif (request.delivery_info or {}).get("redelivered"):
            message = "Task started again"
        else:
            message = "Task started"
        appender = get_runtime().appender
        request.agentexec_journal = appender.start_journal(agent_id, sender.name)
        appender.submit(
            Event(
                agent_id,
                Status.RUNNING,
                message,
                0,
                kind=EventKind.STARTED,
                task=sender.name,
                worker=request.hostname,
            )
        )

    def on_task_postrun(self, sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        if self.is_agent_task(sender) and task_id is not None:
            delivery.release_delivery(task_id)
            journal = getattr(sender.request, "agentexec_journal", None)
            get_runtime().appender.end_journal(parse_agent_id(task_id), journal)

    def finished(
        self,
        task: Any,
        error: BaseException | None = None,
        *,
        retrying: bool = False,
        delay: float | None = None,
    ) -> None:
        """Record a run's end from inside the task body, before Celery stores its result.

        Celery stores the result before it sends `task_success` or `task_failure`, so a
        client could see the result while the activity still says RUNNING. The body calls
        this first; the signal handlers then skip the runs it has recorded.
        """
        journal = getattr(task.request, "agentexec_journal", None)
        if error is None:
            self._end(task.request.id, Status.COMPLETE, TASK_COMPLETED, 100, journal=journal)
        elif retrying:
            after = f" in {delay:.1f}s" if delay is not None else ""
            message = f"Attempt failed, retrying{after}: {describe(error)}"
            self._end(task.request.id, Status.QUEUED, message, journal=journal)
        else:
            self._end(task.request.id, Status.ERROR, describe(error), journal=journal)
        task.request.agentexec_recorded = True

    def requeued(self, task: Any) -> None:
        """Record a run cancelled by the shutdown timeout, whose message goes back on its queue."""
        journal = getattr(task.request, "agentexec_journal", None)
        self._end(task.request.id, Status.QUEUED, "Requeued at shutdown", journal=journal)
        delivery.uncount_delivery(str(task.request.id), task.request.retries or 0)
        task.request.agentexec_recorded = True
        logger.warning("agent %s requeued at shutdown", task.request.id)

    def on_task_success(self, sender: Any = None, **_: Any) -> None:
        if self.is_agent_task(sender) and not _recorded(sender):
            journal = getattr(sender.request, "agentexec_journal", None)
            self._end(sender.request.id, Status.COMPLETE, TASK_COMPLETED, 100, journal=journal)

    def on_task_failure(
        self,
        sender: Any = None,
        task_id: str | None = None,
        exception: BaseException | None = None,
        **_: Any,
    ) -> None:
        if self.is_agent_task(sender) and task_id is not None and not _recorded(sender):
            journal = getattr(sender.request, "agentexec_journal", None)
            self._end(task_id, Status.ERROR, describe(exception), journal=journal)

    def on_task_retry(
        self, sender: Any = None, request: Any = None, reason: Any = None, **_: Any
    ) -> None:
        # The task body logged the failed attempt before the retry was published, and the
        # publish logged "Retry N queued". Writing here would race with the next attempt.
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
            get_runtime().loop.cancel(str(request.id))
        if expired:
            reason = "Expired before it started"
        else:
            backend: Any = self.app.backend
            reason = revoked.reason(backend.client, str(request.id)) or "Canceled"
        self._end(request.id, Status.CANCELED, reason)

    def on_task_rejected(self, message: Any = None, exc: Any = None, **_: Any) -> None:
        self._from_message(message, f"Rejected by the worker: {describe(exc)}")

    def on_task_unknown(
        self, message: Any = None, name: str | None = None, exc: Any = None, **_: Any
    ) -> None:
        self._from_message(message, f"No worker knows the task {name!r}: {describe(exc)}")

    # Worker lifecycle

    def on_worker_init(self, sender: Any = None, **_: Any) -> None:
        """Before consuming: learn revoked runs, and open (or create) the activity tables."""
        if not self._is_mine(sender):
            return
        revoked.load(self.app)
        logging.getLogger("celery.app.trace").addFilter(delivery.QuietRequeue())
        runtime = get_runtime()
        runtime.worker = getattr(sender, "hostname", None)
        try:
            runtime.ready_engine()
        except ActivityStoreError as exc:
            logger.error("%s; activity waits in the event log until this is fixed", exc)
        except SQLAlchemyError as exc:
            logger.warning(
                "the activity database is unreachable (%s); activity waits in the event log",
                str(getattr(exc, "orig", None) or exc).strip().splitlines()[0],
            )

    def on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        """Start the heartbeat and reaper of this worker, and its projector; freeze the
        imports' objects out of the garbage collector's way (`AGENTEXEC_GC_FREEZE`)."""
        if not self._is_mine(sender):
            return
        self._supervisor = supervision.Supervisor(self.app, sender.hostname).start()
        if get_settings().projector:
            get_runtime().start_projector()
        freeze_startup_objects()

    def on_worker_shutting_down(self, how: str = "", **_: Any) -> None:
        """SIGTERM: in-flight agents get `AGENTEXEC_SHUTDOWN_TIMEOUT`, then are requeued."""
        if how == "Warm" and self._supervisor is not None:
            delivery.ShutdownTimer(get_settings().shutdown_timeout).start()

    def on_status_reported(
        self,
        agent_id: Any = None,
        message: str = "",
        percentage: int | None = None,
        **_: Any,
    ) -> None:
        """In a worker that sends task events: show the report in Flower (`task-progress`)."""
        runtime = get_runtime()
        if runtime.worker is None or not self.app.conf.worker_send_task_events:
            return
        if runtime.progress is None:
            runtime.progress = ProgressEvents(self.app, runtime.worker)
        runtime.progress.report(agent_id, message, percentage)

    def on_worker_shutdown(self, sender: Any = None, **_: Any) -> None:
        if self._is_mine(sender):
            if self._supervisor is not None:
                self._supervisor.stop()
                self._supervisor = None
            get_runtime().stop()

    def on_worker_process_shutdown(self, **_: Any) -> None:
        get_runtime().stop()

    # Recording

    def _end(
        self,
        task_id: Any,
        status: Status,
        message: str,
        percentage: int | None = None,
        *,
        task: str | None = None,
        journal: Journal | None = None,
    ) -> None:
        """Append a run's last event, then write its journal to SQL, and wait for both."""
        agent_id = parse_agent_id(task_id)
        runtime = get_runtime()
        event = Event(
            agent_id,
            status,
            message,
            percentage,
            kind=_KIND[status],
            task=task,
            worker=runtime.worker,
        )
        appended = runtime.appender.submit_and_wait(event, TERMINAL_WAIT)
        events = runtime.appender.end_journal(agent_id, journal)
        if appended is None:
            logger.error("event log unreachable: the end of %s goes to SQL only", agent_id)
            appended = event.appended(clock_seq())
        try:
            runtime.write_end([*events, appended])
        except ActivityStoreError as exc:
            logger.error("activity of %s not recorded: %s", agent_id, exc)

    def _from_message(self, message: Any, reason: str) -> None:
        headers = getattr(message, "headers", None) or {}
        if not headers.get(AGENT_HEADER):
            return
        try:
            agent_id = parse_agent_id(headers.get("id", ""))
        except InvalidAgentIdError:
            logger.error("agent task message without a valid id: %r", headers)
            return
        self._end(agent_id, Status.ERROR, reason, task=headers.get("task"))
        if self.app.backend.get_state(str(agent_id)) not in states.READY_STATES:
            # So that waiters hear of it at once (Celery stores none for a rejected message).
            self.app.backend.mark_as_failure(str(agent_id), RuntimeError(reason))


def _recorded(task: Any) -> bool:
    return bool(getattr(task.request, "agentexec_recorded", False))
