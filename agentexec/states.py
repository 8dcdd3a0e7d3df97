"""The run vocabulary: the statuses a run goes through and the kinds of events that move it.

Everything below the public API speaks these words: the event log, the SQL tables, the
workers, the web router and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class Status(StrEnum):
    """Lifecycle of an agent run. The values are what the web app compares against."""

    #: Published, waiting for a worker.
    QUEUED = "QUEUED"
    #: A worker is running it; status reports keep it here.
    RUNNING = "RUNNING"
    #: Stopped at a tool call that needs a person's approval; it holds no worker slot.
    WAITING = "WAITING"
    #: Returned a result.
    COMPLETE = "COMPLETE"
    #: Raised, or its worker died and it will not be retried.
    ERROR = "ERROR"
    #: Revoked or canceled.
    CANCELED = "CANCELED"


#: Statuses that end a run.
TERMINAL = frozenset({Status.COMPLETE, Status.ERROR, Status.CANCELED})
#: Statuses of a run in a queue or on a worker: what the reaper and `cancel_pending` check.
ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})
#: Statuses of a run that has not ended: active, or waiting for an approval.
UNFINISHED = ACTIVE | {Status.WAITING}


@dataclass(frozen=True, slots=True)
class StatusStyle:
    """How a status is shown: in a terminal by the CLI, and as a badge by the dashboard."""

    #: A rich colour name.
    terminal: str
    #: The badge's CSS background and text colours.
    background: str
    color: str


#: How each status is shown; the CLI and the dashboard both read this table.
STATUS_STYLES: dict[Status, StatusStyle] = {
    Status.QUEUED: StatusStyle("cyan", "#f2f4f7", "#475467"),
    Status.RUNNING: StatusStyle("yellow", "#e0eaff", "#3538cd"),
    Status.WAITING: StatusStyle("blue", "#fdf2fa", "#c11574"),
    Status.COMPLETE: StatusStyle("green", "#d1fadf", "#05603a"),
    Status.ERROR: StatusStyle("red", "#fee4e2", "#b42318"),
    Status.CANCELED: StatusStyle("magenta", "#fef0c7", "#93370d"),
}


class EventKind(StrEnum):
    """What happened to the run."""

    #: Published to its queue.
    QUEUED = "queued"
    #: A worker started it (again, if redelivered).
    STARTED = "started"
    #: The agent reported progress.
    REPORT = "report"
    #: An attempt failed and the run is queued again.
    RETRY = "retry"
    #: It stopped for approvals (`Event.data["approvals"]`), holding no worker slot.
    WAITING = "waiting"
    #: A person decided one approval (`Event.data`: call_id, approved, message, by).
    DECISION = "decision"
    #: A model call's usage (`Event.data`: model, requests, tokens, cost). It does not
    #: change the run's status or log; it adds to its usage.
    USAGE = "usage"
    #: It returned a result.
    COMPLETE = "complete"
    #: It raised, or could not run.
    ERROR = "error"
    #: It was revoked or canceled.
    CANCELED = "canceled"
    #: Not in the log: the run's state when a watcher started watching (`ax.watch`).
    SNAPSHOT = "snapshot"


#: The kind of the event that ends a run (or queues it again) with each status.
KIND_OF_STATUS = {
    Status.QUEUED: EventKind.RETRY,
    Status.RUNNING: EventKind.REPORT,
    Status.WAITING: EventKind.WAITING,
    Status.COMPLETE: EventKind.COMPLETE,
    Status.ERROR: EventKind.ERROR,
    Status.CANCELED: EventKind.CANCELED,
}


def utcnow() -> datetime:
    """Now, in UTC: every timestamp agentexec writes."""
    return datetime.now(UTC)
