"""Heartbeats: a worker's main process keeps its runs' messages its own while it lives.

Every `AGENTEXEC_HEARTBEAT_INTERVAL` the main process marks itself alive, lists the runs it
holds (running, reserved or waiting for their ETA), and moves the unacknowledged-message
index entries of those messages to now. kombu redelivers a message only when its entry is
older than the visibility timeout, so a message is redelivered only after its worker stopped
heartbeating for `AGENTEXEC_VISIBILITY_TIMEOUT`, however long the run takes. The same thread
runs the reaper's sweeps (`agentexec.worker.reaper`).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

import redis
from celery import Celery
from celery.worker import state as worker_state
from sqlalchemy.exc import SQLAlchemyError

from agentexec.config import get_settings
from agentexec.exceptions import ActivityStoreError
from agentexec.tasks import concurrency
from agentexec.worker.delivery import events_client
from agentexec.worker.reaper import Reaper

logger = logging.getLogger(__name__)


class Supervisor:
    """A worker main process's heartbeat and reaper, on one daemon thread."""

    def __init__(self, app: Celery, hostname: str) -> None:
        self.app = app
        self.hostname = hostname
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentexec-supervisor", daemon=True)

    def start(self) -> Supervisor:
        """Start beating at once."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop, and tell the others this worker is gone."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        keys = get_settings().keys
        try:
            with events_client().pipeline(transaction=True) as pipe:
                pipe.hdel(keys.workers, self.hostname)
                pipe.delete(keys.held(self.hostname))
                pipe.execute()
        except redis.RedisError:
            pass

    def _run(self) -> None:
        settings = get_settings()
        next_sweep = time.monotonic() + settings.reaper_interval
        while not self._stop.is_set():
            try:
                self.beat()
            except redis.RedisError as exc:
                logger.debug("heartbeat failed: %s", exc)
            except Exception:  # the next beat tries again; a dead thread would beat no more
                logger.exception("heartbeat failed")
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + settings.reaper_interval
                try:
                    Reaper(self.app).sweep()
                except (redis.RedisError, SQLAlchemyError, ActivityStoreError) as exc:
                    logger.debug("reaper sweep skipped: %s", exc)
                except Exception:
                    logger.exception("reaper sweep failed")
            self._stop.wait(min(settings.heartbeat_every, settings.reaper_interval))

    def beat(self) -> None:
        """Mark this worker alive, list what it holds, and keep its messages invisible."""
        settings = get_settings()
        now = time.time()
        held = [
            *_snapshot(worker_state.active_requests),
            *_snapshot(worker_state.reserved_requests),
        ]
        ids = {str(request.id) for request in held}
        tags = {
            tag: now
            for request in held
            if (tag := getattr(getattr(request, "message", None), "delivery_tag", None))
        }
        ttl = max(1, round(3 * settings.heartbeat_every))
        keys = settings.keys
        held_key = keys.held(self.hostname)
        with events_client().pipeline(transaction=True) as pipe:
            pipe.hset(keys.workers, self.hostname, now)
            pipe.delete(held_key)
            if ids:
                pipe.sadd(held_key, *ids)
                pipe.expire(held_key, ttl)
            if tags:
                pipe.zadd(keys.unacked_index, tags, xx=True)
            pipe.execute()
        concurrency.renew(events_client(), dict(concurrency.held))


def _snapshot(requests: Any) -> list[Any]:
    """The live members of one of Celery's request sets, which the pool's threads change
    meanwhile. Iterating the `WeakSet` itself runs Python code that can let another thread
    change it mid-way ("Set changed size during iteration"); copying its inner set of
    references is one C call, under the GIL throughout."""
    refs: set[weakref.ref[Any]] = requests.data
    return [request for ref in list(refs) if (request := ref()) is not None]
