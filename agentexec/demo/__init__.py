"""The demo: research agents run in the background while a live table shows their progress.

`agentexec demo` runs from any directory and needs nothing set up: without a reachable
Redis it starts an embedded one, the activity goes to a SQLite file in a new directory that
is kept (with the worker's log) for a look afterwards, and without `OPENAI_API_KEY` the
agents use a scripted offline model.

Each run has its own queue prefix, so no other worker on the same Redis takes its tasks,
and every process it starts is stopped on every way out: the end, an error, the timeout,
Ctrl+C (at any moment) or SIGTERM. On Linux the children also die with the demo if it is
killed outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from agentexec.demo.board import Board

COMPANIES = ["Anthropic", "Acme Corp", "Globex", "Initech", "Umbrella", "Hooli", "Stark"]
#: Seconds a child gets to stop on SIGTERM before it is killed.
_STOP_TIMEOUT = 10


class DemoError(Exception):
    """The demo cannot go on; the message says why and what to do."""


def company_names(count: int) -> list[str]:
    """`count` distinct company names."""
    names = []
    for i in range(count):
        lap = i // len(COMPANIES)
        name = COMPANIES[i % len(COMPANIES)]
        names.append(name if lap == 0 else f"{name} {lap + 1}")
    return names


def run(agents: int = 6, flower_port: int | None = None, timeout: float = 300.0) -> int:
    """Run the demo and return a process exit code (130 when interrupted)."""
    if agents < 1:
        raise ValueError("agents must be at least 1")
    console = Console(highlight=False)
    if not console.is_terminal:  # a pipe or a file: no live updates, and no wrapping at 80
        console = Console(highlight=False, width=160)
    stack = contextlib.ExitStack()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _run(stack, console, agents, flower_port, timeout)
    except KeyboardInterrupt:
        console.print("\n[yellow]Interrupted:[/yellow] stopping everything the demo started.")
        return 130
    except DemoError as exc:
        console.print(f"[red]Error:[/red] {exc}")
        return 1
    finally:
        # Stopping must not be interrupted in turn: a second Ctrl+C would leave a child.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.close()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(
    stack: contextlib.ExitStack,
    console: Console,
    agents: int,
    flower_port: int | None,
    timeout: float,
) -> int:
    from agentexec.config import get_settings
    from agentexec.demo.embedded import EmbeddedRedis, redis_answers

    if flower_port is not None and not _port_free(flower_port):
        raise DemoError(
            f"port {flower_port} on 127.0.0.1 is taken, so Flower cannot start: "
            "choose another with --flower-port"
        )
    workdir = Path(tempfile.mkdtemp(prefix="agentexec-demo-"))
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"demo-{uuid.uuid4().hex[:8]}"
    if redis_answers(url):
        console.print(f"Redis:     {_redact(url)}")
        stack.callback(_drop_keys, url, prefix)  # a shared Redis: leave nothing behind
    else:
        console.print("Redis:     starting an embedded redis-server (nothing answers at REDIS_URL)")
        url = stack.enter_context(EmbeddedRedis())
        console.print(f"           embedded redis-server at {url}")
    database_url = os.environ.get("DATABASE_URL", f"sqlite:///{workdir}/agents.db")
    model = "gpt-4o" if os.environ.get("OPENAI_API_KEY") else "scripted offline model"
    console.print(f"Database:  {_redact(database_url)}")
    console.print(f"Model:     {model}")
    os.environ.update(
        REDIS_URL=url,
        DATABASE_URL=database_url,
        AGENTEXEC_QUEUE_PREFIX=prefix,
        CELERY_CONFIG_MODULE="agentexec.demo.celeryconfig",
        RESEARCH_SCRIPTED_LATENCY=os.environ.get("RESEARCH_SCRIPTED_LATENCY", "1.0"),
    )
    get_settings.cache_clear()  # the environment changed
    _start_worker(stack, console, workdir)
    if flower_port is not None:
        _start_flower(stack, console, workdir, flower_port)
    try:
        code = asyncio.run(_enqueue_and_watch(console, agents, timeout))
    finally:
        console.print(
            f"Kept:      {workdir} (worker log; inspect the runs with "
            f"`DATABASE_URL={_redact(database_url)} agentexec list`)"
        )
    if flower_port is not None:
        console.print(f"Flower stays up at http://127.0.0.1:{flower_port}: press Ctrl+C to stop.")
        while True:
            time.sleep(3600)
    return code


def _start_worker(stack: contextlib.ExitStack, console: Console, workdir: Path) -> None:
    from agentexec.processes import WorkerProcess

    argv = [
        sys.executable, "-m", "celery", "-A", "agentexec", "worker", "--loglevel=INFO",
        "--hostname=demo@%h", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    worker = WorkerProcess(argv, os.environ, workdir, workdir / "worker.log", die_with_parent=True)
    # Registered before it starts: Ctrl+C while it starts stops it too.
    stack.callback(worker.stop, _STOP_TIMEOUT)
    console.print(f"Worker:    starting demo@{socket.gethostname()} ...")
    try:
        worker.start(ready_timeout=120)
    except TimeoutError as exc:
        raise DemoError(f"the worker did not start; its log is {worker.log_path}\n{exc}") from exc
    console.print(f"           ready (log: {worker.log_path})")


def _start_flower(stack: contextlib.ExitStack, console: Console, workdir: Path, port: int) -> None:
    from agentexec.processes import WorkerProcess

    argv = [
        sys.executable, "-m", "celery", "-A", "agentexec", "flower",
        "--address=127.0.0.1", f"--port={port}",
    ]  # fmt: skip
    flower = WorkerProcess(argv, os.environ, workdir, workdir / "flower.log", die_with_parent=True)
    stack.callback(flower.stop, _STOP_TIMEOUT)
    try:
        flower.start(ready_timeout=60, ready=lambda: "Visit me at" in flower.log())
    except TimeoutError as exc:
        raise DemoError(
            f"Flower did not start on 127.0.0.1:{port} (is the port taken? choose another "
            f"with --flower-port); its log is {flower.log_path}"
        ) from exc
    console.print(f"Flower:    http://127.0.0.1:{port}")


async def _enqueue_and_watch(console: Console, agents: int, timeout: float) -> int:
    import agentexec as ax
    from agentexec.demo.agent import ResearchContext
    from agentexec.eventlog.reading import Follower
    from agentexec.runtime import get_runtime

    runtime = get_runtime()
    runtime.bind(database_url=os.environ["DATABASE_URL"])
    ax.Base.metadata.create_all(runtime.engine)
    names = company_names(agents)
    started = time.monotonic()
    handles = await asyncio.gather(
        *(
            ax.enqueue(
                "research_company",
                ResearchContext(company=name, focus_areas=["products", "funding"]),
                priority=ax.Priority.HIGH if i == agents - 1 else ax.Priority.LOW,
            )
            for i, name in enumerate(names)
        )
    )
    board = Board([(h.agent_id, name) for h, name in zip(handles, names, strict=True)])
    board.priority(handles[-1].agent_id, "HIGH")
    console.print(f"\nEnqueued {agents} research agents (the last one HIGH priority).\n")
    follower = Follower(runtime.events.client(), runtime.events.key, board.agent_ids)
    deadline = started + timeout
    timed_out = False
    first = board.render(time.monotonic() - started)
    with Live(first, console=console, refresh_per_second=8) as live:
        while not board.done:
            if time.monotonic() > deadline:
                timed_out = True
                break
            events = await asyncio.to_thread(follower.read, 250)
            for event in events:
                board.apply(event)
            live.update(board.render(time.monotonic() - started))
    elapsed = time.monotonic() - started
    if timed_out:
        await ax.close_redis()
        console.print(
            f"\n[red]Timed out:[/red] {board.finished}/{agents} agents finished within "
            f"{timeout:.0f}s (--timeout). Look at the worker log below for why."
        )
        return 1
    results: dict[Any, Any] = {}
    for handle in handles:
        try:
            results[handle.agent_id] = await ax.get_result(handle.agent_id, timeout=10)
        except ax.AgentExecError as exc:
            results[handle.agent_id] = exc
    await ax.close_redis()
    console.print()
    console.print(board.summary(results, elapsed))
    failed = sum(isinstance(r, Exception) for r in results.values())
    console.print(
        f"\n{agents - failed}/{agents} agents finished in {elapsed:.1f}s"
        + (f", {failed} failed." if failed else ".")
    )
    return 1 if failed else 0


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _drop_keys(url: str, prefix: str) -> None:
    """Delete the demo's keys from a Redis it shares with others."""
    import redis

    with contextlib.suppress(redis.RedisError), redis.Redis.from_url(url) as client:
        keys = [*client.scan_iter(f"{prefix}.*"), *client.scan_iter(f"_kombu.binding*{prefix}.*")]
        if keys:
            client.delete(*keys)


def _redact(url: str) -> str:
    from agentexec.config import redact

    return redact(url)
