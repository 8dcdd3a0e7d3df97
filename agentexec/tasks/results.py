"""Results, read from Celery's Redis result backend without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
import weakref
from typing import Any

from celery import states
from kombu import pools
from kombu.utils.collections import eqhash
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from agentexec.config import get_settings
from agentexec.db.models import Activity
from agentexec.eventlog.hub import close_hubs
from agentexec.exceptions import (
    ActivityStoreError,
    InvalidRequestError,
    TaskCanceledError,
    TaskFailedError,
    UnknownAgentError,
)
from agentexec.ids import parse_agent_id
from agentexec.runtime import get_runtime
from agentexec.states import Status
from agentexec.tasks.app import app
from agentexec.tasks.listener import ResultListener

#: Seconds a waiter gives the result to arrive before it asks the database whether the run
#: exists at all: most runs waited for are known, and a fast one then costs no query.
GRACE = 0.5
#: Seconds between reads of the result key, in case a notification was missed while the
#: listener reconnected.
KEY_POLL = 5.0
#: Seconds between looks at the activity row, for runs that end without a result (marked
#: CANCELED by `cancel_pending`, or rejected by a worker). Every other ending stores one.
ACTIVITY_POLL = 30.0

#: One listener per event loop that waits for results; it lives and dies with its loop.
_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ResultListener] = (
    weakref.WeakKeyDictionary()
)


async def get_result(agent_id: uuid.UUID | str, timeout: float = 30.0) -> Any:
    """Wait up to `timeout` seconds for a run's return value, as JSON data.

    Raises:
        UnknownAgentError: no run has this id (a KeyError).
        InvalidAgentIdError: the id is not a UUID (a KeyError).
        InvalidRequestError: `timeout` is not above 0 and at most
            `AGENTEXEC_MAX_RESULT_TIMEOUT` (a ValueError).
        TimeoutError: the run has not finished in time.
        TaskFailedError: the run raised; `reason` says what.
        TaskCanceledError: the run was revoked or canceled.

    The result backend is the source of truth. The activity table only answers whether an
    id is known at all; while it is unreachable or missing, the wait goes on.
    """
    limit = get_settings().max_result_timeout
    if not 0 < timeout <= limit:
        raise InvalidRequestError(
            f"timeout must be above 0 and at most {limit:g} seconds, got {timeout!r}"
        )
    key_id = str(parse_agent_id(agent_id))
    backend: Any = app.backend
    key = backend.get_key_for_task(key_id).decode()
    listener = _listener(backend.url)
    start = time.monotonic()
    deadline = start + timeout
    next_activity_check = start + GRACE
    known = False  # a run once found keeps waiting, even if its row is deleted
    # Subscribe before reading, so a result stored in between is not missed.
    stored = await listener.watch(key)
    try:
        while True:
            stored.clear()
            payload = await listener.client.get(key)
            if payload is not None:
                meta: dict[str, Any] = backend.decode(payload)
                if meta["status"] in states.READY_STATES:
                    return _unwrap(key_id, meta)
            now = time.monotonic()
            if payload is None and now >= next_activity_check:
                try:
                    activity = await asyncio.to_thread(_activity, key_id)
                except (SQLAlchemyError, ActivityStoreError):
                    activity = None  # the database cannot say; the result backend will
                else:
                    if activity is None and not known:
                        raise UnknownAgentError(key_id)
                known = True
                if activity is not None and activity[0] in (Status.CANCELED, Status.ERROR):
                    error = TaskCanceledError if activity[0] is Status.CANCELED else TaskFailedError
                    raise error(key_id, activity[1] or activity[0].value)
                next_activity_check = now + ACTIVITY_POLL
            if now >= deadline:
                raise TimeoutError(f"agent {key_id} did not finish within {timeout}s")
            wake = min(deadline, now + KEY_POLL)
            if not known:
                wake = min(wake, next_activity_check)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stored.wait(), max(wake - now, 0.0))
    finally:
        await listener.unwatch(key, stored)


#: Result keys read per MGET by `gather`.
_GATHER_CHUNK = 1000


async def gather(*runs: Any, timeout: float = 300.0) -> list[Any]:
    """The results of `runs` (handles from `ax.enqueue` or `task.delay`, or agent ids), in
    the order given, waiting up to `timeout` seconds in all.

    The results already stored are read together (one `MGET` per thousand runs); only the
    runs still going are waited for, each as `get_result` waits. The first failure ends the
    wait at once and is raised; the other runs go on.

    Raises:
        TaskFailedError: a run raised (the first found).
        TaskCanceledError: a run was canceled.
        UnknownAgentError: no run has one of the ids.
        TimeoutError: not every run finished in time.
        InvalidRequestError: `timeout` is out of range, as for `get_result`.
    """
    limit = get_settings().max_result_timeout
    if not 0 < timeout <= limit:
        raise InvalidRequestError(
            f"timeout must be above 0 and at most {limit:g} seconds, got {timeout!r}"
        )
    deadline = time.monotonic() + timeout
    ids = [str(parse_agent_id(getattr(run, "agent_id", run))) for run in runs]
    backend: Any = app.backend
    client = _listener(backend.url).client
    found: dict[int, Any] = {}
    for start in range(0, len(ids), _GATHER_CHUNK):
        chunk = ids[start : start + _GATHER_CHUNK]
        keys = [backend.get_key_for_task(agent_id).decode() for agent_id in chunk]
        for index, payload in enumerate(await client.mget(keys), start):
            if payload is None:
                continue
            meta: dict[str, Any] = backend.decode(payload)
            if meta["status"] in states.READY_STATES:
                found[index] = _unwrap(ids[index], meta)  # raises for a failed run
    waiting = {
        index: asyncio.ensure_future(get_result(ids[index], max(deadline - time.monotonic(), 1e-3)))
        for index in range(len(ids))
        if index not in found
    }
    try:
        pending = set(waiting.values())
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for future in done:
                future.result()  # the first failure, raised
    finally:
        for future in waiting.values():
            future.cancel()
    found.update((index, future.result()) for index, future in waiting.items())
    return [found[index] for index in range(len(ids))]


async def close_redis() -> None:
    """Close agentexec's Redis connections in this process. Safe to call more than once."""
    listener = _listeners.pop(asyncio.get_running_loop(), None)
    if listener is not None:
        await listener.close()
    await close_hubs()
    await asyncio.to_thread(_close_sync, app)


def _close_sync(app: Any) -> None:
    """Close the app's broker connections, leaving it able to publish again later."""
    if app._pool is None:
        return
    connection = app.connection_for_write()
    for group in (pools.producers, pools.connections):
        pool = dict.pop(group, eqhash(connection), None)
        if pool is not None:
            pool.force_close_all()
    # Forget the closed pools, as Celery does in a forked child.
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None
    connection.release()


def _listener(url: str) -> ResultListener:
    loop = asyncio.get_running_loop()
    listener = _listeners.get(loop)
    if listener is None:
        listener = _listeners[loop] = ResultListener(url)
    return listener


def _unwrap(agent_id: str, meta: dict[str, Any]) -> Any:
    status = meta["status"]
    if status == states.SUCCESS:
        return meta["result"]
    if status == states.REVOKED:
        # The reason alone: the exception is always Celery's TaskRevokedError.
        reason = _exception_text(meta.get("result"), typed=False)
        raise TaskCanceledError(agent_id, reason or "revoked")
    raise TaskFailedError(agent_id, _exception_text(meta.get("result")) or status)


def _exception_text(result: Any, typed: bool = True) -> str:
    """A stored exception as `Type: message` (or the message alone, not `typed`)."""
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, list | tuple):
            message = " ".join(str(m) for m in message)
        if not typed:
            return str(message or "")
        return f"{result['exc_type']}: {message}" if message else str(result["exc_type"])
    return str(result) if result is not None else ""


def _activity(agent_id: str) -> tuple[Status, str | None] | None:
    """The run's status and last message; None when the id is unknown."""
    with Session(get_runtime().engine) as session:
        row = session.execute(
            select(Activity.status, Activity.latest_log).where(
                Activity.agent_id == uuid.UUID(agent_id)
            )
        ).first()
    return (row[0], row[1]) if row is not None else None
