"""One burst end to end: start workers, enqueue N tasks at once, wait for every result.

    uv run python -m bench.burst --system agentexec --work agent --n 1000 --latency 5 \
        --procs 1 --slots 1000 --db postgresql          # prints one JSON line

Systems:
- `agentexec`: `celery -A agentexec worker -I bench.agentexec_tasks`, `AGENTEXEC_NUM_WORKERS`
  = slots; enqueued with `asyncio.gather` of `ax.enqueue`, each followed by `ax.get_result`.
- `bare-threads`: `celery -A bench.bare_celery worker -P threads -c slots`, one shared loop
  per process, no tracking.
- `bare-prefork`: `celery -A bench.bare_celery worker -P prefork` at Celery's default
  concurrency (the number of CPUs), `asyncio.run` per task.
The bare app's tasks are published with `apply_async` from `asyncio.to_thread`, as
`ax.enqueue` does, and the results are read with MGET of the result keys every 50 ms.

The wall time runs from the first enqueue to the last result available. Before it, each
worker process warms up on a few untimed tasks. Peak RSS and CPU time are of the worker
process trees; `client_cpu_s` is what this measuring process used meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    POSTGRES_URL,
    REDIS_URL,
    TreeSampler,
    client_cpu_seconds,
    cpu_seconds,
    delete_keys,
    emit,
    hard_timeout,
    install_sigterm_exit,
    machine_busy_seconds,
    queue_key_patterns,
    reset_activity_tables,
    running_workers,
    unique,
    worker_argv,
)

RESULT_PREFIX = "celery-task-meta-"
POLL = 0.05
#: Every task id published by this process, so that its result keys are deleted even when
#: the burst is interrupted.
published: list[str] = []


def worker_env(args: argparse.Namespace, prefix: str, db_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(
        REDIS_URL=REDIS_URL,
        DATABASE_URL=db_url,
        AGENTEXEC_QUEUE_PREFIX=prefix,
        AGENTEXEC_NUM_WORKERS=str(args.slots),
        CELERY_CONFIG_MODULE=os.environ.get("BENCH_CELERY_CONFIG", "bench.celeryconfig_bench"),
        BENCH_BARE_QUEUE=prefix,
        OPENAI_AGENTS_DISABLE_TRACING="1",
    )
    return env


def worker_argvs(args: argparse.Namespace) -> list[list[str]]:
    if args.system == "agentexec":
        argv = worker_argv("agentexec", "-I", "bench.agentexec_tasks", name="bench-ax")
    elif args.system == "bare-threads":
        argv = worker_argv("bench.bare_celery", "-P", "threads", "-c", str(args.slots))
    else:
        argv = worker_argv("bench.bare_celery", "-P", "prefork", name="bench-prefork")
    return [argv for _ in range(args.procs)]


# --------------------------------------------------------------------------- agentexec


async def poll_results(client: Any, ids: list[str]) -> list[dict[str, Any]]:
    """Wait for every result by polling the result keys with MGET: the cheapest way to wait,
    used for every system so the measuring client takes the same CPU from the workers."""
    keys = [RESULT_PREFIX + i for i in ids]
    found: dict[str, dict[str, Any]] = {}
    pending = keys
    while pending:
        values = await client.mget(pending)
        still = []
        for key, value in zip(pending, values, strict=True):
            if value is None:
                still.append(key)
            else:
                meta = json.loads(value)
                if meta["status"] not in ("SUCCESS", "FAILURE", "REVOKED"):
                    still.append(key)
                else:
                    found[key] = meta
        pending = still
        if pending:
            await asyncio.sleep(POLL)
    return [found[k] for k in keys]


async def agentexec_burst(args: argparse.Namespace, out: dict[str, Any]) -> list[str]:
    import agentexec as ax
    from bench.agentexec_tasks import AgentContext, NoopContext

    def context(i: int, latency: float) -> Any:
        if args.work == "agent":
            return "bench_agent", AgentContext(idx=i, latency=latency)
        return "bench_noop", NoopContext(idx=i)

    async def one(i: int, latency: float, marks: list[float] | None = None) -> Any:
        name, ctx = context(i, latency)
        task = await ax.enqueue(name, ctx)
        published.append(str(task.agent_id))
        if marks is not None:
            marks.append(time.perf_counter())
        try:
            return task.agent_id, await ax.get_result(task.agent_id, timeout=args.timeout)
        except ax.TaskError as exc:
            return task.agent_id, exc

    # Warm-up: a few untimed tasks per process, at no latency.
    warm = await asyncio.gather(*(one(-1 - i, 0.0) for i in range(3 * args.procs)))
    marks: list[float] = []
    cpu0 = client_cpu_seconds()
    t0 = time.perf_counter()
    if args.wait == "get_result":
        done = await asyncio.gather(*(one(i, args.latency, marks) for i in range(args.n)))
    else:
        import redis.asyncio as aredis

        async def enqueue(i: int) -> Any:
            name, ctx = context(i, args.latency)
            task = await ax.enqueue(name, ctx)
            marks.append(time.perf_counter())
            return task.agent_id

        agent_ids = await asyncio.gather(*(enqueue(i) for i in range(args.n)))
        client = aredis.Redis.from_url(REDIS_URL)
        try:
            metas = await poll_results(client, [str(a) for a in agent_ids])
        finally:
            await client.aclose()
        done = [
            (a, m["result"] if m["status"] == "SUCCESS" else RuntimeError(str(m["result"])))
            for a, m in zip(agent_ids, metas, strict=True)
        ]
    wall = time.perf_counter() - t0
    out["client_cpu_s"] = round(client_cpu_seconds() - cpu0, 3)
    out["enqueue_s"] = round(max(marks) - t0, 4)
    out["wall_s"] = round(wall, 4)
    out["completed"] = sum(
        1 for i, (_, r) in enumerate(done) if isinstance(r, dict) and r.get("idx") == i
    )
    failed = [r for _, r in [*warm, *done] if isinstance(r, Exception)]
    if failed:
        out["failed_tasks"] = len(failed)
        out["error"] = f"{len(failed)} task(s) failed, first: {failed[0]}"
    await ax.close_redis()
    return [str(agent_id) for agent_id, _ in [*warm, *done]]


def check_activity(db_url: str, ids: list[str]) -> dict[str, int]:
    """Statuses of the runs in the activity table (outside the timing)."""
    from uuid import UUID

    from sqlalchemy import create_engine, func, select

    from agentexec.db.models import Activity

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            stmt = (
                select(Activity.status, func.count())
                .where(Activity.agent_id.in_([UUID(i) for i in ids]))
                .group_by(Activity.status)
            )
            return {str(status): int(count) for status, count in conn.execute(stmt)}
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- bare Celery


async def bare_burst(args: argparse.Namespace, out: dict[str, Any]) -> list[str]:
    import redis.asyncio as aredis

    from bench import bare_celery

    if args.work == "noop":
        task: Any = bare_celery.noop
    elif args.system == "bare-threads":
        task = bare_celery.agent_shared_loop
    else:
        task = bare_celery.agent_asyncio_run

    def publish(i: int, latency: float) -> str:
        task_args = (i,) if args.work == "noop" else (i, latency)
        task_id = str(task.apply_async(task_args).id)
        published.append(task_id)
        return task_id

    client = aredis.Redis.from_url(REDIS_URL)

    async def wait(ids: list[str]) -> list[dict[str, Any]]:
        return await poll_results(client, ids)

    try:
        warm = await asyncio.gather(
            *(asyncio.to_thread(publish, -1 - i, 0.0) for i in range(3 * args.procs))
        )
        await wait(list(warm))
        cpu0 = client_cpu_seconds()
        t0 = time.perf_counter()
        ids = list(
            await asyncio.gather(
                *(asyncio.to_thread(publish, i, args.latency) for i in range(args.n))
            )
        )
        out["enqueue_s"] = round(time.perf_counter() - t0, 4)
        metas = await wait(ids)
        wall = time.perf_counter() - t0
        out["client_cpu_s"] = round(client_cpu_seconds() - cpu0, 3)
        out["wall_s"] = round(wall, 4)
        out["completed"] = sum(
            1
            for i, m in enumerate(metas)
            if m["status"] == "SUCCESS" and m["result"].get("idx") == i
        )
        failed = [m for m in metas if m["status"] != "SUCCESS"]
        if failed:
            out["failed_tasks"] = len(failed)
            out["error"] = f"{len(failed)} task(s) failed, first: {failed[0].get('result')}"
        return [*warm, *ids]
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- main


@contextmanager
def profiling(out_dir: Path | None, pids: list[int]) -> Iterator[None]:
    """With `--profile DIR`: py-spy (installed by hand) samples each worker during the burst.

    `--gil` keeps only the thread holding the GIL: where the worker's CPU goes.
    """
    if out_dir is None:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    spy = ["py-spy", "record", "--rate", "100", "--gil", "--nonblocking", "--format", "raw"]
    spies = [
        subprocess.Popen(
            [*spy, "--pid", str(pid), "--output", str(out_dir / f"worker-{i}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i, pid in enumerate(pids)
    ]
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()


def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = unique("bench-q")
    tmp = Path(tempfile.mkdtemp(prefix="bench-burst-"))
    db_url = POSTGRES_URL if args.db == "postgresql" else f"sqlite:///{tmp / 'activity.db'}"
    env = worker_env(args, prefix, db_url)
    os.environ.update({k: env[k] for k in ("REDIS_URL", "DATABASE_URL", "BENCH_BARE_QUEUE")})
    os.environ["AGENTEXEC_QUEUE_PREFIX"] = prefix
    out: dict[str, Any] = {
        "system": args.system,
        "work": args.work,
        "n": args.n,
        "latency": args.latency if args.work == "agent" else None,
        "procs": args.procs,
        "slots": args.slots if args.system != "bare-prefork" else os.cpu_count(),
        "db": args.db if args.system == "agentexec" else None,
    }

    def meanwhile() -> None:
        """While the workers boot: reset the tables and import the client's modules."""
        if args.system == "agentexec":
            reset_activity_tables(db_url)
            import bench.agentexec_tasks
        else:
            import bench.bare_celery  # noqa: F401

    ids: list[str] = []
    try:
        with running_workers(worker_argvs(args), env, tmp, meanwhile=meanwhile) as workers:
            with TreeSampler([w.pid for w in workers]) as sampler:
                cpu0 = cpu_seconds(sampler.pids())
                busy0, t0 = machine_busy_seconds(), time.perf_counter()
                with profiling(args.profile, [w.pid for w in workers]):
                    if args.system == "agentexec":
                        ids = asyncio.run(agentexec_burst(args, out))
                    else:
                        ids = asyncio.run(bare_burst(args, out))
                out["worker_cpu_s"] = round(cpu_seconds(sampler.pids()) - cpu0, 3)
                # Cores busy meanwhile, whoever used them (workers, client, Redis, PostgreSQL,
                # and any neighbour): 2.0 is a saturated 2-core machine.
                busy = machine_busy_seconds() - busy0
                out["machine_busy_cores"] = round(busy / (time.perf_counter() - t0), 2)
            out["peak_rss_mb"] = round(sampler.peak_mb, 1)
        out["rate_per_s"] = round(args.n / out["wall_s"], 2)
        if args.work == "agent":
            out["t_over_2l"] = round(out["wall_s"] / (2 * args.latency), 3)
        if args.system == "agentexec":
            out["activity"] = check_activity(db_url, ids[-args.n :])
        out["worker_tracebacks"] = sum(
            (tmp / f"worker-{i}.log").read_text(errors="replace").count("Traceback")
            for i in range(args.procs)
        )
    finally:
        delete_keys(
            REDIS_URL,
            patterns=queue_key_patterns(prefix),
            keys=[RESULT_PREFIX + i for i in dict.fromkeys([*ids, *published])],
        )
        if not args.keep_logs:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            out["log_dir"] = str(tmp)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--system", choices=["agentexec", "bare-threads", "bare-prefork"], required=True
    )
    parser.add_argument("--work", choices=["agent", "noop"], default="agent")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--procs", type=int, default=1, help="worker processes")
    parser.add_argument("--slots", type=int, default=1000, help="concurrency per process")
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument(
        "--wait",
        choices=["poll", "get_result"],
        default="poll",
        help="agentexec: wait by polling result keys (as for bare Celery) or with ax.get_result",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy each worker into DIR (raw stacks)"
    )
    args = parser.parse_args()
    install_sigterm_exit()
    hard_timeout(args.timeout + 120)
    from bench.common import disable_tracing

    disable_tracing()
    emit(run(args))


if __name__ == "__main__":
    main()
