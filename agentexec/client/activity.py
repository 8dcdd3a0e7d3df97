"""`ax.activity`: what every run is doing, read with the web app's own sync `Session`, and
the status reports agents record.

A status report goes from the agent to the log in three steps: the runner's
`report_status` (or `update`) validates it, `report` queues it on the process's event
appender, and the appender thread appends it to Redis. Nothing there waits on I/O, so agents
call it from the shared event loop.
"""

from __future__ import annotations

import builtins
import logging
import uuid

import redis
from celery.utils.dispatch import Signal
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from agentexec.client.cancel import revoke_runs
from agentexec.client.schemas import (
    ActivityDetail,
    ActivityListItem,
    ActivityLogView,
    ActivityPage,
    ChildRun,
    RunUsage,
    UsageTotals,
)
from agentexec.client.usage import run_usage, usage
from agentexec.config import get_settings
from agentexec.db import projection
from agentexec.db.models import Activity, ActivityChild, ActivityLog, Base
from agentexec.eventlog.event import Event, clean_message
from agentexec.exceptions import InvalidAgentIdError, InvalidRequestError
from agentexec.ids import parse_agent_id
from agentexec.runtime import get_runtime
from agentexec.states import ACTIVE, EventKind, Status
from agentexec.tasks.app import app
from agentexec.tasks.presence import final_results, live_workers, message_copies, pending_ids

__all__ = [
    "usage",
    "Activity",
    "ActivityDetail",
    "ActivityListItem",
    "ActivityLog",
    "ActivityLogView",
    "ActivityPage",
    "Base",
    "Status",
    "cancel_pending",
    "count_active",
    "detail",
    "list",
    "report",
    "status_reported",
    "update",
]

logger = logging.getLogger(__name__)

#: Sent with `agent_id`, `message`, `percentage` (int or None) and `status` (a Status) for
#: every status report. Workers show it in Flower; connect your own receivers to stream
#: progress elsewhere. Receivers run on the agent's event loop and must not block.
status_reported = Signal(name="agentexec.status_reported")


def detail(
    session: Session, agent_id: uuid.UUID | str, *, owner: str | None = None
) -> ActivityDetail | None:
    """The run with its log, oldest entry first; None for an unknown or malformed id.

    Args:
        session: a session on the activity database.
        agent_id: the run.
        owner: only a run of this owner: another owner's run is None, as an unknown one is.
    """
    try:
        key = parse_agent_id(agent_id)
    except InvalidAgentIdError:
        return None
    stmt = (
        select(Activity)
        .options(selectinload(Activity.logs), selectinload(Activity.approvals))
        .where(Activity.agent_id == key)
    )
    if owner is not None:
        stmt = stmt.where(Activity.owner == owner)
    activity = session.scalar(stmt)
    if activity is None:
        return None
    found = ActivityDetail.model_validate(activity)
    found.usage = run_usage(session, [found.agent_id]).get(found.agent_id, RunUsage())
    found.children = _children(session, found.agent_id)
    return found


def _children(session: Session, parent_id: uuid.UUID) -> builtins.list[ChildRun]:
    """The runs a composed run started, in order of their place in it."""
    rows = session.execute(
        select(ActivityChild, Activity.agent_type, Activity.status, Activity.latest_log)
        .outerjoin(Activity, Activity.agent_id == ActivityChild.agent_id)
        .where(ActivityChild.parent_id == parent_id)
    ).all()
    found = [
        ChildRun(agent_id=link.agent_id, position=link.position, step=link.step, task=task,
                 status=status, latest_log=latest)
        for link, task, status, latest in rows
    ]  # fmt: skip
    return sorted(found, key=lambda c: [int(p) for p in c.position.split(".") if p.isdigit()])


def list(
    session: Session,
    page: int = 1,
    page_size: int = 20,
    *,
    status: Status | str | None = None,
    agent_type: str | None = None,
    owner: str | None = None,
) -> ActivityPage:
    """One page of runs, newest first.

    Args:
        session: a session on the activity database.
        page: which page, from 1.
        page_size: runs per page, up to `AGENTEXEC_MAX_PAGE_SIZE` (500).
        status: only runs with this status.
        agent_type: only runs of this task name.
        owner: only runs of this owner.

    Raises:
        InvalidRequestError: `page` or `page_size` is out of range.
    """
    limit = get_settings().max_page_size
    if page < 1:
        raise InvalidRequestError(f"page must be 1 or more, got {page}")
    if not 1 <= page_size <= limit:
        raise InvalidRequestError(f"page_size must be between 1 and {limit}, got {page_size}")
    where = []
    if status is not None:
        where.append(Activity.status == Status(status))
    if agent_type is not None:
        where.append(Activity.agent_type == agent_type)
    if owner is not None:
        where.append(Activity.owner == owner)
    total = session.scalar(select(func.count()).select_from(Activity).where(*where)) or 0
    rows = session.scalars(
        select(Activity)
        .where(*where)
        .order_by(Activity.created_at.desc(), Activity.agent_id.desc())
        .limit(page_size)
        .offset((page - 1) * page_size)
    ).all()
    items = [ActivityListItem.model_validate(row) for row in rows]
    spent = run_usage(session, [item.agent_id for item in items])
    for item in items:
        run = spent.get(item.agent_id)
        item.usage = UsageTotals.model_validate(run.model_dump(exclude={"models"})) if run else None
    return ActivityPage(
        items=items,
        total=total,
        page=page,
        page_size=page_size,
        pages=(total + page_size - 1) // page_size,
    )


def count_active(session: Session) -> int:
    """How many runs are QUEUED or RUNNING."""
    stmt = select(func.count()).select_from(Activity).where(Activity.status.in_(ACTIVE))
    return session.scalar(stmt) or 0


def cancel_pending(session: Session, reason: str = "Canceled at startup") -> int:
    """Cancel the QUEUED and RUNNING runs that can no longer end by themselves; returns how
    many there were.

    A run counts as stale when its message is nowhere in the broker (on no queue, not taken
    by a worker, held by no live worker) and, if it was RUNNING, its worker's heartbeat is
    gone; a run with a stored result is left to the reaper, which brings its row up to date.
    A run that waits in a queue or that a live worker holds is never touched, so every API
    replica can call this at startup. Each cancel is an event (watchers see it), and the run
    is revoked, so a message that turns up later is not run. While the broker cannot be
    read, nothing is canceled (a warning says so).
    """
    settings = get_settings()
    rows = session.execute(
        select(Activity.agent_id, Activity.status, Activity.worker, Activity.owner).where(
            Activity.status.in_(ACTIVE)
        )
    ).all()
    if not rows:
        return 0
    try:
        client = get_runtime().events.client()
        pending = pending_ids(client, settings)
        live = set(live_workers(client, settings))
        ids = {str(row.agent_id) for row in rows} - pending
        pending |= set(message_copies(client, ids))
        finished = set(final_results(app, builtins.list(ids)))
    except redis.RedisError as exc:
        logger.warning("stale runs not canceled: the broker cannot be read (%s)", exc)
        return 0
    stale = [
        row
        for row in rows
        if str(row.agent_id) not in pending | finished
        and (row.status is Status.QUEUED or row.worker not in live)
    ]
    if not stale:
        return 0
    reason = clean_message(reason, settings.max_message_bytes)
    revoke_runs([row.agent_id for row in stale], reason)
    events = [
        Event(row.agent_id, Status.CANCELED, reason, kind=EventKind.CANCELED, owner=row.owner)
        for row in stale
    ]
    projection.apply(session.connection(), get_runtime().events.record(events))
    session.commit()
    return len(stale)


def report(
    agent_id: uuid.UUID, message: str, percentage: int | None, status: Status = Status.RUNNING
) -> None:
    """Record a validated status report, without blocking. The message is cleaned of control
    characters and cut to `AGENTEXEC_MAX_MESSAGE_BYTES`."""
    runtime = get_runtime()
    message = clean_message(message, get_settings().max_message_bytes)
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
