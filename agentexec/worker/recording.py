"""Recording the end of a run, in the worker, before Celery stores its result.

Celery stores a task's result before it sends `task_success` or `task_failure`, so a client
could hold the result while the activity still says RUNNING. The task body therefore records
its run's end first: the last event is appended to the log after every event the run
reported (through the appender, in order), then the run's journal (every event of this
attempt) and that last event are written to SQL in one transaction, sharing a commit with
other runs that end within a few milliseconds. The signal handlers then skip the runs the
body has recorded.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from agentexec.config import get_settings
from agentexec.eventlog.appender import Journal
from agentexec.eventlog.event import Event, clean_message
from agentexec.exceptions import ActivityStoreError, describe
from agentexec.ids import parse_agent_id
from agentexec.runtime import get_runtime
from agentexec.states import KIND_OF_STATUS, Status

logger = logging.getLogger(__name__)

#: The message of a run's COMPLETE event.
TASK_COMPLETED = "Task completed"
#: Seconds the end of a run may wait for the event log before the task goes on.
TERMINAL_WAIT = 30.0


def record_end(
    task_id: uuid.UUID | str,
    status: Status,
    message: str,
    percentage: int | None = None,
    *,
    task: str | None = None,
    journal: Journal | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Append a run's last event, then write its journal and that event to SQL; wait for
    both. While the log's Redis is unreachable the end goes to SQL alone."""
    agent_id = parse_agent_id(task_id)
    runtime = get_runtime()
    event = Event(
        agent_id,
        status,
        clean_message(message, get_settings().max_message_bytes),
        percentage,
        kind=KIND_OF_STATUS[status],
        task=task,
        worker=runtime.worker,
        data=data,
    )
    appended = runtime.appender.record(event, TERMINAL_WAIT)
    events = runtime.appender.end_journal(agent_id, journal)
    try:
        runtime.write_end([*events, appended])
    except ActivityStoreError as exc:
        logger.error("activity of %s not recorded: %s", agent_id, exc)


def record_finished(
    task: Any,
    error: BaseException | None = None,
    *,
    retrying: bool = False,
    delay: float | None = None,
) -> None:
    """Record, from inside the task body, how this attempt of the run ended."""
    request = task.request
    journal = getattr(request, "agentexec_journal", None)
    if error is None:
        record_end(request.id, Status.COMPLETE, TASK_COMPLETED, 100, journal=journal)
    elif retrying:
        after = f" in {delay:.1f}s" if delay is not None else ""
        message = f"Attempt failed, retrying{after}: {describe(error)}"
        record_end(request.id, Status.QUEUED, message, journal=journal)
    else:
        record_end(request.id, Status.ERROR, describe(error), journal=journal)
    request.agentexec_recorded = True


def was_recorded(task: Any) -> bool:
    """Whether the task body recorded the end of its run already."""
    return bool(getattr(task.request, "agentexec_recorded", False))
