"""Long-running commands: `worker` and `project`."""

from __future__ import annotations

import threading

import click

from agentexec.cli.common import app_option, load_app


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@app_option
@click.pass_context
def worker(ctx: click.Context, app_module: str | None) -> None:
    """Run a worker on both queues: `celery worker` with any of Celery's flags.

    The log level is AGENTEXEC_LOG_LEVEL (INFO by default) unless you pass -l/--loglevel.
    With -A, the module is imported first, so its tasks and database are the worker's.
    `celery worker --help` lists Celery's flags.

    \b
    Examples:
      agentexec worker -A myapp.worker
      agentexec worker -A myapp.worker -c 200 -n agents@%h
    """
    from agentexec.config import get_settings

    app = load_app(app_module)
    app.worker_main(["worker", f"--loglevel={get_settings().log_level}", *ctx.args])


@click.command("project")
@app_option
def project(app_module: str | None) -> None:
    """Apply the event log to the activity tables, on its own (until Ctrl+C or SIGTERM).

    Workers do this by default; run it alone when workers run with AGENTEXEC_PROJECTOR=false.

    \b
    Example:
      agentexec project -A myapp.worker
    """
    import logging
    import signal

    from agentexec.runtime import get_runtime

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s] %(message)s")
    load_app(app_module)
    runtime = get_runtime()
    projector = runtime.start_projector()
    click.echo(f"projecting {runtime.events.key} into {runtime.engine.url.render_as_string()}")
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    runtime.stop()
    click.echo(f"stopped after applying {projector.applied} events")
