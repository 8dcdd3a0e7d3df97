"""The reaper: ends the rows whose run can no longer end by itself.

One worker at a time (a Redis lock) looks for QUEUED or RUNNING rows whose message is
nowhere: not on a queue, not unacknowledged, not held by a live worker, and without a result.
A row found so twice, `AGENTEXEC_REAPER_INTERVAL` apart, ends ERROR: "worker lost" or
"message lost (broker restarted without persistence?)". A message whose worker died between
taking it and recording it as unacknowledged is put back on its queue from the copy the
transport keeps (`agentexec.tasks.transport`). A row that still looks active although its run
has a result (a stale event, such as a message put back while the broker restarted, moved it
after the end) is brought back to what the result says, once SQL has applied the log up to
where it stood when the row was first seen so.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery import Celery, states
from sqlalchemy import select
from sqlalchemy.orm import Session

from agentexec.client.cancel import fail_pipelines
from agentexec.config import get_settings
from agentexec.db.models import Activity
from agentexec.eventlog.event import Event, seq_of
from agentexec.exceptions import ApprovalExpiredError, describe
from agentexec.runtime import get_runtime
from agentexec.states import ACTIVE, EventKind, Status
from agentexec.tasks import checkpoints, composition, concurrency
from agentexec.tasks.presence import final_results, message_copies, pending_ids
from agentexec.worker.delivery import events_client, has_finished
from agentexec.worker.execution import wake
from agentexec.worker.recording import TASK_COMPLETED, record_end

logger = logging.getLogger(__name__)

#: Rows the reaper looks at per sweep, oldest first.
_SWEEP_LIMIT = 5_000
#: Why the reaper ended a run, or put its message back.
WORKER_LOST = "worker lost"
MESSAGE_LOST = "message lost (broker restarted without persistence?)"
MESSAGE_PUT_BACK = "Message put back on its queue (its worker died while taking it)"


class Reaper:
    """Ends the rows whose run can no longer end by itself."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def sweep(self) -> list[Event]:
        """One sweep, if no other worker is sweeping; returns the events it recorded."""
        settings = get_settings()
        client = events_client()
        lock = settings.keys.reaper_lock
        if not client.set(lock, os.getpid(), nx=True, px=int(settings.reaper_interval * 900)):
            return []
        self._expire_waiting(client)
        self._wake_parked(client)
        runtime = get_runtime()
        grace = datetime.now(UTC) - timedelta(seconds=settings.reaper_interval)
        with Session(runtime.engine) as session:
            rows = session.execute(
                select(Activity.agent_id, Activity.status, Activity.agent_type)
                .where(Activity.status.in_(ACTIVE), Activity.updated_at < grace)
                .order_by(Activity.updated_at)
                .limit(_SWEEP_LIMIT)
            ).all()
        suspects_key = settings.keys.reaper_suspects
        if not rows:
            client.delete(suspects_key)
            return []
        finals = final_results(self.app, [str(agent_id) for agent_id, _, _ in rows])
        pending = pending_ids(client, settings)
        # A run with a result whose row still looks active lost its last event (a stale
        # event, such as a message put back during a broker restart, moved it again): its row
        # is healed from the result. A run with neither a message nor a result is ended.
        # A pipeline run has no message of its own: its children are what runs (and are
        # reaped themselves); it is not lost while it goes on.
        missing = {
            str(agent_id): (status, task)
            for agent_id, status, task in rows
            if str(agent_id) in finals
            or (str(agent_id) not in pending and not composition.is_composed(str(agent_id)))
        }
        # A suspect is confirmed when it is still one a sweep later. For a finished run, the
        # log's end when it was first seen so is noted too: its last event, if the log has
        # it, lies before that point, and the row is healed only once SQL has applied that far.
        now = time.time()
        finished = bool(set(missing) & set(finals))
        log_end = _log_end(client) if finished else 0
        applied = (runtime.applied_through() or 0) if finished else 0
        stored: dict[bytes, bytes] = client.hgetall(suspects_key)  # type: ignore[assignment]
        seen = {agent_id.decode(): _Sighting.parse(value) for agent_id, value in stored.items()}
        sightings = {i: _Sighting(now, log_end if i in finals else None) for i in missing}
        for agent_id, earlier in seen.items():
            # A run seen without a result that has one now is seen anew, with the log's end.
            if agent_id in sightings and (earlier.log_end is not None or agent_id not in finals):
                sightings[agent_id] = earlier
        confirmed = [
            agent_id
            for agent_id, sighting in sightings.items()
            if sighting.at <= now - settings.reaper_interval * 0.9
            and (sighting.log_end is None or sighting.log_end <= applied)
        ]
        with client.pipeline(transaction=True) as pipe:
            pipe.delete(suspects_key)
            for agent_id, sighting in sightings.items():
                if agent_id not in confirmed:
                    pipe.hset(suspects_key, agent_id, str(sighting))
            pipe.expire(suspects_key, max(60, round(settings.reaper_interval * 10)))
            pipe.execute()
        return self._end(confirmed, missing, finals)

    def _wake_parked(self, client: redis.Redis) -> None:
        """Give the slots of expired leases (a dead worker's runs) to parked runs."""
        for key, limit in concurrency.parked_keys(client):
            wake(concurrency.release(client, key, None, limit), key)

    def _expire_waiting(self, client: redis.Redis) -> None:
        """End ERROR the runs whose wait for approvals expired."""
        for agent_id in checkpoints.expired(client, time.time()):
            request = checkpoints.waiting_since(client, agent_id)
            seconds = request.get("approval_timeout") or get_settings().approval_timeout
            error = ApprovalExpiredError(float(seconds))
            checkpoints.forget(client, agent_id)
            record_end(agent_id, Status.ERROR, str(error), task=request.get("task"))
            if self.app.backend.get_state(agent_id) not in states.READY_STATES:
                self.app.backend.mark_as_failure(agent_id, error)
            logger.warning("run %s: %s", agent_id, error)

    def _end(
        self,
        ids: list[str],
        missing: dict[str, tuple[Status, str]],
        finals: dict[str, dict[str, Any]],
    ) -> list[Event]:
        """Heal the rows of finished runs from their results; put back the messages that
        have a copy; end the other runs ERROR."""
        if not ids:
            return []
        runtime = get_runtime()
        copies = message_copies(events_client(), set(ids) - set(finals))
        events = []
        lost: list[tuple[str, str, str]] = []
        for agent_id in ids:
            status, task = missing[agent_id]
            if agent_id in finals:
                event = _final_event(uuid.UUID(agent_id), finals[agent_id], task)
                logger.warning(
                    "run %s (%s) has finished (%s) but its row said %s; row brought up to date",
                    agent_id, task, event.status, status,
                )  # fmt: skip
                events.append(event)
                continue
            copy = copies.get(agent_id)
            if copy is not None and not has_finished(self.app, agent_id):
                queue, _, message = copy.partition(b"\n")
                events_client().rpush(queue, message)  # at the head: it has waited its turn
                logger.warning("run %s (%s): its worker died while taking its message; "
                               "message put back on its queue", agent_id, task)  # fmt: skip
                event = Event(uuid.UUID(agent_id), Status.QUEUED, MESSAGE_PUT_BACK,
                              kind=EventKind.RETRY, task=task)  # fmt: skip
                events.append(event)
                continue
            reason = WORKER_LOST if status is Status.RUNNING else MESSAGE_LOST
            logger.warning("run %s (%s) was %s: %s; ended ERROR", agent_id, task, status, reason)
            events.append(
                Event(uuid.UUID(agent_id), Status.ERROR, reason, kind=EventKind.ERROR, task=task)
            )
            if not has_finished(self.app, agent_id):
                self.app.backend.mark_as_failure(agent_id, RuntimeError(reason))
            lost.append((agent_id, task, reason))
        events = runtime.events.record(events)
        runtime.write(events)
        fail_pipelines([(i, task, RuntimeError(reason)) for i, task, reason in lost])
        return events


@dataclass(frozen=True)
class _Sighting:
    """When the reaper first saw a suspect, and (for a finished run) the log's end then."""

    at: float
    log_end: int | None = None

    @classmethod
    def parse(cls, value: bytes) -> _Sighting:
        at, _, log_end = value.decode().partition(" ")
        return cls(float(at), int(log_end) if log_end else None)

    def __str__(self) -> str:
        return f"{self.at}" if self.log_end is None else f"{self.at} {self.log_end}"


def _log_end(client: redis.Redis) -> int:
    """The position of the event log's newest event (0 when it is empty)."""
    newest: Any = client.xrevrange(get_runtime().events.key, count=1)
    return seq_of(newest[0][0]) if newest else 0


def _final_event(agent_id: uuid.UUID, meta: dict[str, Any], task: str) -> Event:
    """The terminal event that a stored result stands for."""
    state = meta.get("status")
    if state == states.SUCCESS:
        return Event(agent_id, Status.COMPLETE, TASK_COMPLETED, 100,
                     kind=EventKind.COMPLETE, task=task)  # fmt: skip
    if state == states.REVOKED:
        return Event(agent_id, Status.CANCELED, "Canceled", kind=EventKind.CANCELED, task=task)
    result = meta.get("result")
    reason = describe(result) if isinstance(result, BaseException) else str(result or state)
    return Event(agent_id, Status.ERROR, reason, kind=EventKind.ERROR, task=task)
