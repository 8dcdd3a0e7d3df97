"""Schedules: agent runs started by Celery beat, with the schedules kept in Redis.

`pool.add_schedule(task, every, context=...)` (or `@pool.schedule(...)` on the task) declares a
schedule in the app's `beat_schedule`; `agentexec beat -A myapp.worker` runs Celery beat with
`Scheduler`, celery-redbeat's scheduler, which keeps every schedule in the broker's Redis:

- declared schedules are written there when beat starts (and ones no longer declared are
  removed); `agentexec schedule add/remove` change them while beat runs;
- beat runs as one instance: a second one waits on redbeat's lock in Redis, and logs that it
  does (`beat: Acquiring lock...`), until the first stops;
- `overlap="skip"` skips a firing while the schedule's previous run is still going;
- `repeat=N` fires N more times after the first (-1: forever);
- each run's QUEUED log line names its schedule ("Task queued by schedule 'nightly'").

Cron expressions are read in the app's time zone (`AGENTEXEC_TIMEZONE`, UTC by default).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from celery import Celery, states
from celery.schedules import crontab, schedule
from croniter import croniter
from pydantic import BaseModel
from redbeat import RedBeatScheduler, RedBeatSchedulerEntry
from redbeat.schedulers import RedBeatConfig, get_redis

from agentexec.config import get_settings
from agentexec.exceptions import InvalidRequestError
from agentexec.tasks.queued import SCHEDULE_HEADER
from agentexec.tasks.task import AgentTask

logger = logging.getLogger(__name__)

Overlap = Literal["allow", "skip"]


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    """A schedule as stored: what it starts, when, and its policies."""

    name: str
    task: str
    every: str | float
    context: dict[str, Any]
    repeat: int = -1
    overlap: Overlap = "allow"

    def entry(self, app: Celery) -> dict[str, Any]:
        """Its `beat_schedule` entry."""
        header = {"name": self.name, "repeat": self.repeat, "overlap": self.overlap}
        return {
            "task": self.task,
            "schedule": _schedule(self.every, app),
            "args": (self.context,),
            "options": {"headers": {SCHEDULE_HEADER: header}},
        }


def declare(
    app: Celery,
    task: AgentTask,
    every: str | timedelta | float,
    context: BaseModel | Mapping[str, Any] | None,
    *,
    repeat: int = -1,
    overlap: Overlap = "allow",
    name: str | None = None,
) -> ScheduleSpec:
    """Check a schedule and add it to the app's `beat_schedule` (written to Redis when beat
    starts). Raises InvalidRequestError for a bad expression, policy or context."""
    spec = make(task, every, context, repeat=repeat, overlap=overlap, name=name)
    app.conf.beat_schedule = {**(app.conf.beat_schedule or {}), spec.name: spec.entry(app)}
    return spec


def make(
    task: AgentTask,
    every: str | timedelta | float,
    context: BaseModel | Mapping[str, Any] | None,
    *,
    repeat: int = -1,
    overlap: str = "allow",
    name: str | None = None,
) -> ScheduleSpec:
    """A checked schedule of `task`."""
    if overlap not in ("allow", "skip"):
        raise InvalidRequestError(f"overlap must be 'allow' or 'skip', got {overlap!r}")
    if repeat < -1:
        raise InvalidRequestError(f"repeat must be -1 (forever) or at least 0, got {repeat}")
    if isinstance(every, timedelta):
        every = every.total_seconds()
    if isinstance(every, str):
        if not croniter.is_valid(every) or len(every.split()) != 5:
            raise InvalidRequestError(
                f"{every!r} is not a cron expression (minute hour day month weekday)"
            )
    elif not every > 0:
        raise InvalidRequestError(f"a schedule's interval must be above 0, got {every!r}")
    model = task.validate_context(context if context is not None else {})
    return ScheduleSpec(name or task.name, task.name, every, model.model_dump(mode="json"),
                        repeat, overlap)  # type: ignore[arg-type]  # fmt: skip


def _schedule(every: str | float, app: Celery) -> Any:
    if isinstance(every, str):
        minute, hour, day, month, weekday = every.split()
        return crontab(minute, hour, day_of_month=day, month_of_year=month,
                       day_of_week=weekday, app=app)  # fmt: skip
    return schedule(timedelta(seconds=every), app=app)


def save(app: Celery, spec: ScheduleSpec) -> None:
    """Add or replace a schedule in Redis: a running beat picks it up at its next tick."""
    entry = spec.entry(app)
    RedBeatSchedulerEntry(spec.name, entry["task"], entry["schedule"], args=entry["args"],
                          options=entry["options"], app=app).save()  # fmt: skip


def remove(app: Celery, name: str) -> bool:
    """Remove a schedule from Redis; False when there was none. (A schedule declared in code
    comes back when beat starts again: remove it from the code too.)"""
    key = RedBeatSchedulerEntry.generate_key(app, name)
    try:
        RedBeatSchedulerEntry.from_key(key, app=app).delete()
    except KeyError:
        return False
    return True


def stored(app: Celery) -> list[RedBeatSchedulerEntry]:
    """Every schedule in Redis, soonest first."""
    client = get_redis(app)
    found = []
    conf: Any = RedBeatConfig(app)
    for key in client.zrange(conf.schedule_key, 0, -1):
        try:
            found.append(RedBeatSchedulerEntry.from_key(key, app=app))
        except KeyError:
            continue  # removed meanwhile
    return found


def _key(name: str, what: str) -> str:
    return f"{get_settings().queue_prefix}.schedule.{name}.{what}"


class Scheduler(RedBeatScheduler):  # type: ignore[misc]
    """celery-redbeat's scheduler, with the schedules' `overlap` and `repeat` policies. A
    firing that is skipped still moves the schedule on to its next time."""

    def setup_schedule(self) -> None:
        """Write the declared schedules to Redis; say so when another beat holds the lock
        (this one then waits for it)."""
        super().setup_schedule()
        lock = self.app.redbeat_conf.lock_key  # (`self.lock_key` is set after this runs)
        if lock and get_redis(self.app).exists(lock):
            logger.warning("beat: another beat holds the lock %s; this one waits until it "
                           "stops", lock)  # fmt: skip

    def apply_async(
        self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        policy = ((entry.options or {}).get("headers") or {}).get(SCHEDULE_HEADER) or {}
        client = get_redis(self.app)
        repeat = int(policy.get("repeat", -1))
        if repeat >= 0 and int(client.get(_key(entry.name, "fired")) or 0) > repeat:
            return self._skip(entry, advance, "it fired as many times as asked")
        if policy.get("overlap") == "skip":
            last = client.get(_key(entry.name, "last"))  # (redbeat's client decodes)
            if last is not None and self._going(str(last)):
                return self._skip(entry, advance, f"its previous run {last} still goes")
        result = super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        if result is not None:
            ttl = get_settings().result_expires
            with client.pipeline() as pipe:
                pipe.set(_key(entry.name, "last"), result.id, ex=ttl)
                pipe.incr(_key(entry.name, "fired"))
                pipe.execute()
        return result

    def _going(self, agent_id: str) -> bool:
        return self.app.backend.get_state(agent_id) not in states.READY_STATES

    def _skip(self, entry: Any, advance: bool, why: str) -> None:
        logger.info("schedule %s: skipped, %s", entry.name, why)
        if advance:
            self.reserve(entry)
