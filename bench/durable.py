"""Durable runs: what turn checkpoints cost, and what 10,000 runs waiting for approval cost.

1. **Checkpoint overhead.** N agents in flight on one worker process (`--agents`, 1000), each
   4 tool turns and a final answer (5 model calls) over real HTTP to a local scripted OpenAI
   server with `--latency` seconds per call. The same agent runs as a task that checkpoints
   and as one declared `checkpoint=False`, one after the other, alternating which goes first
   in each repetition. Reported: the wall time of each (first enqueue to last result), their
   ratio, the bytes of each checkpoint write and its time (read inside the worker from the
   run's `RunScope.writes`, returned with the result).
2. **10,000 WAITING runs** (`--waiting`). Runs whose agent calls a `needs_approval` tool at
   once: the worker's RSS before (after a warm-up of the same workload) and once all wait,
   then every run approved, and the latency from each approval (its DECISION row) to the
   run's next "Task started" row.

Everything shares the machine: the worker, this process (client and model server), Redis
and PostgreSQL.

    uv run python -m bench.durable [--agents 1000] [--waiting 10000] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
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
    percentile,
    process_tree,
    reset_activity_tables,
    rss_bytes,
    scripted_model_server,
    unique,
)

ROLE = os.environ.get("BENCH_DURABLE_ROLE", "")


class DurableBenchContext(BaseModel):
    mode: str = "steps"


def _register_tasks() -> None:
    """The bench's agent tasks (in the worker, and by name in the client)."""
    from agents import Agent, function_tool, set_tracing_disabled

    import agentexec as ax
    from agentexec.tasks.checkpoints import current_run

    set_tracing_disabled(True)
    pool = ax.WorkerPool()

    @function_tool
    async def step(n: int) -> str:
        """Do step n."""
        return f"step {n} done"

    @function_tool(needs_approval=True)
    async def publish(channel: str) -> str:
        """Publish the report."""
        return f"published to {channel}"

    async def body(agent_id: uuid.UUID, context: DurableBenchContext) -> dict[str, Any]:
        runner = ax.OpenAIRunner(agent_id=agent_id)
        agent = Agent(name="Bench agent", instructions="Work.", model="gpt-4o",
                      tools=[runner.tools.report_status, step, publish])  # fmt: skip
        result = await runner.run(agent, input=f"{context.mode} {agent_id}", max_turns=10)
        scope = current_run.get()
        writes = [list(w) for w in scope.writes] if scope is not None else []
        return {"final": result.final_output, "writes": writes}

    @pool.task("bench_durable_census", checkpoint=False)
    async def census(agent_id: uuid.UUID, context: DurableBenchContext) -> dict[str, Any]:
        """The worker's live Python objects by type, after a full collection."""
        return await asyncio.to_thread(_census)

    for name, options in (
        ("bench_durable", {}),
        ("bench_durable_off", {"checkpoint": False}),
    ):
        pool.task(name, **options)(body)


_first_snapshot: Any = None


def _census() -> dict[str, Any]:
    """Live Python objects by type after a full collection; with tracemalloc on
    (`PYTHONTRACEMALLOC=1` in the worker), the allocation sites grown since the first census."""
    import gc
    import tracemalloc
    from collections import Counter

    global _first_snapshot
    gc.collect()
    objects = gc.get_objects()
    types = Counter(type(o).__qualname__ for o in objects)
    found: dict[str, Any] = {
        "objects": len(objects),
        "types": dict(types.most_common(60)),
        "blocks": sys.getallocatedblocks(),
        "memory": _allocator_memory(),
    }
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot()
        if _first_snapshot is None:
            _first_snapshot = snapshot
        else:
            grown = snapshot.compare_to(_first_snapshot, "lineno")[:25]
            found["grown"] = [f"{g.size_diff / 1024:.0f} KiB {g.count_diff:+} {g.traceback}"
                              for g in grown]  # fmt: skip
    return found


def _allocator_memory() -> dict[str, int]:
    """Bytes the two allocators hold: Python's object allocator (its arenas, and what their
    live blocks use) and glibc's malloc (in use, free but kept, mmapped)."""
    import ctypes
    import re

    found: dict[str, int] = {}
    with tempfile.TemporaryFile() as out:  # `_debugmallocstats` writes to the C stderr
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    for name, pattern in (
        ("pymalloc_arenas", r"(\d[\d,]*) arenas \* \d+ bytes/arena"),
        ("pymalloc_in_blocks", r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
    ):
        if match := re.search(pattern, text):
            found[name] = int(match.group(1).replace(",", ""))

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]  # fmt: skip

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return found
    found.update(malloc_in_use=info.uordblks, malloc_free=info.fordblks, malloc_mmapped=info.hblkhd)
    return found


if ROLE:
    _register_tasks()


def _responder(latency: float) -> Any:
    from agentexec.testing.openai_script import Reply, ToolCall, answered_tool_names

    def respond(request: dict[str, Any]) -> Reply:
        items = request.get("input") or []
        first = next(i for i in items if isinstance(i, dict) and i.get("role") == "user")
        content = first["content"]
        mode = (content if isinstance(content, str) else content[0]["text"]).split()[0]
        outputs = [
            i for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"
        ]
        if mode == "approval":
            if not outputs:
                return Reply.calls(ToolCall("publish", {"channel": "news"}), delay=latency)
            return Reply.message("published", delay=latency)
        done = [n for n in answered_tool_names(request) if n == "step"]
        if len(done) < (1 if mode == "short" else 4):  # "short": 2 calls, as bench.limits
            return Reply.calls(ToolCall("step", {"n": len(done) + 1}), delay=latency)
        return Reply.message("done", delay=latency)

    return respond


async def _run_batch(task: str, n: int, mode: str = "steps") -> tuple[float, list[Any]]:
    import agentexec as ax

    started = time.monotonic()
    handles = await asyncio.gather(*(ax.enqueue(task, {"mode": mode}) for _ in range(n)))
    results = await asyncio.gather(*(ax.get_result(h.agent_id, timeout=3600) for h in handles))
    return time.monotonic() - started, results


def _overhead(agents: int, runs: int) -> dict[str, Any]:
    walls: dict[str, list[float]] = {"bench_durable": [], "bench_durable_off": []}
    writes: list[list[float]] = []
    for repetition in range(runs):
        order = ["bench_durable", "bench_durable_off"]
        if repetition % 2:
            order.reverse()
        for task in order:
            wall, results = asyncio.run(_run_batch(task, agents))
            assert all(r["final"] == "done" for r in results), results[:3]
            walls[task].append(wall)
            if task == "bench_durable":
                writes += [w for r in results for w in r["writes"]]
            print(f"  {task}: {agents} agents in {wall:.2f}s", flush=True)
    on = sorted(walls["bench_durable"])
    off = sorted(walls["bench_durable_off"])
    sizes = [w[0] for w in writes]
    times = [w[1] * 1000 for w in writes]
    return {
        "agents": agents,
        "wall_checkpoint_s": [round(w, 2) for w in on],
        "wall_no_checkpoint_s": [round(w, 2) for w in off],
        "ratio_median": round(on[len(on) // 2] / off[len(off) // 2], 3),
        "writes_per_run": round(len(writes) / (agents * runs), 2),
        "bytes_p50": percentile(sizes, 50),
        "bytes_p95": percentile(sizes, 95),
        "write_ms_p50": round(percentile(times, 50), 3),
        "write_ms_p99": round(percentile(times, 99), 3),
    }


def _waiting_count(ids: list[uuid.UUID]) -> int:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from agentexec.db.models import Activity
    from agentexec.runtime import get_runtime
    from agentexec.states import Status

    with Session(get_runtime().engine) as session:
        count = session.scalar(
            select(func.count())
            .select_from(Activity)
            .where(Activity.agent_id.in_(ids), Activity.status == Status.WAITING)
        )
    return int(count or 0)


async def _enqueue_waiting(n: int) -> list[uuid.UUID]:
    import agentexec as ax

    ids: list[uuid.UUID] = []
    for start in range(0, n, 1000):
        size = min(1000, n - start)
        handles = await asyncio.gather(
            *(ax.enqueue("bench_durable", {"mode": "approval"}) for _ in range(size))
        )
        ids += [h.agent_id for h in handles]
    return ids


def _wait_all_waiting(ids: list[uuid.UUID], timeout: float) -> float:
    started = time.monotonic()
    while _waiting_count(ids) < len(ids):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"only {_waiting_count(ids)} of {len(ids)} WAITING")
        time.sleep(1)
    return time.monotonic() - started


async def _approve_all(ids: list[uuid.UUID]) -> None:
    import agentexec as ax

    for start in range(0, len(ids), 500):
        decided = await asyncio.gather(*(ax.approve(i) for i in ids[start : start + 500]))
        assert all(decided)


async def _worker_census() -> dict[str, Any]:
    import agentexec as ax

    handle = await ax.enqueue("bench_durable_census", {})
    result: dict[str, Any] = await ax.get_result(handle.agent_id, timeout=600)
    return result


async def _results(ids: list[uuid.UUID]) -> list[Any]:
    import agentexec as ax

    found = []
    for start in range(0, len(ids), 1000):
        found += await asyncio.gather(
            *(ax.get_result(i, timeout=3600) for i in ids[start : start + 1000])
        )
    return found


def _approval_latencies(ids: list[uuid.UUID]) -> list[float]:
    """Seconds from each run's DECISION row to its next "Task started" row."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from agentexec.db.models import ActivityLog
    from agentexec.runtime import get_runtime

    latencies = []
    with Session(get_runtime().engine) as session:
        rows = session.execute(
            select(ActivityLog.agent_id, ActivityLog.message, ActivityLog.created_at)
            .where(ActivityLog.agent_id.in_(ids))
            .order_by(ActivityLog.agent_id, ActivityLog.seq)
        ).all()
    decided: dict[uuid.UUID, Any] = {}
    for agent_id, message, at in rows:
        if message.startswith("Approved "):
            decided[agent_id] = at
        elif message.startswith("Task started") and agent_id in decided:
            latencies.append((at - decided.pop(agent_id)).total_seconds())
    return latencies


def _waiting(worker_pid: int, n: int, warmup: int) -> dict[str, Any]:
    # Warm-up: the same cycle (wait, approve, finish) on fewer runs.
    warm = asyncio.run(_enqueue_waiting(warmup))
    _wait_all_waiting(warm, 600)
    asyncio.run(_approve_all(warm))
    asyncio.run(_results(warm))
    time.sleep(2)
    census_before = asyncio.run(_worker_census())
    before = rss_bytes(process_tree(worker_pid))
    ids = asyncio.run(_enqueue_waiting(n))
    to_wait = _wait_all_waiting(ids, 3600)
    time.sleep(2)
    census_waiting = asyncio.run(_worker_census())
    waiting_rss = rss_bytes(process_tree(worker_pid))
    grown = {
        name: count - census_before["types"].get(name, 0)
        for name, count in census_waiting["types"].items()
        if count - census_before["types"].get(name, 0) > n // 10
    }
    asyncio.run(_approve_all(ids))
    results = asyncio.run(_results(ids))
    assert all(r["final"] == "published" for r in results), results[:3]
    latencies = sorted(_approval_latencies(ids))
    return {
        "waiting": n,
        "seconds_to_all_waiting": round(to_wait, 1),
        "rss_before_mb": round(before / 2**20, 1),
        "rss_all_waiting_mb": round(waiting_rss / 2**20, 1),
        "rss_delta_mb": round((waiting_rss - before) / 2**20, 1),
        "python_objects_delta": census_waiting["objects"] - census_before["objects"],
        "allocated_blocks_delta": census_waiting["blocks"] - census_before["blocks"],
        "allocator_mb_delta": {
            name: round((census_waiting["memory"][name] - value) / 2**20, 1)
            for name, value in census_before["memory"].items()
        },
        "allocations_grown": census_waiting.get("grown"),
        "types_grown": grown,
        "approval_to_running_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "approval_to_running_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "latencies": len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, help="runs through the cycle before measuring")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per model call")
    parser.add_argument("--quick", action="store_true", help="50 agents, 200 waiting, 1 run")
    parser.add_argument("--only", default="overhead,waiting")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="trace the worker's allocations (slow)"
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the model server's port
    args = parser.parse_args()
    if args.quick:
        args.agents, args.waiting, args.runs = 50, 200, 1

    from agentexec.testing.openai_server import ScriptedOpenAIServer

    if args.serve:
        ScriptedOpenAIServer(_responder(args.latency), port=args.serve).serve_forever()
        return
    with scripted_model_server(args.latency) as openai_url:
        _bench(args, openai_url)


def _bench(args: argparse.Namespace, openai_url: str) -> None:
    """Both measurements, on one worker, against the model server at `openai_url`."""
    from agentexec.processes import WorkerProcess, celery_worker_argv

    env = base_env(
        REDIS_URL=REDIS_URL,
        DATABASE_URL=POSTGRES_URL,
        AGENTEXEC_QUEUE_PREFIX=unique("bench-durable"),
        AGENTEXEC_NUM_WORKERS=str(max(args.agents, 200) + 10),
        PYTHONPATH=str(REPO_ROOT),
        OPENAI_BASE_URL=openai_url,
        OPENAI_API_KEY="bench",
    )
    os.environ.update(env)
    from agentexec.config import get_settings

    get_settings.cache_clear()
    reset_activity_tables(POSTGRES_URL)
    os.environ["BENCH_DURABLE_ROLE"] = "client"
    _register_tasks()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-durable-"))
    traced = {"PYTHONTRACEMALLOC": "1"} if args.tracemalloc else {}
    worker = WorkerProcess(
        celery_worker_argv("-I", "bench.durable", name="bench-durable"),
        {**env, "BENCH_DURABLE_ROLE": "worker", **traced},
        REPO_ROOT,
        log_dir / "worker.log",
    )
    try:
        worker.start(120)
        if "overhead" in args.only:
            print(f"checkpoint overhead: {args.agents} agents, 5 calls each, "
                  f"{args.latency}s per call, {args.runs} runs", flush=True)  # fmt: skip
            print({"bench": "durable-overhead", **_overhead(args.agents, args.runs)})
        if "waiting" in args.only:
            print(f"{args.waiting} WAITING runs on one worker", flush=True)
            warmup = args.warmup if args.warmup is not None else max(100, args.waiting // 10)
            print({"bench": "durable-waiting", **_waiting(worker.pid, args.waiting, warmup)})
    finally:
        worker.stop(30)
        print(f"worker log: {log_dir / 'worker.log'}")


if __name__ == "__main__":
    main()
