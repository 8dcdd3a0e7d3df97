"""Measurement 3, enqueue latency: one producer, sequential calls, after a warm-up.

- agentexec: `await ax.enqueue("bench_noop", ...)` on PostgreSQL (the QUEUED activity row,
  then the publish; the caller's loop hands both to a thread).
- bare Celery: `bare.noop.apply_async((i,))`, a plain call.
No worker runs; the messages are deleted afterwards.

    uv run python -m bench.enqueue --system agentexec --n 2000     # prints one JSON line
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
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
    fmt_ratio,
    install_sigterm_exit,
    percentile,
    python_module,
    queue_key_patterns,
    reset_activity_tables,
    summarize,
    unique,
    upstream_case,
    values,
    verdict,
)

SIZES = {"quick": {"n": 200, "warmup": 20}, "full": {"n": 2000, "warmup": 100}}


def agentexec_latencies(n: int, warmup: int) -> list[float]:
    import agentexec as ax
    from bench.agentexec_tasks import NoopContext

    async def measure() -> list[float]:
        for i in range(warmup):
            await ax.enqueue("bench_noop", NoopContext(idx=-1 - i))
        lat = []
        for i in range(n):
            t = time.perf_counter()
            await ax.enqueue("bench_noop", NoopContext(idx=i))
            lat.append(time.perf_counter() - t)
        await ax.close_redis()
        return lat

    return asyncio.run(measure())


def bare_latencies(n: int, warmup: int) -> list[float]:
    from bench.bare_celery import noop

    for i in range(warmup):
        noop.apply_async((-1 - i,))
    lat = []
    for i in range(n):
        t = time.perf_counter()
        noop.apply_async((i,))
        lat.append(time.perf_counter() - t)
    return lat


def run(system: str, n: int, warmup: int) -> dict[str, Any]:
    prefix = unique("bench-enq")
    os.environ.update(
        REDIS_URL=REDIS_URL,
        DATABASE_URL=POSTGRES_URL,
        AGENTEXEC_QUEUE_PREFIX=prefix,
        BENCH_BARE_QUEUE=prefix,
    )
    try:
        if system == "agentexec":
            reset_activity_tables(POSTGRES_URL)
            lat = agentexec_latencies(n, warmup)
        else:
            lat = bare_latencies(n, warmup)
    finally:
        delete_keys(REDIS_URL, patterns=queue_key_patterns(prefix))
    ms = [1000 * v for v in lat]
    return {
        "system": system,
        "n": n,
        "warmup": warmup,
        "p50_ms": round(statistics.median(ms), 4),
        "p99_ms": round(percentile(ms, 99), 4),
        "mean_ms": round(statistics.fmean(ms), 4),
        "max_ms": round(max(ms), 4),
    }


# --------------------------------------------------------------------------- cases and rows


def cases(size: str) -> list[Case]:
    s = SIZES[size]
    ours = [
        Case(
            f"enqueue.{system}",
            python_module(
                "bench.enqueue", "--system", system, "--n", s["n"], "--warmup", s["warmup"]
            ),
            timeout=300,
        )
        for system in ("agentexec", "bare")
    ]
    upstream = upstream_case(
        "enqueue.upstream", "enqueue", n=s["n"], extra=["--warmup", str(s["warmup"])], timeout=300
    )
    return [*ours, upstream]


def rows(results: Results, size: str) -> list[Row]:
    n = SIZES[size]["n"]
    out = []
    for metric, label, target in (("p50_ms", "p50", 1.2), ("p99_ms", "p99", 3.0)):
        ax = by_run(results, "enqueue.agentexec", metric)
        bare = by_run(results, "enqueue.bare", metric)
        up = by_run(results, "enqueue.upstream", metric)
        figure = f"3. enqueue {label} (PostgreSQL, sequential, n={n})"
        for system, vals in (("agentexec", ax), ("bare Celery", bare), ("upstream 0.3.0", up)):
            s = summarize(values(vals))
            row = Row(figure, system, s.fmt(3, " ms") if s else "failed")
            if system == "agentexec":
                row.vs_bare = fmt_ratio(ax, bare)
                row.vs_upstream = fmt_ratio(ax, up)
                row.target = f"≤ {target} ms" + verdict(s.median if s else None, at_most=target)
            out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--system", choices=["agentexec", "bare"], required=True)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    install_sigterm_exit()
    emit(run(args.system, args.n, args.warmup))


if __name__ == "__main__":
    main()
