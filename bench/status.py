"""Measurement 5, status-report cost, in one process on PostgreSQL.

A agents (coroutines on one event loop, each with its `ax.OpenAIRunner`) report R times each,
yielding to the loop between reports, so all of them report at once. Measured:
- the time each `runner.report_status(message, percentage)` call takes, as the agent sees it,
  called right on the loop (through the SDK, a sync tool runs on a thread of the loop's
  executor instead; the call is the same);
- the write throughput: reports per second from the first report until they are all in SQL:
  appended to the event log and applied by the projector running in this process
  (`Runtime.wait_projected()`).
The activity rows exist beforehand, and one untimed report per agent warms everything up.

    uv run python -m bench.status --agents 500 --reports 10     # prints one JSON line
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from typing import Any

from bench.common import (
    POSTGRES_URL,
    REDIS_URL,
    Case,
    Results,
    Row,
    by_run,
    delete_keys,
    emit,
    install_sigterm_exit,
    percentile,
    python_module,
    queue_key_patterns,
    reset_activity_tables,
    summarize,
    unique,
    values,
    verdict,
)

SIZES = {"quick": {"agents": 100, "reports": 5}, "full": {"agents": 500, "reports": 10}}


def run(agents: int, reports: int) -> dict[str, Any]:
    os.environ.update(
        DATABASE_URL=POSTGRES_URL, REDIS_URL=REDIS_URL, AGENTEXEC_QUEUE_PREFIX=unique("bench-st")
    )
    reset_activity_tables(POSTGRES_URL)

    import agentexec as ax
    from agentexec.db.models import ActivityLog
    from agentexec.eventlog.event import Event
    from agentexec.runtime import get_runtime
    from agentexec.states import EventKind, Status

    runtime = get_runtime()
    ids = [uuid.uuid4() for _ in range(agents)]
    queued = [Event(i, Status.QUEUED, "Task queued", kind=EventKind.QUEUED, task="b") for i in ids]
    runtime.write(runtime.events.append(queued))
    runtime.start_projector()
    runners = [ax.OpenAIRunner(agent_id=i) for i in ids]
    for runner in runners:
        runner.report_status("Warming up", 1)
    assert runtime.wait_projected(60)

    latencies: list[int] = []

    async def agent(runner: ax.OpenAIRunner) -> None:
        for k in range(reports):
            t = time.perf_counter_ns()
            runner.report_status(f"Step {k + 1} of {reports}", 10 + 80 * k // reports)
            latencies.append(time.perf_counter_ns() - t)
            await asyncio.sleep(0)

    async def main() -> tuple[float, float]:
        t0 = time.perf_counter()
        await asyncio.gather(*(agent(r) for r in runners))
        reported = time.perf_counter() - t0
        projected = await asyncio.to_thread(runtime.wait_projected, 120)
        assert projected, "reports not in SQL within 120 s"
        return reported, time.perf_counter() - t0

    reported_s, committed_s = asyncio.run(main())
    from sqlalchemy import func, select

    with runtime.engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(ActivityLog)).scalar_one()
    runtime.stop()
    delete_keys(REDIS_URL, patterns=queue_key_patterns(os.environ["AGENTEXEC_QUEUE_PREFIX"]))
    runtime.engine.dispose()
    us = [v / 1000 for v in latencies]
    total = agents * reports
    return {
        "agents": agents,
        "reports": total,
        "p50_us": round(statistics.median(us), 2),
        "p99_us": round(percentile(us, 99), 2),
        "max_us": round(max(us), 2),
        "reported_s": round(reported_s, 4),
        "committed_s": round(committed_s, 4),
        "rows_per_s": round(total / committed_s, 1),
        "log_rows": rows,
        "log_rows_expected": total + 2 * agents,
    }


# --------------------------------------------------------------------------- cases and rows


def cases(size: str) -> list[Case]:
    s = SIZES[size]
    argv = python_module("bench.status", "--agents", s["agents"], "--reports", s["reports"])
    return [Case("status.agentexec", argv, 300)]


def rows(results: Results, size: str) -> list[Row]:
    s = SIZES[size]
    key = "status.agentexec"
    where = f"{s['agents']} agents x {s['reports']} reports, PostgreSQL"
    p50 = summarize(values(by_run(results, key, "p50_us")))
    p99 = summarize(values(by_run(results, key, "p99_us")))
    rate = summarize(values(by_run(results, key, "rows_per_s")))
    return [
        Row(f"5. report_status p50, {where}", "agentexec", p50.fmt(1, " µs") if p50 else "failed"),
        Row(
            f"5. report_status p99, {where}",
            "agentexec",
            p99.fmt(1, " µs") if p99 else "failed",
            target="≤ 5 ms" + verdict(p99.median / 1000 if p99 else None, at_most=5.0),
        ),
        Row(
            f"5. status writes committed, {where}",
            "agentexec",
            rate.fmt(0, " rows/s") if rate else "failed",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--reports", type=int, default=10)
    args = parser.parse_args()
    install_sigterm_exit()
    emit(run(args.agents, args.reports))


if __name__ == "__main__":
    main()
