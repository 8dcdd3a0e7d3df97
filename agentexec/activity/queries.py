"""The activity API the web app calls with its own sync `Session`."""

from __future__ import annotations

import builtins
import uuid

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from agentexec.activity.schemas import ActivityDetail, ActivityListItem, ActivityPage
from agentexec.config import get_settings
from agentexec.db import projection
from agentexec.db.models import ACTIVE, Activity, Status
from agentexec.events import Event, EventKind, clock_seq
from agentexec.exceptions import InvalidAgentIdError, InvalidRequestError
from agentexec.ids import parse_agent_id
from agentexec.runtime import get_runtime


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
    """One page of runs, newest first.

    Raises:
        InvalidRequestError: `page` is below 1, or `page_size` is below 1 or above
            `AGENTEXEC_MAX_PAGE_SIZE` (500).
    """
    limit = get_settings().max_page_size
    if page < 1:
        raise InvalidRequestError(f"page must be 1 or more, got {page}")
    if not 1 <= page_size <= limit:
        raise InvalidRequestError(f"page_size must be between 1 and {limit}, got {page_size}")
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

    Meant for startup cleanup, when the runs are known to be gone. Each cancel is also an
    event in the event log, so watchers see it. A worker that still runs one of them goes
    on, but the row stays CANCELED.
    """
    ids: builtins.list[uuid.UUID] = builtins.list(
        session.scalars(select(Activity.agent_id).where(Activity.status.in_(ACTIVE)))
    )
    if not ids:
        return 0
    events = [Event(i, Status.CANCELED, reason, kind=EventKind.CANCELED) for i in ids]
    try:
        events = get_runtime().events.append(events)
    except redis.RedisError:
        events = [e.appended(clock_seq()) for e in events]
    projection.apply(session.connection(), events)
    session.commit()
    return len(ids)
