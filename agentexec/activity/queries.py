"""The activity API the web app calls with its own sync `Session`."""

from __future__ import annotations

import builtins
import uuid

from sqlalchemy import func, insert, select
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session, selectinload

from agentexec.activity.models import ACTIVE, Activity, ActivityLog, Status, utcnow
from agentexec.activity.schemas import ActivityDetail, ActivityListItem, ActivityPage
from agentexec.activity.signals import status_reported
from agentexec.exceptions import InvalidAgentIdError
from agentexec.ids import parse_agent_id


def detail(session: Session, agent_id: uuid.UUID | str) -> ActivityDetail | None:
    """The run with its log, oldest entry first; None for an unknown or malformed id."""
    try:
        key = parse_agent_id(agent_id)
    except InvalidAgentIdError:
        return None
    activity = session.scalar(
        select(Activity).options(selectinload(Activity.logs)).where(Activity.agent_id == key)
    )
    return ActivityDetail.model_validate(activity) if activity is not None else None


def list(session: Session, page: int = 1, page_size: int = 20) -> ActivityPage:
    """One page of runs, newest first. `page` starts at 1; `page_size` is capped at 500."""
    page = max(page, 1)
    page_size = min(max(page_size, 1), 500)
    total = session.scalar(select(func.count()).select_from(Activity)) or 0
    rows = session.scalars(
        select(Activity)
        .order_by(Activity.created_at.desc(), Activity.agent_id.desc())
        .limit(page_size)
        .offset((page - 1) * page_size)
    ).all()
    return ActivityPage(
        items=[ActivityListItem.model_validate(row) for row in rows],
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
    """Mark every QUEUED or RUNNING run CANCELED, log why, and return how many there were.

    Meant for startup cleanup, when the runs are known to be gone. A worker that still holds
    one of them records its progress over this.
    """
    ids: builtins.list[uuid.UUID] = builtins.list(
        session.scalars(select(Activity.agent_id).where(Activity.status.in_(ACTIVE)))
    )
    if not ids:
        return 0
    now = utcnow()
    session.execute(
        sql_update(Activity)
        .where(Activity.agent_id.in_(ids), Activity.status.in_(ACTIVE))
        .values(status=Status.CANCELED, latest_log=reason, updated_at=now)
    )
    session.execute(
        insert(ActivityLog),
        [
            {"agent_id": i, "message": reason, "status": Status.CANCELED, "created_at": now}
            for i in ids
        ],
    )
    session.commit()
    return len(ids)


def update(
    agent_id: uuid.UUID | str,
    message: str,
    percentage: int | None = None,
    status: Status | str = Status.RUNNING,
) -> None:
    """Record a status report for a run, through the `status_reported` signal.

    Safe on an event loop: the write happens on agentexec's writer thread.

    Raises:
        InvalidAgentIdError: `agent_id` is not a UUID.
        ValueError: `percentage` is outside 0..100.
    """
    if percentage is not None and not 0 <= percentage <= 100:
        raise ValueError(f"percentage must be between 0 and 100, got {percentage}")
    status_reported.send(
        sender=None,
        agent_id=parse_agent_id(agent_id),
        message=message,
        percentage=percentage,
        status=Status(status),
    )
