#!/usr/bin/env python
"""Benchmark upstream agentexec 0.3.0 (PyPI) on this machine.

Run with the upstream venv (see setup.sh):
    bench/.venv-upstream/bin/python bench/upstream/run_upstream.py --mode throughput --n 200 --latency 1 --workers 4

Prints exactly ONE JSON line on stdout; everything else goes to stderr.

Modes
  throughput  N agents (OpenAIRunner + fake model: 2 turns of `latency` s, one report_status
              tool call), enqueued concurrently, executed by upstream's Pool with W workers.
  noop        N tasks that return immediately, same pipeline.
  enqueue     latency of N sequential `ax.enqueue` calls (no workers).

Workers are started the way upstream documents: `agentexec run upstream_tasks:pool --workers W`
(a separate pool process that spawns W worker processes). The pool process is put in its own
process group and killed (SIGTERM, then SIGKILL) when the run ends or times out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent  # holds *our* agentexec package, which must not shadow upstream's
UPSTREAM_KEY_PATTERNS = ("agentexec_tasks*", "agentexec:*")  # queue prefix, key prefix (config.py)

_pool_proc: subprocess.Popen | None = None


def log(*a) -> None:
    print("[run_upstream]", *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- config helpers
def async_db_url(url: str | None, tmpdir: str) -> tuple[str, str]:
    """Return (async SQLAlchemy URL, kind). Default: fresh sqlite file in tmpdir."""
    if not url:
        return f"sqlite+aiosqlite:///{tmpdir}/upstream_activity.db", "sqlite"
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme in ("postgresql", "postgres"):
        return urlunsplit(parts._replace(scheme="postgresql+psycopg")), "postgresql"
    if scheme == "sqlite":
        return urlunsplit(parts._replace(scheme="sqlite+aiosqlite")), "sqlite"
    raise SystemExit(f"unsupported --database-url scheme: {parts.scheme}")


def ensure_postgres_db(async_url: str) -> None:
    """Create the target postgres database if it does not exist (connects to db 'postgres')."""
    import psycopg

    parts = urlsplit(async_url.replace("postgresql+psycopg", "postgresql", 1))
    dbname = parts.path.lstrip("/")
    try:
        psycopg.connect(urlunsplit(parts), connect_timeout=5).close()
        return
    except psycopg.OperationalError as e:
        if "does not exist" not in str(e):
            raise
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    log(f"created postgres database {dbname}")


async def reset_db(engine) -> None:
    import agentexec as ax

    async with engine.begin() as conn:
        await conn.run_sync(ax.Base.metadata.drop_all)
        await conn.run_sync(ax.Base.metadata.create_all)


async def flush_redis(r) -> int:
    deleted = 0
    for pattern in UPSTREAM_KEY_PATTERNS:
        batch = []
        async for key in r.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await r.delete(*batch)
                batch = []
        if batch:
            deleted += await r.delete(*batch)
    return deleted


# --------------------------------------------------------------------------- pool process
def start_pool(workers: int, env: dict, logfile: Path, shutdown_timeout: int) -> subprocess.Popen:
    global _pool_proc
    cmd = [
        sys.executable,
        "-c",
        "import sys; sys.argv[0] = 'agentexec'; from agentexec.cli import main; main()",
        "run",
        "upstream_tasks:pool",
        "--workers",
        str(workers),
        "--log-level",
        "WARNING",
        "--shutdown-timeout",
        str(shutdown_timeout),
    ]
    fh = open(logfile, "wb")
    _pool_proc = subprocess.Popen(
        cmd,
        cwd=str(HERE),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # own process group: we can kill pool + workers together
    )
    fh.close()
    return _pool_proc


async def wait_workers_ready(
    proc: subprocess.Popen, logfile: Path, workers: int, timeout: float
) -> float:
    """Wait until every worker process logged 'Worker i starting' (worker/pool.py:160)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(
                f"pool exited early rc={proc.returncode}:\n{logfile.read_text()[-3000:]}"
            )
        text = logfile.read_text(errors="replace")
        if all(f"Worker {i} starting" in text for i in range(workers)):
            return time.perf_counter() - t0
        await asyncio.sleep(0.05)
    raise TimeoutError(f"workers not ready after {timeout}s:\n{logfile.read_text()[-3000:]}")


def stop_pool(grace: float = 15.0) -> int | None:
    """SIGTERM the pool (upstream's CLI turns it into a graceful shutdown), then SIGKILL the group."""
    global _pool_proc
    proc = _pool_proc
    if proc is None:
        return None
    _pool_proc = None
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log("pool did not stop after SIGTERM, killing its process group")
    if pgid is not None:
        try:
            os.killpg(pgid, signal.SIGKILL)  # workers are in the same group
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    return proc.returncode


# --------------------------------------------------------------------------- modes
def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


async def count_unfinished(agent_ids) -> int:
    """How many of `agent_ids` have a latest activity log that is QUEUED or RUNNING.
    Same query shape as upstream's Activity.get_active_count (activity/models.py:298-329),
    restricted to the given agents so orphaned activities (enqueue failures) don't count."""
    from agentexec.activity.models import Activity, ActivityLog
    from agentexec.activity.status import Status
    from agentexec.core.db import get_session
    from sqlalchemy import func, select

    latest = select(
        ActivityLog.activity_id,
        ActivityLog.status,
        func.row_number()
        .over(partition_by=ActivityLog.activity_id, order_by=ActivityLog.created_at.desc())
        .label("rn"),
    ).subquery()
    q = (
        select(func.count(Activity.id))
        .join(latest, (Activity.id == latest.c.activity_id) & (latest.c.rn == 1))
        .where(latest.c.status.in_([Status.QUEUED, Status.RUNNING]))
        .where(Activity.agent_id.in_(list(agent_ids)))
    )
    async with get_session() as db:
        return (await db.execute(q)).scalar() or 0


async def wait_all_done(r, tasks, t0: float, deadline: float, out: dict) -> None:
    """Phase 1: all result keys in Redis (what ax.get_result polls, core/results.py:42-63).
    Phase 2: none of the tasks' activities still QUEUED/RUNNING in the DB (the COMPLETE log
    is written by the pool process after an IPC hop, worker/pool.py:279-280)."""
    from agentexec.state import KEY_RESULT

    keys = {":".join((*KEY_RESULT, str(t.agent_id))): t for t in tasks}
    pending = list(keys)
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} results still missing")
        vals = await r.mget(pending)
        pending = [k for k, v in zip(pending, vals) if v is None]
        if pending:
            await asyncio.sleep(0.05)
    out["results_wall_s"] = round(time.perf_counter() - t0, 4)
    ids = [t.agent_id for t in tasks]
    while True:
        active = await count_unfinished(ids)
        if active == 0:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{active} activities still queued/running")
        await asyncio.sleep(0.05)
    out["activity_wall_s"] = round(time.perf_counter() - t0, 4)


async def summarize(r, tasks, out: dict) -> None:
    from agentexec.core.results import TaskFailure, _get_result
    from sqlalchemy import func, select

    import agentexec as ax

    completed = failed = 0
    for t in tasks:
        res = await _get_result(t.agent_id)
        if isinstance(res, TaskFailure):
            failed += 1
        elif res is not None:
            completed += 1
    out["completed"] = completed
    out["failed"] = failed
    from agentexec.activity.models import ActivityLog
    from agentexec.core.db import get_session

    async with get_session() as db:
        rows = (
            await db.execute(select(ActivityLog.status, func.count()).group_by(ActivityLog.status))
        ).all()
    out["activity_log_rows"] = {str(getattr(s, "value", s)): c for s, c in rows}
    lst = await ax.activity.list(page=1, page_size=1)
    out["activity_total"] = lst.total


async def bench(args, out: dict, tmpdir: str) -> None:
    import redis.asyncio as aredis
    import upstream_tasks
    from agentexec.state import backend

    import agentexec as ax

    out["openai_agents_scripted_model"] = upstream_tasks.HAVE_SCRIPTED_MODEL
    engine = upstream_tasks.pool._engine
    r = aredis.Redis.from_url(args.redis_url)
    deadline = time.monotonic() + args.timeout
    try:
        await reset_db(engine)
        out["redis_keys_flushed"] = await flush_redis(r)
        out["redis_dbsize_at_start"] = await r.dbsize()

        if args.mode == "enqueue":
            ctx = upstream_tasks.NoopInput
            for i in range(args.warmup):
                await ax.enqueue("bench_noop", ctx(idx=-1 - i))
            lat = []
            t0 = time.perf_counter()
            for i in range(args.n):
                if time.monotonic() > deadline:
                    raise TimeoutError("enqueue loop exceeded timeout")
                s = time.perf_counter()
                await ax.enqueue("bench_noop", ctx(idx=i))
                lat.append((time.perf_counter() - s) * 1000)
            wall = time.perf_counter() - t0
            out.update(
                completed=len(lat),
                wall_s=round(wall, 4),
                enqueues_per_s=round(len(lat) / wall, 2),
                p50_ms=round(statistics.median(lat), 3),
                p99_ms=round(pct(lat, 99), 3),
                mean_ms=round(statistics.fmean(lat), 3),
                max_ms=round(max(lat), 3),
                warmup_excluded=args.warmup,
            )
            out["queue_len"] = await r.llen("agentexec_tasks")
            return

        # throughput / noop: start upstream's pool (separate process, W spawned workers)
        env = dict(os.environ)
        env["AGENTEXEC_NUM_WORKERS"] = str(args.workers)
        logfile = Path(tmpdir) / "pool.log"
        out["pool_log"] = str(logfile)
        proc = start_pool(args.workers, env, logfile, shutdown_timeout=10)
        out["pool_pid"] = proc.pid
        ready = await wait_workers_ready(
            proc, logfile, args.workers, timeout=min(120, args.timeout)
        )
        out["workers_ready_s"] = round(ready, 3)

        if args.mode == "throughput":
            name = "bench_agent"
            contexts = [
                upstream_tasks.AgentInput(latency=args.latency, idx=i) for i in range(args.n)
            ]
        else:
            name = "bench_noop"
            contexts = [upstream_tasks.NoopInput(idx=i) for i in range(args.n)]

        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(ax.enqueue(name, c) for c in contexts), return_exceptions=True
        )
        enqueue_wall = time.perf_counter() - t0
        tasks = [t for t in results if not isinstance(t, BaseException)]
        errors = [t for t in results if isinstance(t, BaseException)]
        out["enqueue_wall_s"] = round(enqueue_wall, 4)
        out["enqueue_errors"] = len(errors)
        if errors:
            out["enqueue_error_sample"] = repr(errors[0])[:300]
            out["partial"] = True  # failed enqueues leave an orphaned QUEUED activity row
        try:
            await wait_all_done(r, tasks, t0, deadline, out)
        except TimeoutError as e:
            out["error"] = f"timeout: {e}"
        wall = out.get("activity_wall_s")
        if wall:
            out["wall_s"] = wall
            key = "agents_per_s" if args.mode == "throughput" else "tasks_per_s"
            # only successfully enqueued tasks ran; rate over what actually completed
            out[key] = round(len(tasks) / wall, 3)
        if args.mode == "throughput":
            # each worker process runs one task at a time (worker/pool.py:172-202)
            out["ideal_wall_s"] = math.ceil(args.n / args.workers) * 2 * args.latency
        await summarize(r, tasks, out)
        out["pool_rc"] = stop_pool()
        text = logfile.read_text(errors="replace")
        out["worker_tracebacks"] = text.count("Traceback")
    finally:
        stop_pool()
        await r.aclose()
        await backend.close()
        await engine.dispose()


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--mode", choices=["throughput", "noop", "enqueue"], required=True)
    p.add_argument("--n", type=int, default=20)
    p.add_argument(
        "--latency", type=float, default=0.2, help="simulated model latency per turn (s)"
    )
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--database-url", default=None, help="default: fresh sqlite file in a temp dir")
    p.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/9",
        help="upstream scans the whole DB on every pop, so a dedicated DB index is best",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="overall timeout (s)")
    p.add_argument("--warmup", type=int, default=5, help="enqueue mode: untimed warm-up enqueues")
    p.add_argument(
        "--redis-pool-size",
        type=int,
        default=None,
        help="AGENTEXEC_REDIS_POOL_SIZE (upstream default 10). Default here: max(10, n + 10), "
        "because with upstream's 10 a concurrent gather of enqueues fails with "
        "redis MaxConnectionsError; pass 10 to reproduce that",
    )
    p.add_argument(
        "--keep-tmp", action="store_true", help="keep the temp dir (sqlite db, pool.log)"
    )
    args = p.parse_args()

    tmpdir = tempfile.mkdtemp(prefix="bench-upstream-")
    db_url, kind = async_db_url(args.database_url, tmpdir)
    # Config must be in the environment before agentexec is imported (config.py:167, CONF = Config()).
    os.environ["BENCH_UPSTREAM_DB_URL"] = db_url
    os.environ["AGENTEXEC_REDIS_URL"] = args.redis_url
    os.environ["AGENTEXEC_NUM_WORKERS"] = str(args.workers)
    os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
    redis_pool_size = args.redis_pool_size or max(10, args.n + 10)
    os.environ["AGENTEXEC_REDIS_POOL_SIZE"] = str(redis_pool_size)
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # keep bench/upstream free of __pycache__
    sys.dont_write_bytecode = True
    # Never pick up the repo's own `agentexec` package instead of the upstream one.
    os.environ.pop("PYTHONPATH", None)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO_ROOT]
    sys.path.insert(0, str(HERE))
    import agentexec

    if "site-packages" not in agentexec.__file__:
        raise SystemExit(
            f"imported the wrong agentexec: {agentexec.__file__} (run with the upstream venv)"
        )

    from importlib.metadata import version

    out: dict = {
        "impl": "agentexec-upstream",
        "agentexec_version": version("agentexec"),
        "openai_agents_version": version("openai-agents"),
        "python": sys.version.split()[0],
        "mode": args.mode,
        "n": args.n,
        "latency": args.latency if args.mode == "throughput" else None,
        "workers": args.workers if args.mode != "enqueue" else None,
        "db": kind,
        "redis_url": args.redis_url,
        "redis_pool_size": redis_pool_size,
    }

    # Hard backstop: whatever happens, never outlive timeout + 60 s.
    def _alarm(signum, frame):
        stop_pool(grace=2)
        out["error"] = "hard timeout (SIGALRM)"
        print(json.dumps(out), flush=True)
        os._exit(3)

    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(args.timeout) + 60)
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt()))

    rc = 0
    try:
        if kind == "postgresql":
            ensure_postgres_db(db_url)
        asyncio.run(asyncio.wait_for(bench(args, out, tmpdir), timeout=args.timeout + 30))
    except BaseException as e:
        out.setdefault("error", f"{type(e).__name__}: {e}"[:500])
        traceback.print_exc(file=sys.stderr)
        rc = 1
    finally:
        stop_pool(grace=5)
        signal.alarm(0)
        if not args.keep_tmp:
            import shutil

            shutil.rmtree(tmpdir, ignore_errors=True)
            out.pop("pool_log", None)
    if "error" in out:
        rc = rc or 2
    print(json.dumps(out), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
