"""Agents in flight on one worker process, against the bare-SDK floor measured in the same run.

For each size N (`--sizes`, default 1,000, 3,000 and 10,000):

- **F**, the floor: N agents through `asyncio.gather` of the SDK's `Runner.run` in one plain
  process (`--floor`), no queue, no database;
- **T**: the same agents as an agentexec task on one worker process with
  `AGENTEXEC_MAX_IN_FLIGHT=N` (the default `lanes` pool), enqueued together with
  `ax.enqueue`; first enqueue to last result.

Both run the same agent: 2 model calls (a `step` tool call, then the answer) of `--latency`
seconds each, over real HTTP with the `openai` client to one local scripted server (a process
of its own), with `report_status` among the tools (agentexec's runner tool for T, a no-op for
F). Reported per size: the medians of `--runs` runs with their spread, T/F paired per run,
the worker's peak RSS and its RSS per agent in flight (peak minus the RSS of the warm, idle
worker, over N), and the worker's CPU per agent.

    uv run python -m bench.inflight [--sizes 1000,3000,10000] [--runs 3] [--latency 5]
        [--floor-gc-threshold 50000] [--floor-model-connections 1000]

The worker collects young garbage every `AGENTEXEC_GC_THRESHOLD` (50,000) allocations, and
gives the SDK's shared model client a pool that keeps `AGENTEXEC_MODEL_CONNECTIONS` (1,000)
connections open, with 20 s to connect. The floor keeps Python's GC threshold and the SDK's
client (100 connections kept open, 5 s to connect) unless `--floor-gc-threshold` and
`--floor-model-connections` give it the same, to show how much of T/F those settings are.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import statistics
import subprocess
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
    TreeSampler,
    base_env,
    client_cpu_seconds,
    cpu_seconds,
    delete_keys,
    machine_busy_seconds,
    process_tree,
    queue_key_patterns,
    reset_activity_tables,
    rss_bytes,
    scripted_model_server,
    unique,
)

ROLE = os.environ.get("BENCH_INFLIGHT_ROLE", "")
PREFIX = unique("bench-inflight")


class InflightContext(BaseModel):
    idx: int = 0


def _agent(report_status: Any) -> Any:
    """The agent both sides run: its model is the default provider's (`OPENAI_BASE_URL`)."""
    from agents import Agent, function_tool

    @function_tool
    async def step(n: int) -> str:
        """Do step n."""
        return f"step {n} done"

    return Agent(name="Bench agent", instructions="Work.", model="gpt-4o",
                 tools=[report_status, step])  # fmt: skip


def _register_tasks() -> None:
    """The bench's agent task (in the worker, and by name in the client)."""
    from agents import set_tracing_disabled

    import agentexec as ax

    set_tracing_disabled(True)
    pool = ax.WorkerPool()

    @pool.task("bench_inflight")
    async def body(agent_id: uuid.UUID, context: InflightContext) -> str:
        runner = ax.OpenAIRunner(agent_id=agent_id)
        agent = _agent(runner.tools.report_status)
        result = await runner.run(agent, input=f"short {agent_id}", max_turns=5)
        return str(result.final_output)


if ROLE == "worker":
    _register_tasks()


async def _floor(n: int, gc_threshold: int, model_connections: int) -> dict[str, Any]:
    """F: `n` plain SDK agents at once in this process (Python's garbage collector thresholds
    and the SDK's model client, unless `gc_threshold` and `model_connections` set them as the
    worker does)."""
    from agents import Runner, set_tracing_disabled

    from agentexec.config import Settings
    from agentexec.worker.model_client import size_model_pool
    from bench.common import noop_report_status_tool

    if gc_threshold:
        gc.set_threshold(gc_threshold, *gc.get_threshold()[1:])
    size_model_pool(Settings(model_connections=model_connections))
    set_tracing_disabled(True)
    tool = noop_report_status_tool()
    await Runner.run(_agent(tool), input="short warm-up", max_turns=5)
    started = time.monotonic()
    # An agent per run, as the task builds one: runs sharing one Agent object cost the SDK
    # a check against every other run of it on each turn (quadratic in runs in flight).
    finals = await asyncio.gather(
        *(Runner.run(_agent(tool), input=f"short {i}", max_turns=5) for i in range(n))
    )
    wall = time.monotonic() - started
    assert all(f.final_output == "done" for f in finals)
    return {"wall_s": round(wall, 2), "rss_mb": round(rss_bytes([os.getpid()]) / 2**20, 1)}


def _measure_floor(
    n: int, env: dict[str, str], gc_threshold: int = 0, model_connections: int = 0
) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.inflight", "--floor", str(n),
            "--floor-gc-threshold", str(gc_threshold),
            "--floor-model-connections", str(model_connections)]  # fmt: skip
    busy = machine_busy_seconds()
    done = subprocess.run(argv, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                          timeout=3600, check=True)  # fmt: skip
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # (the floor process's start and warm-up included)
    found["machine_cpu_ms_per_agent"] = round((machine_busy_seconds() - busy) * 1000 / n, 1)
    return found


async def _burst(n: int) -> float:
    """T: `n` runs enqueued together, to the last result."""
    import agentexec as ax

    started = time.monotonic()
    handles = await asyncio.gather(*(ax.enqueue("bench_inflight", {"idx": i}) for i in range(n)))
    for start in range(0, n, 1000):
        found = await asyncio.gather(
            *(ax.get_result(h.agent_id, timeout=3600) for h in handles[start : start + 1000])
        )
        assert all(r == "done" for r in found), found[:3]
    wall = time.monotonic() - started
    await ax.close_redis()
    return wall


def _profiler(pid: int, n: int, directory: str) -> subprocess.Popen[bytes]:
    """py-spy sampling the worker's thread holding the GIL (its CPU) until interrupted."""
    out = Path(directory) / f"worker-{n}.txt"
    argv = ["py-spy", "record", "-p", str(pid), "-f", "raw", "-r", "50", "--gil", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _measure_agentexec(n: int, env: dict[str, str], profile: str | None) -> dict[str, Any]:
    from agentexec.processes import WorkerProcess, celery_worker_argv

    log_dir = Path(tempfile.mkdtemp(prefix="bench-inflight-"))
    worker = WorkerProcess(
        celery_worker_argv("-I", "bench.inflight", name=unique("bench-inflight")),
        {**env, "AGENTEXEC_MAX_IN_FLIGHT": str(n), "BENCH_INFLIGHT_ROLE": "worker"},
        REPO_ROOT,
        log_dir / "worker.log",
    )
    try:
        worker.start(120)
        asyncio.run(_burst(20))  # warm: imports, connections, the SDK's first run
        time.sleep(1)
        pids = process_tree(worker.pid)
        idle = rss_bytes(pids)
        cpu_before, busy, client = cpu_seconds(pids), machine_busy_seconds(), client_cpu_seconds()
        spy = _profiler(worker.pid, n, profile) if profile else None
        with TreeSampler([worker.pid]) as sampler:
            wall = asyncio.run(_burst(n))
        busy, client = machine_busy_seconds() - busy, client_cpu_seconds() - client
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        cpu = cpu_seconds(process_tree(worker.pid)) - cpu_before
        peak = sampler.peak_mb
        return {
            "wall_s": round(wall, 2),
            "peak_rss_mb": round(peak, 1),
            "idle_rss_mb": round(idle / 2**20, 1),
            "rss_kb_per_agent": round((peak - idle / 2**20) * 1024 / n, 1),
            "worker_cpu_ms_per_agent": round(cpu * 1000 / n, 2),
            "client_cpu_ms_per_agent": round(client * 1000 / n, 2),
            "machine_cpu_ms_per_agent": round(busy * 1000 / n, 1),
        }
    finally:
        worker.stop(60)
        reset_activity_tables(POSTGRES_URL)
        delete_keys(REDIS_URL, [*queue_key_patterns(PREFIX), "celery-task-meta-*"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,3000,10000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency", type=float, default=5.0, help="seconds per model call")
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy the worker during each burst (raw stacks in DIR)")  # fmt: skip
    parser.add_argument("--floor-gc-threshold", type=int, default=0, metavar="N",
                        help="the floor's young-generation GC threshold too (the worker's "
                             "AGENTEXEC_GC_THRESHOLD); 0, the default, keeps Python's")  # fmt: skip
    parser.add_argument("--floor-model-connections", type=int, default=0, metavar="N",
                        help="the floor's model client sized as the worker's "
                             "(AGENTEXEC_MODEL_CONNECTIONS); 0, the default, keeps the "
                             "SDK's")  # fmt: skip
    parser.add_argument("--floor", type=int, help=argparse.SUPPRESS)  # the floor's process
    args = parser.parse_args()
    if args.floor:
        found = _floor(args.floor, args.floor_gc_threshold, args.floor_model_connections)
        print(json.dumps(asyncio.run(found)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    with scripted_model_server(args.latency) as openai_url:
        env = base_env(
            REDIS_URL=REDIS_URL,
            DATABASE_URL=POSTGRES_URL,
            AGENTEXEC_QUEUE_PREFIX=PREFIX,
            PYTHONPATH=str(REPO_ROOT),
            OPENAI_BASE_URL=openai_url,
            OPENAI_API_KEY="bench",
        )
        os.environ.update(env)
        from agentexec.config import get_settings

        get_settings.cache_clear()  # (read when bench.common imported agentexec)
        os.environ["BENCH_INFLIGHT_ROLE"] = "client"
        _register_tasks()
        reset_activity_tables(POSTGRES_URL)
        found: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
        for run in range(args.runs):
            for n in sizes:
                floor = _measure_floor(
                    n, env, args.floor_gc_threshold, args.floor_model_connections
                )
                ours = _measure_agentexec(n, env, args.profile)
                row = {"n": n, "run": run + 1, "floor_s": floor["wall_s"],
                       "floor_rss_mb": floor["rss_mb"],
                       "floor_machine_cpu_ms_per_agent": floor["machine_cpu_ms_per_agent"],
                       **ours,
                       "t_over_f": round(ours["wall_s"] / floor["wall_s"], 3)}  # fmt: skip
                print(row, flush=True)
                found[n].append(row)
    print(f"\n2 model calls x {args.latency}s per agent, real HTTP; {args.runs} runs: "
          "median (min to max)")  # fmt: skip
    for n, rows in found.items():

        def spread(key: str, rows: list[dict[str, Any]] = rows) -> str:
            got = sorted(r[key] for r in rows)
            return f"{statistics.median(got)} ({got[0]} to {got[-1]})"

        print(f"N={n:>6,}: T/F {spread('t_over_f')}; T {spread('wall_s')} s; "
              f"F {spread('floor_s')} s; peak RSS {spread('peak_rss_mb')} MB; "
              f"RSS per agent {spread('rss_kb_per_agent')} KB; "
              f"worker CPU per agent {spread('worker_cpu_ms_per_agent')} ms; machine CPU per "
              f"agent: T {spread('machine_cpu_ms_per_agent')} ms, "
              f"F {spread('floor_machine_cpu_ms_per_agent')} ms")  # fmt: skip


if __name__ == "__main__":
    main()
