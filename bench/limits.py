"""Usage limits: what budgets, concurrency keys and shared rate limits cost when they do not bind.

Two phases on one worker process, alternating which goes first in each repetition:

- **plain**: a task without limits, no `AGENTEXEC_RATE_LIMITS`, no owner budget;
- **limited**: the same agent as a task with a concurrency key (100 keys, `max_concurrency`
  50, so it never binds here) and a token budget, with shared rate limits for its model and
  an owner's daily budget, all far above what the run uses: every check is made, none waits.

Each phase measures the latency of `ax.enqueue` awaited alone (`--enqueues` of them, p50 and
p99, before the phase's worker starts, so that the enqueue path is all that runs), and the wall
time of `--agents` agents in flight (2 model calls each over real HTTP to a
scripted OpenAI server with `--latency` seconds per call, first enqueue to last result).

Then, once per repetition, **admission latency**: `--keyed` runs on one key with
`max_concurrency=2`; for each run that waited for a slot, the time from the end of the run
whose slot it took (its COMPLETE row) to its "Task started" row.

    uv run python -m bench.limits [--agents 1000] [--runs 4] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench.common import (
    POSTGRES_URL,
    REDIS_URL,
    REPO_ROOT,
    base_env,
    cpu_seconds,
    delete_keys,
    percentile,
    process_tree,
    queue_key_patterns,
    reset_activity_tables,
    scripted_model_server,
    unique,
)

ROLE = os.environ.get("BENCH_LIMITS_ROLE", "")
#: Limits far above what the bench uses: every check runs, none binds.
LIMITS_ENV = {
    "AGENTEXEC_RATE_LIMITS": json.dumps(
        {"gpt-4o": {"requests_per_minute": 10_000_000, "tokens_per_minute": 10_000_000_000}}
    ),
    "AGENTEXEC_OWNER_DAILY_TOKENS": str(10**12),
}
OWNER = "bench-owner"
PREFIX = unique("bench-limits")


class LimitsContext(BaseModel):
    user: int = 0


def _register_tasks() -> None:
    """The bench's tasks (in the worker, and by name in the client)."""
    from agents import Agent, function_tool, set_tracing_disabled

    import agentexec as ax

    set_tracing_disabled(True)
    pool = ax.WorkerPool()

    @function_tool
    async def step(n: int) -> str:
        """Do step n."""
        return f"step {n} done"

    async def body(agent_id: uuid.UUID, context: LimitsContext) -> str:
        runner = ax.OpenAIRunner(agent_id=agent_id)
        agent = Agent(name="Bench agent", instructions="Work.", model="gpt-4o",
                      tools=[runner.tools.report_status, step])  # fmt: skip
        result = await runner.run(agent, input=f"short {agent_id}", max_turns=5)
        return str(result.final_output)

    pool.task("bench_limits_plain")(body)
    pool.task("bench_limits_limited", lock_key="user:{user}", max_concurrency=50,
              max_tokens=1_000_000)(body)  # fmt: skip
    pool.task("bench_limits_keyed", lock_key="key:{user}", max_concurrency=2)(body)


if ROLE:
    _register_tasks()


async def _enqueue_latencies(task: str, n: int) -> tuple[list[float], list[uuid.UUID]]:
    """Each enqueue awaited alone: its latency in ms."""
    import agentexec as ax

    latencies, ids = [], []
    for i in range(n):
        started = time.perf_counter()
        handle = await ax.enqueue(task, {"user": i % 100}, owner=OWNER)
        latencies.append((time.perf_counter() - started) * 1000)
        ids.append(handle.agent_id)
    return latencies, ids


async def _in_flight(task: str, n: int) -> tuple[float, list[uuid.UUID]]:
    """Wall time of `n` agents enqueued together, to the last result."""
    import agentexec as ax

    started = time.monotonic()
    handles = await asyncio.gather(
        *(ax.enqueue(task, {"user": i % 100}, owner=OWNER) for i in range(n))
    )
    await _results([h.agent_id for h in handles])
    return time.monotonic() - started, [h.agent_id for h in handles]


async def _results(ids: list[uuid.UUID]) -> None:
    import agentexec as ax

    for start in range(0, len(ids), 1000):
        found = await asyncio.gather(
            *(ax.get_result(i, timeout=3600) for i in ids[start : start + 1000])
        )
        assert all(r == "done" for r in found), found[:3]


def _admission(n: int) -> list[float]:
    """Runs on one key with 2 slots: seconds from each slot freeing to the next start."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    import agentexec as ax
    from agentexec.db.models import ActivityLog
    from agentexec.runtime import get_runtime
    from agentexec.states import Status

    async def run() -> list[uuid.UUID]:
        handles = [await ax.enqueue("bench_limits_keyed", {"user": 7}) for _ in range(n)]
        ids = [h.agent_id for h in handles]
        await _results(ids)
        return ids

    ids = asyncio.run(run())
    time.sleep(2)  # the projector writes the last rows
    with Session(get_runtime().engine) as session:
        rows = session.execute(
            select(ActivityLog.message, ActivityLog.status, ActivityLog.created_at).where(
                ActivityLog.agent_id.in_(ids)
            )
        ).all()
    starts = sorted(at for message, _, at in rows if message.startswith("Task started"))
    ends = sorted(at for _, status, at in rows if status == Status.COMPLETE)
    # With 2 slots and runs admitted in order, start i + 2 took the slot end i freed.
    waits = range(min(len(ends), len(starts) - 2))
    return [(starts[i + 2] - ends[i]).total_seconds() for i in waits]


def _client_env(args: argparse.Namespace, openai_url: str) -> dict[str, str]:
    """What the client and every phase's worker share: one queue prefix (the client's Celery
    app binds its queues once), each phase draining its runs before the next starts."""
    return base_env(
        REDIS_URL=REDIS_URL,
        DATABASE_URL=POSTGRES_URL,
        AGENTEXEC_QUEUE_PREFIX=PREFIX,
        AGENTEXEC_NUM_WORKERS=str(args.agents + 10),
        PYTHONPATH=str(REPO_ROOT),
        OPENAI_BASE_URL=openai_url,
        OPENAI_API_KEY="bench",
    )


def _redis_calls() -> dict[str, int]:
    """Redis's count of each command it ran so far (all clients)."""
    import redis

    with redis.Redis.from_url(REDIS_URL) as client:
        stats: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def _phase(name: str, args: argparse.Namespace, openai_url: str) -> dict[str, Any]:
    """One phase on a worker of its own: enqueue latency, then agents in flight."""
    from agentexec.config import get_settings
    from agentexec.processes import WorkerProcess, celery_worker_argv

    limited = name == "limited"
    env = {**_client_env(args, openai_url), **(LIMITS_ENV if limited else {})}
    for key in LIMITS_ENV:
        os.environ.pop(key, None)
    os.environ.update(env)
    get_settings.cache_clear()
    task = f"bench_limits_{name}"
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench-limits-{name}-"))
    worker = WorkerProcess(
        celery_worker_argv("-I", "bench.limits", name=f"bench-limits-{name}"),
        {**env, "BENCH_LIMITS_ROLE": "worker"},
        REPO_ROOT,
        log_dir / "worker.log",
    )
    try:
        # The enqueue path alone: no worker competes for the CPU yet (the runs wait).
        latencies, ids = asyncio.run(_enqueue_latencies(task, args.enqueues))
        worker.start(120)
        asyncio.run(_results(ids))
        cpu_before, calls_before = cpu_seconds(process_tree(worker.pid)), _redis_calls()
        wall, _ = asyncio.run(_in_flight(task, args.agents))
        cpu = cpu_seconds(process_tree(worker.pid)) - cpu_before
        if args.commands:
            calls = _redis_calls()
            per_agent = {k: round((v - calls_before.get(k, 0)) / args.agents, 2)
                         for k, v in sorted(calls.items())
                         if v - calls_before.get(k, 0) >= args.agents / 10}  # fmt: skip
            print({"phase": name, "redis_commands_per_agent": per_agent}, flush=True)
        found: dict[str, Any] = {
            "enqueue_p50_ms": round(percentile(latencies, 50), 3),
            "enqueue_p99_ms": round(percentile(latencies, 99), 3),
            "wall_s": round(wall, 2),
            "agents_per_s": round(args.agents / wall, 1),
            "worker_cpu_ms_per_agent": round(cpu * 1000 / args.agents, 2),
        }
        if limited:
            admission = _admission(args.keyed)
            found["admission_ms"] = [round(a * 1000, 1) for a in admission]
        return found
    finally:
        worker.stop(30)
        # The next phase starts from the same empty state: an order effect (the second
        # phase of a repetition ran up to 20% slower on a growing log and tables) would
        # otherwise weigh on whichever phase goes second.
        reset_activity_tables(POSTGRES_URL)
        delete_keys(REDIS_URL, [*queue_key_patterns(PREFIX), "celery-task-meta-*"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--enqueues", type=int, default=300)
    parser.add_argument("--keyed", type=int, default=40)
    parser.add_argument("--runs", type=int, default=4, help="even: each order as often")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per model call")
    parser.add_argument("--quick", action="store_true", help="50 agents, 50 enqueues, 1 run")
    parser.add_argument("--commands", action="store_true",
                        help="print the Redis commands per agent of each phase")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.agents, args.enqueues, args.keyed, args.runs = 50, 50, 10, 1
    os.environ["BENCH_LIMITS_ROLE"] = "client"
    reset_activity_tables(POSTGRES_URL)
    phases: dict[str, list[dict[str, Any]]] = {"plain": [], "limited": []}
    with scripted_model_server(args.latency) as openai_url:
        os.environ.update(_client_env(args, openai_url))
        from agentexec.config import get_settings

        get_settings.cache_clear()  # (read when bench.common imported agentexec)
        _register_tasks()
        for repetition in range(args.runs):
            order = ["plain", "limited"] if repetition % 2 == 0 else ["limited", "plain"]
            for name in order:
                found = _phase(name, args, openai_url)
                shown = {k: v for k, v in found.items() if k != "admission_ms"}
                print({"bench": "limits", "run": repetition + 1, "phase": name, **shown})
                phases[name].append(found)
    _report(phases, args)


def _report(phases: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    def median(name: str, key: str) -> float:
        return statistics.median(p[key] for p in phases[name])

    def spread(name: str, key: str) -> str:
        got = sorted(p[key] for p in phases[name])
        return f"{median(name, key)} ({got[0]} to {got[-1]})"

    admission = [a for p in phases["limited"] for a in p["admission_ms"]]
    print(f"\n{args.agents} agents in flight, 2 calls x {args.latency}s; {args.runs} runs")
    for key in ("enqueue_p50_ms", "enqueue_p99_ms", "wall_s", "agents_per_s",
                "worker_cpu_ms_per_agent"):  # fmt: skip
        ratio = median("limited", key) / median("plain", key)
        print(f"{key:>16}: plain {spread('plain', key)}  limited {spread('limited', key)}  "
              f"ratio {ratio:.3f}")  # fmt: skip
    paired = [round(lim["wall_s"] / plain["wall_s"], 3)
              for lim, plain in zip(phases["limited"], phases["plain"], strict=True)]  # fmt: skip
    print(f"   wall_s ratio per run (limited / plain, same repetition): {paired}, "
          f"median {statistics.median(paired):.3f}")  # fmt: skip
    p50, p99 = percentile(admission, 50), percentile(admission, 99)
    print(f"admission latency (slot free -> next start on the key), {len(admission)} waits: "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
