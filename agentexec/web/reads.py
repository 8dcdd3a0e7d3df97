"""The router's reads of the activity tables, scoped to the caller's owner.

A fresh database reads as empty: the tables are created on first use when
`AGENTEXEC_CREATE_TABLES` allows, and while they are missing a list is empty and a run is
unknown. Another owner's run is unknown too (404), exactly like an id nobody has.
"""

from __future__ import annotations

import asyncio
import uuid

from fastapi import HTTPException
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from agentexec.client import activity
from agentexec.client.schemas import ActivityDetail, ActivityPage
from agentexec.exceptions import ActivityStoreError, InvalidAgentIdError
from agentexec.ids import parse_agent_id
from agentexec.runtime import get_runtime
from agentexec.states import Status


def _engine() -> Engine | None:
    """The activity engine, its tables ready; None while the tables are missing (and may not
    be created here)."""
    try:
        return get_runtime().ready_engine()
    except ActivityStoreError as exc:
        if "missing tables" in exc.detail:
            return None
        raise


def page(
    page: int, page_size: int, status: Status | None, task: str | None, owner: str | None
) -> ActivityPage:
    """One page of runs, newest first."""
    engine = _engine()
    if engine is None:
        return ActivityPage(items=[], total=0, page=page, page_size=page_size, pages=0)
    with Session(engine) as session:
        return activity.list(
            session, page=page, page_size=page_size, status=status, agent_type=task, owner=owner
        )


def detail_or_404(agent_id: str, owner: str | None) -> ActivityDetail:
    """The run with its log; 404 when it is unknown, malformed or another owner's."""
    engine = _engine()
    found = None
    if engine is not None:
        with Session(engine) as session:
            found = activity.detail(session, agent_id, owner=owner)
    if found is None:
        raise HTTPException(404, f"no run has the id {agent_id!r}")
    return found


async def known(agent_id: str, owner: str | None, scoped: bool) -> uuid.UUID:
    """The id of a run the activity database knows (the caller's, when `scoped`); 404
    otherwise.

    Unscoped, while the database cannot answer, the result backend decides (`get_result`);
    scoped, the database must say whose run it is (503 until it can).
    """
    try:
        key = parse_agent_id(agent_id)
    except InvalidAgentIdError:
        raise HTTPException(404, f"no run has the id {agent_id!r}") from None
    try:
        await asyncio.to_thread(detail_or_404, str(key), owner)
    except (SQLAlchemyError, ActivityStoreError):
        if scoped:
            raise
    return key
