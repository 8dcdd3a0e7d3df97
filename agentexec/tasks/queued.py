"""The QUEUED record: one path from any publish of an agent task to its QUEUED event and row.

`.delay()`, `apply_async`, `app.send_task`, canvas and `ax.enqueue` all publish through Celery,
and every publish comes this way:

1. `before_task_publish`: the run's QUEUED event goes into the message's headers
   (`EVENT_HEADER`), with `AGENT_HEADER` marking the message as an agent's;
2. the transport (`agentexec.tasks.transport`) pushes the message and appends the event in
   one script, and leaves the event's position in the headers (`SEQ_HEADER`): at once, or for
   a publish batch when the batch is flushed;
3. `after_task_publish`: `write_queued` writes the QUEUED row before the publish returns, so a
   status request right after enqueue finds the run. Inside `deferred_queued_rows()` (the
   publish batch of `ax.enqueue`) the headers are collected instead, and the batch's rows are
   written in one transaction once Redis has taken its messages.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar

from celery import Celery, signals

from agentexec.eventlog.event import Event
from agentexec.exceptions import ActivityStoreError
from agentexec.ids import parse_agent_id
from agentexec.runtime import get_runtime
from agentexec.states import EventKind, Status
from agentexec.tasks.transport import EVENT_HEADER, SEQ_HEADER

logger = logging.getLogger(__name__)

#: Message header that marks an agent task, for workers that do not know the task.
AGENT_HEADER = "agentexec"
#: Message header with the run's owner, when it has one.
OWNER_HEADER = "agentexec_owner"
#: Message header with the run's own budget (`{"tokens": n, "cost": x}`), when it has one.
BUDGET_HEADER = "agentexec_budget"
#: Message header of a run queued again for the start its task's rate limit reserved for it.
RATE_HEADER = "agentexec_rate_reserved"
#: Message header: why agentexec queued a run again (its QUEUED log line).
WHY_HEADER = "agentexec_why"
#: Message header of a run queued again to resume (after its approvals, or `ax.resume`):
#: how many times it was, so each resume counts its own deliveries.
RESUME_HEADER = "agentexec_resumes"
#: Message header of a composed run's child (`agentexec.tasks.composition`): `{"id": P,
#: "index": i, "step": name, "position": "i" or "i.k", "join": {"position": k, "of": n}}`
#: (join: a child of a fan-out).
PARENT_HEADER = "agentexec_parent"
#: Message header of a run a schedule started: `{"name", "repeat", "overlap"}`
#: (`agentexec.tasks.schedules`).
SCHEDULE_HEADER = "agentexec_schedule"
#: The attribute that marks a task class as an agent task (`AgentTask` sets it).
AGENT_MARK = "agentexec_agent"

_deferred = threading.local()


def is_agent_task(app: Celery, task: Any) -> bool:
    """Whether `task` (a task or a task name) is an agent task of `app`."""
    if isinstance(task, str):
        task = app.tasks.get(task)
    return bool(getattr(task, AGENT_MARK, False)) and task.app is app


class QueuedRecorder:
    """Records the QUEUED event and row of every agent task one app publishes."""

    _installed: ClassVar[weakref.WeakKeyDictionary[Celery, QueuedRecorder]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, app: Celery) -> None:
        self.app = app

    @classmethod
    def of(cls, app: Celery) -> QueuedRecorder:
        """The recorder of `app`, connected on first use."""
        recorder = cls._installed.get(app)
        if recorder is None:
            recorder = cls._installed[app] = cls(app)
            signals.before_task_publish.connect(recorder.on_before_task_publish, weak=False)
            signals.after_task_publish.connect(recorder.on_after_task_publish, weak=False)
        return recorder

    def on_before_task_publish(
        self, sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any
    ) -> None:
        """Put the run's QUEUED event in the message's headers: the transport appends it."""
        if headers is None or not (is_agent_task(self.app, sender) or headers.get(RESUME_HEADER)):
            return
        headers[AGENT_HEADER] = 1
        retries = headers.get("retries") or 0
        if headers.get(RESUME_HEADER):
            message = str(headers.get(WHY_HEADER) or "Queued again to resume")
        else:
            message = f"Retry {retries} queued" if retries else "Task queued"
            scheduled = headers.get(SCHEDULE_HEADER)
            if isinstance(scheduled, dict) and not retries:
                message = f"Task queued by schedule {str(scheduled.get('name'))!r}"
        event = Event(
            parse_agent_id(headers["id"]),
            Status.QUEUED,
            message,
            kind=EventKind.RETRY if retries else EventKind.QUEUED,
            task=str(sender),
            owner=headers.get(OWNER_HEADER),
            data={"parent": headers[PARENT_HEADER]} if headers.get(PARENT_HEADER) else None,
        )
        headers[EVENT_HEADER] = {"key": get_runtime().events.key, "fields": event.fields()}

    def on_after_task_publish(
        self, sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any
    ) -> None:
        """Write the QUEUED row before the publish returns (in a batch, after its flush)."""
        if headers is None or EVENT_HEADER not in headers:
            return
        if not (is_agent_task(self.app, sender) or headers.get(RESUME_HEADER)):
            return
        rows = getattr(_deferred, "rows", None)
        if rows is not None:
            rows.append(headers)
        else:
            write_queued([headers])


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
