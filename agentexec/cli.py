"""The `agentexec` command: a worker, a health check, table creation and the demo."""

from __future__ import annotations

import sys
import threading

import click


@click.group()
def main() -> None:
    """agentexec: AI agents as Celery background tasks."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a worker: `celery -A agentexec worker`, with any extra arguments."""
    from agentexec import app

    app.worker_main(["worker", *ctx.args])


@main.command()
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for workers.")
def check(timeout: float) -> None:
    """Health probe: Redis, the activity database and live workers. Exit code 1 on failure."""
    from sqlalchemy import text

    from agentexec import app, get_settings
    from agentexec.embedded import redis_answers
    from agentexec.runtime import get_runtime

    settings = get_settings()
    ok = redis_answers(settings.redis_url, timeout)
    click.echo(f"redis     {'ok' if ok else 'UNREACHABLE'}  {settings.redis_url}")
    try:
        engine = get_runtime().engine
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        click.echo(f"database  ok  {engine.url.render_as_string()}")
    except Exception as exc:
        ok = False
        click.echo(f"database  UNREACHABLE  {exc}")
    if ok:
        replies = app.control.ping(timeout=timeout) or []
        names = sorted(name for reply in replies for name in reply)
        click.echo(f"workers   {len(names)}  {' '.join(names)}")
    sys.exit(0 if ok else 1)


@main.command("create-tables")
def create_tables() -> None:
    """Create the activity tables in DATABASE_URL (idempotent)."""
    from agentexec.db.models import Base
    from agentexec.runtime import get_runtime

    engine = get_runtime().engine
    Base.metadata.create_all(engine)
    click.echo(f"activity tables ready in {engine.url.render_as_string()}")


@main.command()
@click.option("-A", "--app", "app_name", default=None, help="Module that builds your WorkerPool.")
def project(app_name: str | None) -> None:
    """Apply the event log to the activity tables, on its own (until Ctrl+C or SIGTERM).

    Workers do this by default; run it alone when workers run with AGENTEXEC_PROJECTOR=false.

    Example: agentexec project -A myapp.worker
    """
    import importlib
    import logging
    import signal

    from agentexec.runtime import get_runtime

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s] %(message)s")
    if app_name:
        importlib.import_module(app_name)  # binds the WorkerPool's database
    runtime = get_runtime()
    projector = runtime.start_projector()
    click.echo(f"projecting {runtime.events.key} into {runtime.engine.url.render_as_string()}")
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    runtime.stop()
    click.echo(f"stopped after applying {projector.applied} events")


@main.command()
@click.option("--agents", default=6, show_default=True, help="How many agents to run.")
@click.option("--flower", is_flag=True, help="Also start Flower on port 5555.")
def demo(agents: int, flower: bool) -> None:
    """Run research agents in the background and watch their activity (no setup needed)."""
    from agentexec.demo import run

    sys.exit(run(agents=agents, flower=flower))


if __name__ == "__main__":
    main()
