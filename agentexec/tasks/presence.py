"""Where a run's message is: on a queue, taken by a worker, or nowhere.

The reaper (in workers) and `ax.activity.cancel_pending` (in a web app) ask the broker's
Redis the same questions before they end a run that looks active: is its message on a
queue, unacknowledged, kept as a copy until acknowledged, or held by a live worker; which
workers are alive; which runs already have a stored result.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from typing import Any

import redis
from celery import Celery, states

from agentexec.config import Settings, get_settings

logger = logging.getLogger(__name__)

#: The task id in a message as kombu stores it on a queue or in the unacked hash.
MESSAGE_ID = re.compile(rb'"id": "([0-9a-fA-F-]{36})"')
#: kombu's separator between a queue's name and its priority step, and the steps.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def live_workers(client: redis.Redis, settings: Settings) -> list[str]:
    """Workers that beat within three heartbeat intervals."""
    horizon = time.time() - 3 * settings.heartbeat_every
    beats: dict[bytes, bytes] = client.hgetall(settings.keys.workers)  # type: ignore[assignment]
    return [host.decode() for host, at in beats.items() if float(at) >= horizon]


def pending_ids(client: redis.Redis, settings: Settings) -> set[str]:
    """Ids of every run whose message is on a queue, unacknowledged, or held by a live worker."""
    found: set[str] = set()
    for queue in (settings.high_queue, settings.low_queue):
        for name in (queue, *(f"{queue}{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS)):
            start = 0
            while True:
                chunk: list[bytes] = client.lrange(name, start, start + 999)  # type: ignore[assignment]
                found.update(_ids_in(chunk))
                if len(chunk) < 1000:
                    break
                start += 1000
    unacked: list[bytes] = client.hvals(settings.keys.unacked)  # type: ignore[assignment]
    found.update(_ids_in(unacked))
    for host in live_workers(client, settings):
        members: set[bytes] = client.smembers(settings.keys.held(host))  # type: ignore[assignment]
        found.update(m.decode() for m in members)
    # Runs parked for a slot of a concurrency key (`agentexec.tasks.concurrency`).
    parked_keys: set[bytes] = client.smembers(settings.keys.parked_keys)  # type: ignore[assignment]
    for key in parked_keys:
        parked: list[bytes] = client.lrange(settings.keys.parked(key.decode()), 0, -1)  # type: ignore[assignment]
        found.update(str(json.loads(p).get("agent_id")) for p in parked)
    return found


def message_copies(client: redis.Redis, ids: set[str]) -> dict[str, bytes]:
    """The kept copies (`queue\nmessage`) of the messages of runs `ids`, which the transport
    keeps until a message is acknowledged (`agentexec.tasks.transport`)."""
    found: dict[str, bytes] = {}
    for _tag, value in client.hscan_iter(get_settings().keys.messages, count=1000):
        match = MESSAGE_ID.search(value)
        if match and (agent_id := match.group(1).decode().lower()) in ids:
            found[agent_id] = value
    return found


def final_results(app: Celery, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored results (Celery's task meta) of those of `ids` that have finished.

    One MGET on a Redis result backend; nothing when the backend cannot say.
    """
    backend = app.backend
    found: dict[str, dict[str, Any]] = {}
    try:
        if hasattr(backend, "mget") and hasattr(backend, "get_key_for_task"):
            raw = backend.mget([backend.get_key_for_task(i) for i in ids]) if ids else []
            metas = [(i, backend.decode_result(r)) for i, r in zip(ids, raw, strict=True) if r]
        else:
            metas = [(i, backend.get_task_meta(i)) for i in ids]
    except Exception:  # the backend cannot say: nothing is known to have finished
        logger.warning("result backend unreadable", exc_info=True)
        return found
    for agent_id, meta in metas:
        if meta.get("status") in states.READY_STATES:
            found[agent_id] = meta
    return found


def _ids_in(messages: Iterable[bytes]) -> Iterable[str]:
    for raw in messages:
        match = MESSAGE_ID.search(raw)
        if match:
            yield match.group(1).decode().lower()
