"""Delivery guarantees on the worker side, kept in the broker's Redis.

- **Delivery counts.** Each attempt of a run counts its deliveries
  (`<prefix>.deliveries.<id>.<retry>`). A delivery past `AGENTEXEC_MAX_DELIVERIES` is not
  run: its worker died that many times with it (a poison agent), so it ends ERROR
  "worker lost N times" and its message is acknowledged. A delivery of a run that has already
  finished is acknowledged unrun.
- **Shutdown.** After SIGTERM, in-flight agents get `AGENTEXEC_SHUTDOWN_TIMEOUT` seconds.
  Those still running are then cancelled and their messages requeued at once.

Heartbeats, which keep a running run's message from being redelivered, and the reaper, which
ends runs that can no longer end by themselves, are in `agentexec.supervision`.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from typing import Any

import redis
from celery import Celery, states
from celery.exceptions import Reject

from agentexec.config import Settings, get_settings
from agentexec.runtime import get_runtime

logger = logging.getLogger(__name__)

#: The message of a run's COMPLETE event.
TASK_COMPLETED = "Task completed"


def redis_key(settings: Settings, *parts: str) -> str:
    """A key of the delivery bookkeeping, under the queue prefix: `<prefix>.<parts>`."""
    return ".".join((settings.queue_prefix, *parts))


def events_client() -> redis.Redis:
    """The client of the broker's Redis, where the delivery bookkeeping lives."""
    return get_runtime().events.client()


# Delivery counts


#: Held by a run on its last allowed delivery, so that such runs take their last chance one
#: at a time in a process: a poison agent then dies alone, and the runs it killed before
#: (on their own last delivery, waiting here uncounted) complete.
_last_chance = threading.Lock()
#: The run holding `_last_chance` on this thread, if any.
_holder = threading.local()


def admit(app: Celery, agent_id: str, retries: int, hostname: str | None) -> int | None:
    """Count a delivery of this attempt of a run; None when it must not run (it finished).

    A delivery while the same run is still running (here, or on another live worker, after a
    broker outage made its message look abandoned) waits for that run first. A delivery that
    would be the last allowed one waits for `_last_chance`, and holds it until
    `release_delivery`. Returns 0 when Redis cannot count.
    """
    settings = get_settings()
    key = redis_key(settings, "deliveries", agent_id, str(retries))
    try:
        count = _incr(key, settings.result_expires, 1)
        if count > 1:
            _wait_while_running(agent_id, hostname)
            if has_finished(app, agent_id):
                return None
        if count >= settings.max_deliveries > 1:
            if not _last_chance.acquire(blocking=False):
                # Another run takes its last chance here: wait for it, uncounted.
                _incr(key, settings.result_expires, -1)
                _last_chance.acquire()
                count = _incr(key, settings.result_expires, 1)
            _holder.agent_id = agent_id
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


def _wait_while_running(agent_id: str, hostname: str | None) -> None:
    """Wait while this run runs in this process or is held by another live worker."""
    settings = get_settings()
    client = events_client()
    waited = False
    while True:
        running = get_runtime().loop.is_running(agent_id) or any(
            client.sismember(redis_key(settings, "held", host), agent_id)
            for host in live_workers(client, settings)
            if host != hostname
        )
        if not running:
            return
        if not waited:
            logger.warning("run %s delivered again while it still runs; waiting for it", agent_id)
            waited = True
        time.sleep(settings.heartbeat_every)


def release_delivery(agent_id: str) -> None:
    """The run that counted its delivery on this thread has ended."""
    if getattr(_holder, "agent_id", None) == agent_id:
        _holder.agent_id = None
        _last_chance.release()


def uncount_delivery(agent_id: str, retries: int) -> None:
    """Take back a delivery that ended cleanly without running out (requeued at shutdown)."""
    key = redis_key(get_settings(), "deliveries", agent_id, str(retries))
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


# Workers alive


def live_workers(client: redis.Redis, settings: Settings) -> list[str]:
    """Workers that beat within three heartbeat intervals."""
    horizon = time.time() - 3 * settings.heartbeat_every
    beats: dict[bytes, bytes] = client.hgetall(redis_key(settings, "workers"))  # type: ignore[assignment]
    return [host.decode() for host, at in beats.items() if float(at) >= horizon]


# Shutdown


REQUEUED_AT_SHUTDOWN = "requeued at shutdown"


class QuietRequeue(logging.Filter):
    """Drops the traceback Celery logs with a rejected task, for runs requeued at shutdown:
    they are an expected part of a shutdown, logged once by agentexec."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, Reject) and REQUEUED_AT_SHUTDOWN in str(exc):
            record.exc_info = None
            record.exc_text = None
        return True


class ShutdownTimer:
    """After SIGTERM: wait `AGENTEXEC_SHUTDOWN_TIMEOUT`, then requeue what still runs."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._thread = threading.Thread(target=self._run, name="agentexec-shutdown", daemon=True)

    def start(self) -> None:
        """Start counting (from a signal handler: it only starts a thread)."""
        self._thread.start()

    def _run(self) -> None:
        runtime = get_runtime()
        if runtime.loop.wait_idle(self.timeout):
            return
        keys = runtime.loop.running_keys()
        logger.warning(
            "shutdown timeout (%ss): cancelling %d agent(s) still running, to requeue them",
            self.timeout,
            len(keys),
        )
        for key in keys:
            runtime.requeue_at_shutdown.add(key)
            runtime.loop.cancel(key)
        if runtime.loop.wait_idle(4.0):
            return
        logger.error("agents did not stop within 4s of their cancellation: cold shutdown")
        os.kill(os.getpid(), signal.SIGQUIT)
