"""Deciding a waiting run's approvals, and resuming a stopped run.

A run whose agent called a tool declared with `@function_tool(needs_approval=True)` waits,
WAITING, holding no worker slot. `approve` and `reject` decide one pending call each; the
decision that settles the last one queues the run again, at its original queue and
priority, and any worker continues it from its stored state. `resume` queues again a run
that ended ERROR at a turn boundary (its turn limit, say) from its checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import redis
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from agentexec.config import get_settings, redact
from agentexec.db.models import Activity
from agentexec.eventlog.event import Event, clean_message
from agentexec.exceptions import (
    ActivityStoreError,
    ApprovalError,
    BrokerUnavailableError,
    NotResumableError,
    UnknownAgentError,
    describe,
)
from agentexec.ids import parse_agent_id
from agentexec.runtime import get_runtime
from agentexec.states import EventKind, Status
from agentexec.tasks import checkpoints
from agentexec.tasks.app import app
from agentexec.tasks.budgets import parse_budget
from agentexec.tasks.queued import BUDGET_HEADER, OWNER_HEADER, RESUME_HEADER, WHY_HEADER


async def approve(
    agent_id: uuid.UUID | str,
    call_id: str | None = None,
    *,
    message: str | None = None,
    owner: str | None = None,
    by: str | None = None,
) -> bool:
    """Approve a pending tool call of a WAITING run: the tool runs when the run goes on.

    Args:
        agent_id: the run.
        call_id: the tool call (`detail(...).approvals`); None means the only pending one.
        message: a note kept with the decision.
        owner: only a run of this owner; another owner's run is unknown.
        by: who decided, as the activity shows it; `owner` when not given.

    Returns:
        True when this call decided it; False when it was decided already, or the run
        waits for nothing (it went on, ended or was canceled).

    Raises:
        UnknownAgentError: no run has this id (a KeyError), or it is another owner's.
        ApprovalError: `call_id` is None while several calls wait, or no pending call of
            the run has this id (a ValueError).
    """
    return await _decide(agent_id, call_id, True, message, owner, by)


async def reject(
    agent_id: uuid.UUID | str,
    call_id: str | None = None,
    *,
    message: str | None = None,
    owner: str | None = None,
    by: str | None = None,
) -> bool:
    """Reject a pending tool call of a WAITING run: the tool never runs, and the model is
    told `message` (or the SDK's default rejection text) in its place. Otherwise as
    `approve`."""
    return await _decide(agent_id, call_id, False, message, owner, by)


async def resume(
    agent_id: uuid.UUID | str,
    *,
    max_turns: int | None = None,
    max_tokens: int | None = None,
    max_cost: float | None = None,
    owner: str | None = None,
) -> bool:
    """Continue a run that ended ERROR at a turn boundary (its turn limit or its budget,
    for example) from its last checkpoint: it is queued again and goes on where it stopped.

    Args:
        agent_id: the run.
        max_turns: turns it may take from here; by default, as many as its own limit.
        max_tokens: its new token budget (for the whole run, what it spent included).
        max_cost: its new cost budget, likewise.
        owner: only a run of this owner; another owner's run is unknown.

    Returns:
        True: the run is queued again.

    Raises:
        UnknownAgentError: no run has this id, or it is another owner's.
        NotResumableError: the run has not ended ERROR, or it has no checkpoint (its task
            opted out, it stopped before its first turn ended, or its checkpoint expired
            after `AGENTEXEC_CHECKPOINT_RETENTION`).
    """
    if max_turns is not None and max_turns < 1:
        raise ValueError(f"max_turns must be at least 1, got {max_turns}")
    budget = parse_budget(max_tokens, max_cost)
    run = str(parse_agent_id(agent_id))
    return await asyncio.to_thread(_resume, run, max_turns, budget, owner)


async def _decide(
    agent_id: uuid.UUID | str,
    call_id: str | None,
    approved: bool,
    message: str | None,
    owner: str | None,
    by: str | None,
) -> bool:
    run = str(parse_agent_id(agent_id))
    limit = get_settings().max_message_bytes
    message = clean_message(message, limit) if message else None
    return await asyncio.to_thread(_decide_sync, run, call_id, approved, message, owner, by)


def _decide_sync(
    agent_id: str,
    call_id: str | None,
    approved: bool,
    message: str | None,
    owner: str | None,
    by: str | None,
) -> bool:
    runtime = get_runtime()
    client = runtime.events.client()
    if owner is not None:
        request = checkpoints.waiting_since(client, agent_id)
        if request and request.get("owner") != owner:
            raise UnknownAgentError(agent_id)
    decided = checkpoints.decide(client, agent_id, call_id, approved, message, by or owner)
    if decided.code == -1:
        _status(agent_id, owner)  # unknown raises; a known run waits for nothing
        return False
    if decided.code == -2:
        raise ApprovalError(agent_id, "several calls wait: give a call_id", decided.pending)
    if decided.code == -3:
        raise ApprovalError(agent_id, f"no pending call {call_id!r}", decided.pending)
    if decided.code == 0:
        return False
    if decided.code == 2:
        try:
            requeue(agent_id, decided.request)
        except (OSError, KombuOperationalError, redis.RedisError) as exc:
            # Not queued: the decision is taken back, so the run waits and can be decided again.
            deadline = float(decided.request.get("deadline") or time.time() + 3_600)
            with contextlib.suppress(redis.RedisError):
                checkpoints.undecide(client, agent_id, decided.call_id, deadline)
            raise BrokerUnavailableError(redact(str(app.conf.broker_url)), describe(exc)) from exc
    verb = "Approved" if approved else "Rejected"
    said = f" by {by or owner}" if by or owner else ""
    note = f": {message}" if message else ""
    event = Event(
        uuid.UUID(agent_id),
        Status.WAITING,
        clean_message(f"{verb} {decided.tool} ({decided.call_id}){said}{note}", 4 * 1024),
        kind=EventKind.DECISION,
        owner=owner,
        data={
            "call_id": decided.call_id,
            "tool": decided.tool,
            "approved": approved,
            "message": message,
            "by": by or owner,
        },
    )
    events = runtime.events.record([event])
    try:
        runtime.write(events)
    except ActivityStoreError:
        pass  # the projector applies it once the database is back
    return True


def _resume(
    agent_id: str, max_turns: int | None, budget: dict[str, float], owner: str | None
) -> bool:
    status = _status(agent_id, owner)
    if status is not Status.ERROR:
        raise NotResumableError(agent_id, f"it is {status.value}, not ERROR")
    client = get_runtime().events.client()
    request = checkpoints.claim_for_resume(client, agent_id, max_turns)
    if not request:
        raise NotResumableError(agent_id, "it has no checkpoint to resume from")
    if request.get("missing"):
        raise NotResumableError(agent_id, "its checkpoint does not say how to queue it again")
    app.backend.forget(agent_id)  # its ERROR result: waiters wait for the new ending
    if budget:
        request["budget"] = {**(request.get("budget") or {}), **budget}
    requeue(agent_id, request)
    return True


def requeue(
    agent_id: str,
    request: dict[str, Any],
    why: str | None = None,
    countdown: float = 0.0,
    headers: dict[str, Any] | None = None,
) -> None:
    """Queue a stopped (or parked) run again, as its request says; `why` is its QUEUED log
    line ("Queued again to resume" by default), `countdown` when it may start."""
    headers = {**(headers or {}), RESUME_HEADER: int(request.get("resumes") or 0) + 1}
    if why is not None:
        headers[WHY_HEADER] = why
    if request.get("owner"):
        headers[OWNER_HEADER] = request["owner"]
    if request.get("budget"):
        headers[BUDGET_HEADER] = request["budget"]
    options: dict[str, Any] = {}
    if countdown > 0:
        options["countdown"] = countdown
    if request.get("priority") is not None:
        options["priority"] = request["priority"]
    app.send_task(
        str(request["task"]),
        args=(request.get("context"),),
        task_id=agent_id,
        queue=request.get("queue"),
        retries=int(request.get("retries") or 0),
        headers=headers,
        **options,
    )


def _status(agent_id: str, owner: str | None) -> Status:
    """The run's status, or UnknownAgentError (also for another owner's run)."""
    runtime = get_runtime()
    try:
        with Session(runtime.engine) as session:
            row = session.execute(
                select(Activity.status, Activity.owner).where(
                    Activity.agent_id == uuid.UUID(agent_id)
                )
            ).first()
    except SQLAlchemyError as exc:
        raise ActivityStoreError(
            runtime.engine.url.render_as_string(hide_password=True),
            f"run {agent_id} cannot be looked up: {type(exc).__name__}",
        ) from exc
    if row is None or (owner is not None and row.owner != owner):
        raise UnknownAgentError(agent_id)
    return Status(row.status)
