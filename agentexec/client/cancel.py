"""Cancelling runs, through Celery's own revoke.

A queued run is revoked and never starts, even on a worker that starts later (see
`agentexec.tasks.revoked`). A running one is revoked with `terminate=True`: its worker
cancels the agent's coroutine, and the run ends CANCELED.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from typing import Any

import redis
from celery import states
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from agentexec.config import get_settings
from agentexec.db.models import Activity, ActivityChild
from agentexec.eventlog.event import Event, clean_message
from agentexec.exceptions import ActivityStoreError, TaskCanceledError, UnknownAgentError
from agentexec.ids import parse_agent_id
from agentexec.runtime import get_runtime
from agentexec.states import UNFINISHED, EventKind, Status
from agentexec.tasks import checkpoints, composition, revoked
from agentexec.tasks.app import app

logger = logging.getLogger(__name__)


async def cancel(
    agent_id: uuid.UUID | str, reason: str = "Canceled", *, owner: str | None = None
) -> bool:
    """Cancel a run. Returns False when it had already ended.

    While the activity database is unreachable the run is canceled all the same, and its
    CANCELED row appears when the database is back (unless `owner` is given: then the
    database must say whose run it is).

    Args:
        agent_id: the run.
        reason: why; its CANCELED log line and `TaskCanceledError.reason` say it.
        owner: only a run of this owner; another owner's run is unknown.

    Raises:
        UnknownAgentError: no run has this id (a KeyError), or it is another owner's.
        InvalidAgentIdError: the id is not a UUID (a KeyError).
        ActivityStoreError: `owner` is given and the database cannot say whose run it is.
    """
    reason = clean_message(reason, get_settings().max_message_bytes)
    return await asyncio.to_thread(cancel_now, parse_agent_id(agent_id), reason, owner)


def cancel_now(agent_id: uuid.UUID, reason: str, owner: str | None) -> bool:
    """`cancel`, on this thread. A pipeline run's unfinished steps and children are
    canceled with it."""
    runtime = get_runtime()
    try:
        with Session(runtime.engine) as session:
            row = session.execute(
                select(Activity.status, Activity.owner, Activity.agent_type).where(
                    Activity.agent_id == agent_id
                )
            ).first()
    except (SQLAlchemyError, ActivityStoreError) as exc:
        if owner is not None:
            raise ActivityStoreError(
                runtime.engine.url.render_as_string(hide_password=True),
                f"whose run {agent_id} is cannot be checked: {type(exc).__name__}",
            ) from exc
        status = None  # the database cannot say: cancel whatever state the run is in
    else:
        if row is None or (owner is not None and row.owner != owner):
            raise UnknownAgentError(agent_id)
        if row.status not in UNFINISHED:
            return False
        status = row.status
    if composition.is_composed(str(agent_id)):
        if not composition.end(str(agent_id), "canceled"):
            return False  # it had ended: the row just did not say so yet
        for child in composition.children(str(agent_id)):
            try:
                cancel_now(uuid.UUID(child), reason, None)
            except UnknownAgentError:  # published, its row not written yet
                revoke_runs([uuid.UUID(child)], reason)
        status = Status.QUEUED  # nothing runs the pipeline run itself: record its end here
    revoke_runs([agent_id], reason)
    if status is not Status.RUNNING:  # a waiting run's stored state goes at once
        try:
            checkpoints.forget(runtime.events.client(), str(agent_id))
        except redis.RedisError:
            pass  # it expires; an approval finds the run CANCELED
    # A queued run is skipped by the worker that takes it; a running one is ended by its own.
    app.control.revoke(str(agent_id), terminate=True)
    if status is not Status.RUNNING:
        events = runtime.events.record(
            [Event(agent_id, Status.CANCELED, reason, kind=EventKind.CANCELED, owner=owner)]
        )
        try:
            runtime.write(events)
        except ActivityStoreError:
            pass
    if row is not None:  # a pipeline's step or child: the pipeline cannot complete now
        error = TaskCanceledError(str(agent_id), reason)
        fail_pipelines([(str(agent_id), row.agent_type, error)])
    return True


def fail_pipeline(parent: Any, task: str, agent_id: str, error: BaseException) -> None:
    """A pipeline's step or child (a run whose message carried `parent`) failed for good,
    was lost, or was canceled on its own: the pipeline ends ERROR, naming it, and its other
    unfinished runs are canceled. Nothing when the pipeline had ended (canceling a pipeline
    cancels its children)."""
    if not isinstance(parent, dict):
        return
    for other in composition.step_failed(parent, task, agent_id, error):
        try:
            cancel_now(uuid.UUID(other), f"Pipeline failed: step {parent['step']!r}", None)
        except Exception:  # never published, or ended: nothing to cancel
            logger.debug("child %s of %s not canceled", other, parent["id"], exc_info=True)


def fail_pipelines(ended: list[tuple[str, str, BaseException]]) -> None:
    """`fail_pipeline` for runs `(agent_id, task, error)`, their pipelines found from the
    links in SQL (for callers that have no message to read them from)."""
    if not ended:
        return
    ids = [uuid.UUID(agent_id) for agent_id, _, _ in ended]
    try:
        with Session(get_runtime().engine) as session:
            found = session.scalars(select(ActivityChild).where(ActivityChild.agent_id.in_(ids)))
            links = {str(link.agent_id): link for link in found}
    except (SQLAlchemyError, ActivityStoreError):
        logger.warning("pipelines of %d ended runs not checked", len(ids), exc_info=True)
        return
    for agent_id, task, error in ended:
        link = links.get(agent_id)
        if link is None:
            continue
        parent: dict[str, Any] = {"id": str(link.parent_id), "step": link.step}
        if "." in link.position:
            parent["join"] = {"position": int(link.position.split(".", 1)[1])}
        fail_pipeline(parent, task, agent_id, error)


def revoke_runs(agent_ids: Iterable[uuid.UUID], reason: str) -> None:
    """Remember runs as revoked, with why, for workers now and later, and tell waiters.

    Each run's result is stored as revoked before any broadcast: every Celery worker that
    hears a revoke stores a pending run's result as revoked with its own words, "revoked",
    unless one is there.
    """
    task_ids = [str(agent_id) for agent_id in agent_ids]
    revoked.remember(app, task_ids, reason)
    for task_id in task_ids:
        if app.backend.get_state(task_id) not in states.READY_STATES:
            app.backend.mark_as_revoked(task_id, reason)
