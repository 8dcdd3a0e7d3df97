"""The demo: research agents run in the background while you watch their activity.

`uv run agentexec demo` from the repository root. It needs nothing installed: without a
reachable Redis it starts an embedded one, the activity log goes to a fresh SQLite file,
and without `OPENAI_API_KEY` the agents use a scripted offline model.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.orm import Session

COMPANIES = ["Anthropic", "Acme Corp", "Globex", "Initech", "Umbrella", "Hooli", "Stark"]
TERMINAL = {"COMPLETE", "ERROR", "CANCELED"}


def run(agents: int = 6, flower: bool = False) -> int:
    """Run the demo and return a process exit code."""
    from agentexec.config import get_settings
    from agentexec.embedded import EmbeddedRedis, redis_answers

    with contextlib.ExitStack() as stack:
        url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        if redis_answers(url):
            print(f"Redis:     {url}")
        else:
            url = stack.enter_context(EmbeddedRedis())
            print(f"Redis:     embedded redis-server at {url} (nothing reachable at REDIS_URL)")
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="agentexec-demo-"))
        database_url = os.environ.get("DATABASE_URL", f"sqlite:///{tmp}/agents.db")
        model = "gpt-4o" if os.environ.get("OPENAI_API_KEY") else "scripted offline model"
        print(f"Database:  {database_url}")
        print(f"Model:     {model}")
        os.environ.update(
            REDIS_URL=url,
            DATABASE_URL=database_url,
            RESEARCH_SCRIPTED_LATENCY=os.environ.get("RESEARCH_SCRIPTED_LATENCY", "1.0"),
        )
        get_settings.cache_clear()  # agentexec read the environment when it was imported
        stack.enter_context(_worker(Path(tmp), flower))
        return asyncio.run(_enqueue_and_watch(agents))


@contextlib.contextmanager
def _worker(tmp: Path, flower: bool) -> Iterator[None]:
    from agentexec.processes import WorkerProcess, celery_worker_argv

    if not Path("celeryconfig.py").exists():
        raise SystemExit("run the demo from the repository root (where celeryconfig.py is)")
    sys.path.insert(0, str(Path.cwd()))  # the example tasks live in ./tasks
    worker = WorkerProcess(celery_worker_argv(), os.environ, Path.cwd(), tmp / "worker.log")
    print("Worker:    celery -A agentexec worker ...", end="", flush=True)
    worker.start(ready_timeout=60)
    print(f" ready (log: {worker.log_path})")
    monitor = None
    if flower:
        argv = [sys.executable, "-m", "celery", "-A", "agentexec", "flower", "--port=5555"]
        monitor = WorkerProcess(argv, os.environ, Path.cwd(), tmp / "flower.log")
        monitor.start(ready=lambda: "Visit me at" in monitor.log() if monitor else False)
        print("Flower:    http://127.0.0.1:5555 (stays up until you press Ctrl+C)")
    try:
        yield
        if monitor is not None and monitor.process is not None:
            with contextlib.suppress(KeyboardInterrupt):
                monitor.process.wait()
    finally:
        if monitor is not None:
            monitor.stop(10)
        worker.stop(30)


async def _enqueue_and_watch(agents: int) -> int:
    import agentexec as ax
    from agentexec.runtime import get_runtime
    from tasks.research import ResearchContext

    get_runtime().bind(database_url=os.environ["DATABASE_URL"])
    engine = get_runtime().engine
    ax.Base.metadata.create_all(engine)
    started = time.monotonic()
    names = [COMPANIES[i % len(COMPANIES)] for i in range(agents)]
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
    print(f"\nEnqueued {agents} research agents (the last one HIGH priority). Activity:\n")
    company = {h.agent_id: name for h, name in zip(handles, names, strict=True)}
    seen: dict[object, int] = {}
    while True:
        with Session(engine) as session:
            details = [ax.activity.detail(session, h.agent_id) for h in handles]
        for activity in details:
            if activity is None:
                continue
            for log in activity.logs[seen.get(activity.agent_id, 0) :]:
                pct = (
                    "" if log.completion_percentage is None else f"{log.completion_percentage:3d}%"
                )
                print(
                    f"  {time.monotonic() - started:5.1f}s  {company[activity.agent_id]:<10} "
                    f"{log.status.value:<9} {pct:>4}  {log.message}"
                )
            seen[activity.agent_id] = len(activity.logs)
        if all(a is not None and a.status.value in TERMINAL for a in details):
            break
        await asyncio.sleep(0.25)
    print("\nResults (from the Redis result backend):")
    failed = 0
    for handle in handles:
        try:
            result = await ax.get_result(handle.agent_id, timeout=5)
            print(f"  {company[handle.agent_id]:<10} {result['findings']}")
        except ax.AgentExecError as exc:
            failed += 1
            print(f"  {company[handle.agent_id]:<10} {exc}")
    await ax.close_redis()
    print(f"\n{agents - failed}/{agents} agents finished in {time.monotonic() - started:.1f}s.")
    return 1 if failed else 0
