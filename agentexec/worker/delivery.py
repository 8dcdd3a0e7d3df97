"""Delivery guarantees on the worker side, kept in the broker's Redis.

- **Delivery counts.** Each attempt of a run counts its deliveries
  (`<prefix>.deliveries.<id>.<retry>`). A delivery past `AGENTEXEC_MAX_DELIVERIES` is not
  run: its worker died that many times with it (a poison agent), so it ends ERROR
  "worker lost N times" and its message is acknowledged. A delivery of a run that has already
  finished is acknowledged unrun.
- A delivery of a run that still runs on another live worker (`tasks.presence.live_workers`)
  waits for it.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, states
from greenlet import getcurrent, greenlet

from agentexec.config import get_settings
from agentexec.runtime import get_runtime
from agentexec.tasks.presence import live_workers
from agentexec.worker import lanes

logger = logging.getLogger(__name__)


def events_client() -> redis.Redis:
    """The client of the broker's Redis, where the delivery bookkeeping lives."""
    return get_runtime().events.client()


# Delivery counts


#: Held by a run on its last allowed delivery, so that such runs take their last chance one
#: at a time in a process: a poison agent then dies alone, and the runs it killed before
#: (on their own last delivery, waiting here uncounted) complete.
_last_chance = threading.Lock()
#: The run holding `_last_chance`, and the greenlet (of its lane, or of its thread) that took it.
_holder: tuple[str, greenlet] | None = None


def admit(
    app: Celery,
    agent_id: str,
    retries: int,
    hostname: str | None,
    running_here: Callable[[str], bool],
    resumes: int = 0,
) -> int | None:
    """Count a delivery of this attempt of a run; None when it must not run (it finished).

    A delivery while the same run is still running (here, or on another live worker, after a
    broker outage made its message look abandoned) waits for that run first. A delivery that
    would be the last allowed one waits for `_last_chance`, and holds it until
    `release_delivery`. Returns 0 when Redis cannot count.

    Args:
        app: the worker's app.
        agent_id: the run.
        retries: which attempt of it.
        hostname: this worker's node name.
        running_here: whether a run is running in this process.
        resumes: how often the run was queued again to resume (each counts afresh).
    """
    settings = get_settings()
    key = settings.keys.deliveries(agent_id, retries, resumes)
    try:
        count = _incr(key, settings.result_expires, 1)
        if count > 1:
            _wait_while_running(agent_id, hostname, running_here)
            if has_finished(app, agent_id):
                return None
        if count >= settings.max_deliveries > 1:
            global _holder
            waited = not _last_chance.acquire(blocking=False)
            if waited:
                # Another run takes its last chance here: wait for it, uncounted.
                _incr(key, settings.result_expires, -1)
                lanes.acquire(_last_chance)
            _holder = (agent_id, getcurrent())  # before anything that can raise
            if waited:
                count = _incr(key, settings.result_expires, 1)
    except redis.RedisError as exc:
        logger.warning("delivery of %s not counted: %s", agent_id, exc)
        return 0
    return count


#: Add to a counter and renew its expiry: atomic, and one command rather than four.
_INCR = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return n
"""


@functools.cache
def _incr_script(client: redis.Redis) -> Any:
    return client.register_script(_INCR)


def _incr(key: str, ttl: int, by: int) -> int:
    client = events_client()
    return int(_incr_script(client)(keys=[key], args=[by, ttl], client=client))


def _wait_while_running(
    agent_id: str, hostname: str | None, running_here: Callable[[str], bool]
) -> None:
    """Wait while this run runs in this process or is held by another live worker."""
    settings = get_settings()
    client = events_client()
    waited = False
    while True:
        running = running_here(agent_id) or any(
            client.sismember(settings.keys.held(host), agent_id)
            for host in live_workers(client, settings)
            if host != hostname
        )
        if not running:
            return
        if not waited:
            logger.warning("run %s delivered again while it still runs; waiting for it", agent_id)
            waited = True
        lanes.sleep(settings.heartbeat_every)


def release_delivery(agent_id: str) -> None:
    """The run that counted its delivery here (this lane's greenlet, or this thread) ended."""
    global _holder
    if _holder == (agent_id, getcurrent()):
        _holder = None
        _last_chance.release()


def uncount_delivery(agent_id: str, retries: int, resumes: int = 0) -> None:
    """Take back a delivery that ended cleanly without running out (requeued at shutdown)."""
    key = get_settings().keys.deliveries(agent_id, retries, resumes)
    try:
        events_client().decr(key)
    except redis.RedisError as exc:
        logger.warning("delivery of %s not uncounted: %s", agent_id, exc)


def has_finished(app: Celery, agent_id: str) -> bool:
    """Whether the result backend holds this run's final state."""
    try:
        return app.backend.get_state(agent_id) in states.READY_STATES
    except Exception:  # the backend cannot say: run it, at-least-once
        return False
