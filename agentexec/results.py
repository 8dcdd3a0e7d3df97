"""Results, read from Celery's Redis result backend without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

from celery import states
from kombu import pools
from kombu.utils.collections import eqhash

from agentexec.activity.models import Status
from agentexec.exceptions import TaskCanceledError, TaskFailedError
from agentexec.ids import parse_agent_id
from agentexec.listener import ResultListener

#: Seconds between looks at the activity row and the result key while waiting, doubling up
#: to `MAX_POLL`. They catch runs that end without a result (canceled before they started,
#: rejected, or lost with their worker) and any notification missed while reconnecting.
FIRST_POLL = 1.0
MAX_POLL = 10.0

_listeners: dict[asyncio.AbstractEventLoop, ResultListener] = {}


async def get_result(agent_id: uuid.UUID | str, timeout: float = 30.0) -> Any:
    """Wait up to `timeout` seconds for a run's return value, as JSON data.

    Raises:
        KeyError: no run has this id (a malformed id included).
        TimeoutError: the run has not finished in time.
        TaskFailedError: the run raised; `reason` says what.
        TaskCanceledError: the run was revoked or canceled.
    """
    from agentexec.application import app

    key_id = str(parse_agent_id(agent_id))
    backend: Any = app.backend
    key = backend.get_key_for_task(key_id).decode()
    listener = _listener(backend.url)
    deadline = time.monotonic() + timeout
    # Subscribe before reading, so a result stored in between is not missed.
    stored = await listener.watch(key)
    try:
        known = False  # a run once found keeps waiting, even if its row is deleted
        poll = FIRST_POLL
        while True:
            stored.clear()
            payload = await listener.client.get(key)
            meta: dict[str, Any] | None = backend.decode(payload) if payload else None
            if meta is not None and meta["status"] in states.READY_STATES:
                return _unwrap(key_id, meta)
            if meta is None:
                activity = await asyncio.to_thread(_activity, key_id)
                if activity is None and not known:
                    raise KeyError(key_id)
                known = True
                if activity is not None and activity[0] in (Status.CANCELED, Status.ERROR):
                    error = TaskCanceledError if activity[0] is Status.CANCELED else TaskFailedError
                    raise error(key_id, activity[1] or activity[0].value)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"agent {key_id} did not finish within {timeout}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stored.wait(), min(remaining, poll))
            poll = min(poll * 2, MAX_POLL)
    finally:
        await listener.unwatch(key, stored)


async def close_redis() -> None:
    """Close agentexec's Redis connections in this process. Safe to call more than once."""
    from agentexec.application import app

    listener = _listeners.pop(asyncio.get_running_loop(), None)
    if listener is not None:
        await listener.close()
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
        for stale in [lp for lp in _listeners if lp.is_closed()]:
            del _listeners[stale]
        listener = _listeners[loop] = ResultListener(url)
    return listener


def _unwrap(agent_id: str, meta: dict[str, Any]) -> Any:
    status = meta["status"]
    if status == states.SUCCESS:
        return meta["result"]
    reason = _exception_text(meta.get("result"))
    if status == states.REVOKED:
        raise TaskCanceledError(agent_id, reason or "revoked")
    raise TaskFailedError(agent_id, reason or status)


def _exception_text(result: Any) -> str:
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, list | tuple):
            message = " ".join(str(m) for m in message)
        return f"{result['exc_type']}: {message}" if message else str(result["exc_type"])
    return str(result) if result is not None else ""


def _activity(agent_id: str) -> tuple[Status, str | None] | None:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from agentexec.activity import store
    from agentexec.activity.models import Activity

    with Session(store.get_engine()) as session:
        row = session.execute(
            select(Activity.status, Activity.latest_log).where(
                Activity.agent_id == uuid.UUID(agent_id)
            )
        ).first()
    return (row[0], row[1]) if row is not None else None
