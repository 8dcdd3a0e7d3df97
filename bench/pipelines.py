"""Composed runs: `ax.gather` over finished runs, and a pipeline's step-to-step hand-off.

- **gather**: `--gather` runs (no model call) are run to the end first; then the time of
  `await ax.gather(*runs)` over all of them, against one `ax.get_result` per run awaited
  together (`asyncio.gather`), `--repeat` times each, alternating.
- **hand-off**: `--pipelines` pipelines of 3 steps, the middle one fanning out to `--fanout`
  children, on one worker, one pipeline at a time (the hand-off itself, not the queue behind
  other work). From the activity log, per pipeline: the time from step 0's end
  (its COMPLETE row) to step 1's start ("Task started"), and from the last child's end to
  step 2's start (the join). Against it, bare Celery's own hand-off: a 3-task `chain` on a
  plain Celery app (`bench.bare_celery`), each task noting when it started, and the one
  before it ended, one chain at a time.

    uv run python -m bench.pipelines [--pipelines 200] [--gather 1000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import agentexec as ax
from bench.common import (
    POSTGRES_URL,
    REDIS_URL,
    REPO_ROOT,
    base_env,
    percentile,
    reset_activity_tables,
    unique,
)

ROLE = os.environ.get("BENCH_PIPELINES_ROLE", "")
PREFIX = unique("bench-pipelines")


class Start(BaseModel):
    fanout: int = 5


class Planned(BaseModel):
    items: list[int]


class Item(BaseModel):
    n: int


def _register() -> None:
    """The bench's tasks and pipeline (in the worker, and by name in the client)."""
    pool = ax.WorkerPool()

    @pool.task("bench_pipelines_noop")
    async def noop(agent_id: uuid.UUID, context: Item) -> int:
        return context.n

    pipeline = ax.Pipeline(pool, name="bench_pipeline")

    class BenchPipeline(pipeline.Base):  # type: ignore[name-defined,misc]
        @pipeline.step(0)
        async def plan(self, start: Start) -> Planned:
            return Planned(items=list(range(start.fanout)))

        @pipeline.step(1)
        async def fan(self, planned: Planned) -> ax.Group[int]:
            return ax.group(*(ax.call("bench_pipelines_noop", Item(n=n)) for n in planned.items))

        @pipeline.step(2)
        async def total(self, values: list[int]) -> int:
            return sum(values)

    globals()["bench_pipeline"] = pipeline


if ROLE:
    _register()


def _env() -> dict[str, str]:
    return base_env(
        REDIS_URL=REDIS_URL,
        DATABASE_URL=POSTGRES_URL,
        AGENTEXEC_QUEUE_PREFIX=PREFIX,
        AGENTEXEC_NUM_WORKERS="200",
        PYTHONPATH=str(REPO_ROOT),
        BENCH_BARE_QUEUE=PREFIX + "-bare",
    )


async def _gather(n: int, repeat: int) -> dict[str, Any]:
    runs = await asyncio.gather(*(ax.enqueue("bench_pipelines_noop", Item(n=i)) for i in range(n)))
    assert await ax.gather(*runs, timeout=600) == list(range(n))  # all finished now
    ours, one_by_one = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        await ax.gather(*runs, timeout=60)
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        await asyncio.gather(*(ax.get_result(r.agent_id, timeout=60) for r in runs))
        one_by_one.append(time.perf_counter() - started)
    return {"gather_s": statistics.median(ours), "get_result_each_s": statistics.median(one_by_one)}


def _handoffs(count: int, fanout: int) -> dict[str, list[float]]:
    """Run `count` pipelines; the hand-off times (seconds) read from their activity logs."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from agentexec.db.models import ActivityLog
    from agentexec.runtime import get_runtime
    from agentexec.states import Status
    from agentexec.tasks.composition import child_id

    pipeline = globals()["bench_pipeline"]

    async def run() -> list[str]:
        ids = []
        for _ in range(count):  # one at a time: the hand-off, not the queue behind others
            run = await pipeline.enqueue(Start(fanout=fanout))
            assert await ax.get_result(run.agent_id, timeout=60) == sum(range(fanout))
            ids.append(str(run.agent_id))
        return ids

    ids = asyncio.run(run())
    time.sleep(3)  # the projector writes the last rows
    steps = {p: [child_id(p, str(i)) for i in range(3)] for p in ids}
    kids = {p: [child_id(p, f"1.{k}") for k in range(fanout)] for p in ids}
    wanted = [uuid.UUID(i) for p in ids for i in steps[p] + kids[p]]
    with Session(get_runtime().engine) as session:
        rows = session.execute(
            select(ActivityLog.agent_id, ActivityLog.message, ActivityLog.status,
                   ActivityLog.created_at).where(ActivityLog.agent_id.in_(wanted))
        ).all()  # fmt: skip
    started: dict[str, Any] = {}
    ended: dict[str, Any] = {}
    for agent_id, message, status, at in rows:
        if message.startswith("Task started"):
            started.setdefault(str(agent_id), at)
        elif status == Status.COMPLETE:
            ended[str(agent_id)] = at
    step, join = [], []
    for p in ids:
        s0, s1, s2 = steps[p]
        step.append((started[s1] - ended[s0]).total_seconds())
        join.append((started[s2] - max(ended[k] for k in kids[p])).total_seconds())
    return {"step": step, "join": join}


def _bare_chain(count: int) -> list[float]:
    """Bare Celery: `count` chains of 3 tasks; each task's start minus its predecessor's end."""
    from celery import chain

    from bench.bare_celery import app, chain_step

    found: list[float] = []
    for _ in range(count):
        result = chain(chain_step.s(None), chain_step.s(), chain_step.s()).apply_async()
        found += result.get(timeout=120)["handoffs"]
    app.close()
    return found


def _ms(values: list[float]) -> str:
    return f"p50 {percentile(values, 50) * 1000:.1f} ms, p99 {percentile(values, 99) * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=200)
    parser.add_argument("--fanout", type=int, default=5)
    parser.add_argument("--gather", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="20 pipelines, gather of 100")
    args = parser.parse_args()
    if args.quick:
        args.pipelines, args.gather, args.repeat = 20, 100, 3
    env = _env()
    os.environ.update(env)
    from agentexec.config import get_settings

    get_settings.cache_clear()  # (read when bench.common imported agentexec)
    os.environ["BENCH_PIPELINES_ROLE"] = "client"
    reset_activity_tables(POSTGRES_URL)
    _register()
    from agentexec.processes import WorkerProcess, celery_worker_argv

    log_dir = Path(tempfile.mkdtemp(prefix="bench-pipelines-"))
    worker = WorkerProcess(
        celery_worker_argv("-I", "bench.pipelines", name="bench-pipelines"),
        {**env, "BENCH_PIPELINES_ROLE": "worker"},
        REPO_ROOT,
        log_dir / "worker.log",
    )
    bare = WorkerProcess(
        celery_worker_argv("-P", "threads", "-c", "50", app="bench.bare_celery",
                           name="bench-bare"),
        env,
        REPO_ROOT,
        log_dir / "bare.log",
    )  # fmt: skip
    try:
        worker.start(120)
        gathered = asyncio.run(_gather(args.gather, args.repeat))
        print({"bench": "gather", "runs": args.gather, **gathered}, flush=True)
        handoffs = _handoffs(args.pipelines, args.fanout)
        worker.stop(30)
        bare.start(120)
        chained = _bare_chain(args.pipelines)
    finally:
        worker.stop(30)
        bare.stop(30)
    ratio = gathered["get_result_each_s"] / gathered["gather_s"]
    print(f"\nax.gather of {args.gather} finished runs: {gathered['gather_s'] * 1000:.0f} ms "
          f"(median of {args.repeat}); one get_result each, awaited together: "
          f"{gathered['get_result_each_s'] * 1000:.0f} ms ({ratio:.1f}x slower)")  # fmt: skip
    print(f"{args.pipelines} pipelines, 3 steps, fan-out of {args.fanout}, one worker:")
    print(f"  step -> next step start: {_ms(handoffs['step'])}")
    print(f"  last child -> next step start (join): {_ms(handoffs['join'])}")
    print(f"  bare Celery chain, task -> next task start: {_ms(chained)}")
    step50, bare50 = percentile(handoffs["step"], 50), percentile(chained, 50)
    print(f"  step hand-off p50 ratio to bare Celery's chain: {step50 / bare50:.2f}")


if __name__ == "__main__":
    main()
