"""An enqueue burst: N concurrent enqueues from one web process, with a worker consuming.

    uv run python -m bench.enqueue_burst --system agentexec --db postgresql --n 1000
    uv run python -m bench.enqueue_burst --system bare --n 1000     # prints one JSON line

- agentexec: `asyncio.gather` of N `ax.enqueue("bench_noop", ...)` (each records QUEUED in the
  event log and in the activity table, then publishes), while `celery -A agentexec worker`
  consumes them and records their runs in the same database.
- bare Celery: `asyncio.gather` of N `asyncio.to_thread(noop.apply_async, ...)`, with a bare
  threads worker consuming.

The time runs from the first enqueue to the last one returned, after a warm-up of 20.
`producer_cpu_s` is the producer process's CPU time over the same span (user + system, all
its threads): what the burst costs the web process, less sensitive to a busy machine than
the wall time. `load` is the 1-minute load average at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    POSTGRES_URL,
    REDIS_URL,
    delete_keys,
    emit,
    install_sigterm_exit,
    queue_key_patterns,
    reset_activity_tables,
    running_workers,
    unique,
    worker_argv,
)

WARMUP = 20


async def agentexec_burst(n: int) -> tuple[float, float]:
    import agentexec as ax
    from bench.agentexec_tasks import NoopContext

    await asyncio.gather(
        *(ax.enqueue("bench_noop", NoopContext(idx=-1 - i)) for i in range(WARMUP))
    )
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(ax.enqueue("bench_noop", NoopContext(idx=i)) for i in range(n)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await ax.close_redis()
    return elapsed, cpu


async def bare_burst(n: int) -> tuple[float, float]:
    from bench.bare_celery import noop

    await asyncio.gather(*(asyncio.to_thread(noop.apply_async, (-1 - i,)) for i in range(WARMUP)))
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(asyncio.to_thread(noop.apply_async, (i,)) for i in range(n)))
    return time.perf_counter() - started, time.process_time() - cpu


def run(system: str, db: str, n: int) -> dict[str, Any]:
    prefix = unique("bench-burst")
    with tempfile.TemporaryDirectory() as tmp:
        db_url = POSTGRES_URL if db == "postgresql" else f"sqlite:///{Path(tmp) / 'burst.db'}"
        env = {
            **os.environ,
            "REDIS_URL": REDIS_URL,
            "DATABASE_URL": db_url,
            "AGENTEXEC_QUEUE_PREFIX": prefix,
            "BENCH_BARE_QUEUE": prefix,
            "OPENAI_AGENTS_DISABLE_TRACING": "1",
        }
        os.environ.update(env)
        if system == "agentexec" and db == "postgresql":
            reset_activity_tables(db_url)
        if system == "agentexec":
            argv = worker_argv("agentexec", "-I", "bench.agentexec_tasks", name="bench-burst")
            burst = agentexec_burst
        else:
            argv = worker_argv("bench.bare_celery", "-P", "threads", "-c", "100")
            burst = bare_burst
        try:
            with running_workers([argv], env, Path(tmp)):
                seconds, cpu = asyncio.run(burst(n))
        finally:
            delete_keys(REDIS_URL, patterns=queue_key_patterns(prefix))
    return {
        "system": system,
        "db": db if system == "agentexec" else "-",
        "n": n,
        "seconds": round(seconds, 3),
        "producer_cpu_s": round(cpu, 3),
        "load": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--system", choices=["agentexec", "bare"], required=True)
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    install_sigterm_exit()
    emit(run(args.system, args.db, args.n))


if __name__ == "__main__":
    main()
