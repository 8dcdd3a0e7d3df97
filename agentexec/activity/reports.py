"""Status reports: what an agent says it is doing, on its way to the event log.

A report goes from the agent to the log in three steps: the runner's `report_status` (or
`update`) validates it, `report` queues it on the appender, and the appender thread appends
it to Redis. Nothing here waits on I/O, so agents call it from the shared event loop.
"""

from __future__ import annotations

import logging
import uuid

from agentexec.activity.signals import status_reported
from agentexec.db.models import Status
from agentexec.events import Event, EventKind
from agentexec.ids import parse_agent_id
from agentexec.runtime import get_runtime

logger = logging.getLogger(__name__)


def report(
    agent_id: uuid.UUID, message: str, percentage: int | None, status: Status = Status.RUNNING
) -> None:
    """Record a validated status report, without blocking."""
    runtime = get_runtime()
    done = "" if percentage is None else f" {percentage}%"
    logger.info("Agent %s %s%s: %s", agent_id, status.value, done, message)
    runtime.appender.submit(
        Event(agent_id, status, message, percentage, kind=EventKind.REPORT, worker=runtime.worker)
    )
    status_reported.send(
        sender=None, agent_id=agent_id, message=message, percentage=percentage, status=status
    )


def update(
    agent_id: uuid.UUID | str,
    message: str,
    percentage: int | None = None,
    status: Status | str = Status.RUNNING,
) -> None:
    """Record a status report for a run. Safe on an event loop: nothing here waits on I/O.

    Raises:
        InvalidAgentIdError: `agent_id` is not a UUID.
        ValueError: `percentage` is outside 0..100, or `status` is not a status.
    """
    if percentage is not None and not 0 <= percentage <= 100:
        raise ValueError(f"percentage must be between 0 and 100, got {percentage}")
    report(parse_agent_id(agent_id), message, percentage, Status(status))
