"""Live watch latency: from an agent's `report_status` to the event reaching a subscriber.

One worker process holds N agents in flight (N = 1, 100, 1000). Each agent waits until every
watcher is subscribed, then reports R times, `--interval` seconds apart, starting at a random
offset so reports spread evenly. A report's event carries the time it was made (`Event.at`,
stamped in `report`, which `report_status` calls); a subscriber's delay is its arrival time
minus that. Two kinds of subscriber, one per agent, measured one after the other (each on a
batch of runs of its own):

- `ax.watch(agent_id)` in this process (one shared reader of the event log);
- the SSE endpoint `GET /agentexec/agents/{agent_id}/events` of the web router, served by
  uvicorn in its own process, read by a plain HTTP client in this process (`_sse_events`);
- `all`: ONE subscriber to the stream of every run, `GET /agentexec/agents/events` (what a
  dashboard opens), which carries every agent's reports.

The API authenticates every request with a bearer token, as `create_router` requires.

The worker, the API, this process, Redis and PostgreSQL share the machine.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/12 uv run python -m bench.watch [--agents 1,100,1000]

Prints one JSON line per size and path with p50/p99 (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from bench.common import (
    REPO_ROOT,
    base_env,
    emit,
    free_port,
    percentile,
    reset_activity_tables,
    unique,
)

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
POSTGRES_URL = os.environ.get(
    "BENCH_WATCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/bench_watch"
)
TASK = "watch_bench_agent"
#: The bearer token of the benchmark's API.
TOKEN = "bench-watch-token-0123456789"
#: When an event arrived, when it was reported, its position in the log.
Arrival = tuple[float, float, int]


# ----------------------------------------------------------------- the worker's agent task


class Pace(BaseModel):
    """When the bench agent starts reporting, and how often."""

    start_at: float
    offset: float
    interval: float
    reports: int


async def watch_bench_agent(agent_id: uuid.UUID, context: Pace) -> dict[str, int]:
    """Waits for the common start, then reports at a steady pace."""
    import agentexec as ax

    await asyncio.sleep(max(0.0, context.start_at - time.time()) + context.offset)
    for i in range(context.reports):
        ax.activity.update(agent_id, f"report {i + 1}", (i + 1) * 100 // context.reports)
        await asyncio.sleep(context.interval)
    return {"reports": context.reports}


def _register_task() -> None:
    import agentexec as ax

    ax.WorkerPool().task(TASK)(watch_bench_agent)


if os.environ.get("BENCH_WATCH_ROLE") in ("worker", "client"):
    _register_task()


def make_app() -> Any:
    """The API process: agentexec's router, nothing else (`uvicorn --factory`)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Header, HTTPException

    import agentexec as ax
    import agentexec.web

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        yield
        await ax.close_redis()

    def token(authorization: str | None = Header(None)) -> None:
        if authorization != f"Bearer {TOKEN}":
            raise HTTPException(401, "token")

    app = FastAPI(lifespan=lifespan)
    app.include_router(agentexec.web.create_router(auth=token), prefix="/agentexec")
    return app


# ----------------------------------------------------------------- subscribers


async def _watch(agent_id: uuid.UUID, delays: list[Arrival], ready: asyncio.Event) -> None:
    import agentexec as ax
    from agentexec.states import EventKind

    async for event in ax.watch(agent_id):
        if event.kind is EventKind.SNAPSHOT:
            ready.set()
        elif event.kind is EventKind.REPORT:
            delays.append((time.time(), event.at.timestamp(), event.seq or 0))


async def _sse(url: str, delays: list[Arrival], ready: asyncio.Event) -> None:
    async for data in _sse_events(url):
        arrived = time.time()
        if data["kind"] == "snapshot":
            ready.set()
        elif data["kind"] == "report":
            at = datetime.fromisoformat(data["at"]).timestamp()
            delays.append((arrived, at, data["seq"]))
        if data["status"] in ("COMPLETE", "ERROR", "CANCELED"):
            return


async def _all(
    url: str, ids: set[str], reports: int, delays: list[Arrival], ready: asyncio.Event
) -> None:
    """One subscriber to every run's events: the reports of `ids`, until each has ended."""
    left = set(ids)
    async for data in _sse_events(url):
        ready.set()  # the first frames are the queued runs' snapshots: subscribed
        if data["agent_id"] not in ids:
            continue
        if data["kind"] == "report":
            at = datetime.fromisoformat(data["at"]).timestamp()
            delays.append((time.time(), at, data["seq"]))
        if data["status"] in ("COMPLETE", "ERROR", "CANCELED"):
            left.discard(data["agent_id"])
            if not left:
                return


async def _sse_events(url: str) -> AsyncIterator[dict[str, Any]]:
    """The `data:` payloads of an event stream, read with a plain HTTP/1.1 client.

    A browser's EventSource parses in native code; a thousand httpx streams in this process
    would spend more CPU than the server they measure, on the same two cores. This reads the
    chunked body straight off the socket.
    """
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise RuntimeError(f"GET {url}: {head.decode(errors='replace')}")
        if b"chunked" not in head.lower():
            raise RuntimeError(f"GET {url}: expected a chunked body")
        pending = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                return
            pending += (await reader.readexactly(size + 2))[:-2]
            *frames, pending = pending.split(b"\n\n")
            for frame in frames:
                for line in frame.split(b"\n"):
                    if line.startswith(b"data: "):
                        yield json.loads(line[6:])
    finally:
        writer.close()


async def _measure(
    agents: int, reports: int, interval: float, api: str, path: str, raw: Path | None = None
) -> dict[str, Any]:
    """One batch of `agents` runs, each followed by one subscriber on `path` (`watch` or
    `sse`), or one subscriber for all of them (`all`), or both at once (`sse+all`: the stream
    of every run on an API that also serves a stream per run)."""
    import agentexec as ax

    # Every subscriber is in before the first report: enqueueing and subscribing take time
    # on a busy machine, so the agents start reporting at a common time well ahead.
    lead = 10.0 + agents / 20
    start_at = time.time() + lead
    contexts = [
        {
            "start_at": start_at,
            "offset": random.uniform(0, interval),  # first reports spread over one interval
            "interval": interval,
            "reports": reports,
        }
        for _ in range(agents)
    ]
    queued = await asyncio.gather(*(ax.enqueue(TASK, c) for c in contexts))
    delays: list[Arrival] = []
    all_delays: list[Arrival] = []
    readies: list[asyncio.Event] = []
    tasks = []
    subscribing = time.time()
    kinds = path.split("+")
    per_run = next((kind for kind in kinds if kind != "all"), None)
    if "all" in kinds:
        ready = asyncio.Event()
        readies.append(ready)
        ids = {str(q.agent_id) for q in queued}
        url = f"{api}/agentexec/agents/events?task={TASK}"
        tasks.append(asyncio.create_task(_all(url, ids, reports, all_delays, ready)))
    for i, q in enumerate(queued if per_run else ()):
        if i and i % 100 == 0:
            await asyncio.sleep(0.2)  # clients arrive in waves, not all in one instant
        ready = asyncio.Event()
        readies.append(ready)
        if per_run == "watch":
            tasks.append(asyncio.create_task(_watch(q.agent_id, delays, ready)))
        else:
            url = f"{api}/agentexec/agents/{q.agent_id}/events"
            tasks.append(asyncio.create_task(_sse(url, delays, ready)))
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), lead + 120)
    subscribed_in = time.time() - subscribing
    late = time.time() > start_at
    await asyncio.wait_for(asyncio.gather(*tasks), reports * interval + lead + 120)
    await ax.close_redis()
    if raw is not None:  # one line per event: arrived, reported, log position
        with raw.open("a") as out:
            out.writelines(f"{path} {agents} {a:.6f} {at:.6f} {seq}\n" for a, at, seq in delays)

    if not per_run:
        delays, all_delays = all_delays, []
    result = {
        "path": path,
        "agents": agents,
        "reports_per_agent": reports,
        "interval_s": interval,
        "subscribed_in_s": round(subscribed_in, 2),
        "subscribed_late": late,
        "expected_events": agents * reports,
        **_summary(delays),
    }
    if all_delays:
        result["all_runs_stream"] = _summary(all_delays)
    return result


def _stats(values: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    return {
        "p50_ms": round(percentile(ms, 50), 1) if ms else None,
        "p99_ms": round(percentile(ms, 99), 1) if ms else None,
        "max_ms": round(max(ms), 1) if ms else None,
    }


def _summary(delays: list[Arrival]) -> dict[str, Any]:
    """Delays from report to arrival; the log's entry id holds the millisecond Redis appended
    the event, which splits each into the worker's part (report to append) and the delivery
    (append to subscriber)."""
    total = [arrived - at for arrived, at, _ in delays]
    appended = [(seq >> 20) / 1000 - at for _, at, seq in delays]
    delivered = [arrived - (seq >> 20) / 1000 for arrived, _, seq in delays]
    return {
        "events": len(delays),
        **_stats(total),
        "report_to_append": _stats(appended),
        "append_to_subscriber": _stats(delivered),
    }


# ----------------------------------------------------------------- driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="1,100,1000", help="comma-separated in-flight sizes")
    parser.add_argument("--reports", type=int, default=10, help="reports per agent")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between reports")
    parser.add_argument(
        "--paths", default="watch,sse,all,sse+all", help="subscribers: watch, sse, all, sse+all"
    )
    parser.add_argument("--raw", type=Path, help="append every event's times to this file")
    args = parser.parse_args()
    sizes = [int(s) for s in args.agents.split(",") if s.strip()]

    from agentexec.processes import WorkerProcess, celery_worker_argv, wait_for

    env = base_env(
        REDIS_URL=REDIS_URL,
        DATABASE_URL=POSTGRES_URL,
        AGENTEXEC_QUEUE_PREFIX=unique("bench-watch"),
        AGENTEXEC_NUM_WORKERS=str(max(sizes) + 10),
        PYTHONPATH=str(REPO_ROOT),
    )
    os.environ.update(env)
    from agentexec.config import get_settings

    get_settings.cache_clear()  # read again, with this environment
    reset_activity_tables(POSTGRES_URL)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    api_argv = [sys.executable, "-m", "uvicorn", "--factory", "bench.watch:make_app",
                "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip

    def answers() -> bool:
        try:
            return httpx.get(f"{api_url}/openapi.json", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    os.environ["BENCH_WATCH_ROLE"] = "client"
    _register_task()
    worker = WorkerProcess(
        celery_worker_argv("-I", "bench.watch", name="bench-watch"),
        {**env, "BENCH_WATCH_ROLE": "worker"},
        REPO_ROOT,
        log_dir / "worker.log",
    )
    api = WorkerProcess(api_argv, env, REPO_ROOT, log_dir / "api.log")
    try:
        worker.start(120)
        api.start(120, answers)
        wait_for(answers, 30, "the API")
        for agents in sizes:
            for path in args.paths.split(","):
                result = asyncio.run(
                    _measure(agents, args.reports, args.interval, api_url, path, args.raw)
                )
                emit({"bench": "watch", **result})
    finally:
        api.stop(20)
        worker.stop(30)


if __name__ == "__main__":
    main()
