"""A plain Celery app on the benchmark's Redis, configured like agentexec's, without agentexec.

The settings are the ones of `agentexec.tasks.app.celery_defaults` that apply to a plain app
(JSON only, prefetch 1, late acks, task events, the same transport options), with Celery's
stock Redis result backend. One queue, named by `BENCH_BARE_QUEUE`.

    celery -A bench.bare_celery worker -P threads -c 1000     # one shared loop per process
    celery -A bench.bare_celery worker -P prefork             # asyncio.run per task

The no-op task never imports agentexec. The agent tasks do, for the scripted model
(`agentexec.runners.offline`), so every system runs the same SDK and model; agentexec's
signal receivers are then connected in this process too, but return at once for tasks that
are not agent tasks.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from celery import Celery

from bench.common import REDIS_URL, run_plain_agent

QUEUE = os.environ.get("BENCH_BARE_QUEUE", "bench-bare")
_redis_url = os.environ.get("REDIS_URL", REDIS_URL)

app = Celery("bare")
app.conf.update(
    broker_url=_redis_url,
    result_backend=_redis_url,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    result_expires=86_400,
    task_default_queue=QUEUE,
    broker_transport_options={
        "queue_order_strategy": "priority",
        "visibility_timeout": 3_600,
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
    },
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_cancel_long_running_tasks_on_connection_loss=False,
    broker_connection_retry_on_startup=True,
    worker_send_task_events=True,
    task_send_sent_event=True,
)

_loop: Any = None


def _shared_loop() -> Any:
    """One long-lived loop per process, on a thread (agentexec's EventLoopThread)."""
    global _loop
    if _loop is None:
        from agentexec.worker.loop import EventLoopThread

        _loop = EventLoopThread()
    return _loop


@app.task(name="bare.noop")
def noop(idx: int) -> dict[str, int]:
    """Returns at once."""
    return {"idx": idx}


@app.task(name="bare.agent_shared_loop")
def agent_shared_loop(idx: int, latency: float) -> dict[str, Any]:
    """The scripted agent on the process's shared loop; `report_status` records nothing."""
    final = _shared_loop().run(run_plain_agent(idx, latency))
    return {"idx": idx, "final": final}


@app.task(name="bare.agent_asyncio_run")
def agent_asyncio_run(idx: int, latency: float) -> dict[str, Any]:
    """The scripted agent on a new loop per task (`asyncio.run`), for the prefork pool."""
    final = asyncio.run(run_plain_agent(idx, latency))
    return {"idx": idx, "final": final}


os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")


@app.task(name="bare.chain_step")
def chain_step(previous: dict[str, Any] | None) -> dict[str, Any]:
    """A link of a chain: notes how long after the previous link's end it started."""
    import time

    started = time.time()
    handoffs = list(previous["handoffs"]) if previous else []
    if previous:
        handoffs.append(started - previous["ended"])
    return {"handoffs": handoffs, "ended": time.time()}
