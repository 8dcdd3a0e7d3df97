"""A user's project as the tests see it: no celeryconfig.py, no tasks/ package.

Served by `celery -A agentexec worker -I userapp.worker` or by `python -m userapp.worker`.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
from pathlib import Path
from uuid import UUID

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

import agentexec as ax

pool = ax.WorkerPool()


class SleepContext(BaseModel):
    seconds: float = Field(default=0.0, ge=0)
    label: str = ""
    fail: str | None = None
    reports: int = Field(default=0, ge=0)


@pool.task("sleep_agent")
async def sleep_agent(agent_id: UUID, context: SleepContext) -> dict[str, object]:
    started = time.time()
    for step in range(context.reports):
        ax.activity.update(agent_id, f"step {step + 1}", round(100 * (step + 1) / context.reports))
    await asyncio.sleep(context.seconds)
    if context.fail:
        raise RuntimeError(context.fail)
    return {
        "label": context.label,
        "started": started,
        "ended": time.time(),
        "pid": os.getpid(),
        "gc_frozen": gc.get_freeze_count(),
        "gc_threshold": gc.get_threshold(),
        "model_pool": _model_pool(),
    }


def _model_pool() -> dict[str, object]:
    """The HTTP pools of the SDK's shared model client, as the worker left them."""
    from agents.models.openai_provider import shared_http_client

    client = shared_http_client()
    transport = client._transport  # type: ignore[attr-defined]
    pools = [t._pool for t in getattr(transport, "transports", [transport])]
    return {
        "pools": len(pools),
        "connections": sum(pool._max_connections for pool in pools),
        "keepalive": sum(pool._max_keepalive_connections for pool in pools),
        "connect_timeout": client.timeout.connect,
    }


class MeetContext(BaseModel):
    group: str
    size: int = Field(ge=1)
    wait: float = Field(default=60.0, gt=0)


_meetings: dict[str, tuple[list[str], asyncio.Event]] = {}


@pool.task("meet_agent")
async def meet_agent(agent_id: UUID, context: MeetContext) -> dict[str, object]:
    """Waits until `size` runs of the same group are in flight in this process at once.

    A barrier, not a clock: it proves concurrency without depending on how fast a busy
    machine starts the runs.
    """
    arrived, everyone = _meetings.setdefault(context.group, ([], asyncio.Event()))
    arrived.append(str(agent_id))
    if len(arrived) >= context.size:
        everyone.set()
    try:
        await asyncio.wait_for(everyone.wait(), context.wait)
    except TimeoutError:
        pass
    return {
        "met": everyone.is_set(),
        "arrived": len(arrived),
        "pid": os.getpid(),
        "threads": threading.active_count(),
    }


class PacedContext(BaseModel):
    seconds: float = Field(default=4.0, ge=0)
    reports: int = Field(default=4, ge=1)


@pool.task("paced_agent")
async def paced_agent(agent_id: UUID, context: PacedContext) -> dict[str, object]:
    """Reports `reports` times, evenly spread over `seconds`, then returns."""
    for step in range(context.reports):
        await asyncio.sleep(context.seconds / context.reports)
        ax.activity.update(agent_id, f"step {step + 1}", round(100 * (step + 1) / context.reports))
    return {"reports": context.reports, "pid": os.getpid()}


class FlakyContext(BaseModel):
    marker: str


@pool.task("flaky_agent", autoretry_for=(RuntimeError,), max_retries=2, default_retry_delay=0)
async def flaky_agent(agent_id: UUID, context: FlakyContext) -> dict[str, object]:
    """Fails its first attempt (no marker file yet), succeeds on the retry."""
    marker = Path(context.marker)
    if not marker.exists():  # noqa: ASYNC240 (a test fixture, not a served agent)
        marker.write_text("attempted")  # noqa: ASYNC240
        raise RuntimeError("first attempt fails")
    return {"attempts": 2}


@pool.task("blocking_agent")
async def blocking_agent(agent_id: UUID, context: SleepContext) -> dict[str, object]:
    """Blocks the shared loop on purpose, for the watchdog."""
    time.sleep(context.seconds)  # noqa: ASYNC251
    return {"label": context.label}


class FaultContext(BaseModel):
    seconds: float = Field(default=3.0, ge=0)
    reports: int = Field(default=3, ge=1)
    #: SIGKILL the worker process (a poison agent, such as one that runs out of memory).
    poison: bool = False


@pool.task("fault_agent")
async def fault_agent(agent_id: UUID, context: FaultContext) -> dict[str, object]:
    """Paced reports; at the end, counts its completed runs in Redis (a side effect)."""
    for step in range(context.reports):
        await asyncio.sleep(context.seconds / context.reports)
        if context.poison:
            os.kill(os.getpid(), signal.SIGKILL)
        ax.activity.update(agent_id, f"step {step + 1}", round(100 * (step + 1) / context.reports))
    client = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        await client.incr(f"{os.environ['AGENTEXEC_QUEUE_PREFIX']}.completed.{agent_id}")
    finally:
        await client.aclose()
    return {"reports": context.reports, "pid": os.getpid()}


if __name__ == "__main__":
    pool.run()
