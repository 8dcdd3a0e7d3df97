"""`agentexec beat` and `agentexec schedule`: schedules of agent runs, kept in Redis."""

from __future__ import annotations

import json
from typing import Any

import click

from agentexec.cli.common import app_option, load_app


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@app_option
@click.pass_context
def beat(ctx: click.Context, app_module: str | None) -> None:
    """Run Celery beat with the schedules kept in Redis: `celery beat` with any of its flags.

    Declared schedules (`pool.add_schedule`) are written to Redis as it starts. One beat
    runs at a time: a second one waits on the lock in Redis (and logs so) until the first
    stops. A worker can run it too: `agentexec worker -A myapp.worker -B`.

    \b
    Example:
      agentexec beat -A myapp.worker
    """
    from agentexec.config import get_settings

    app = load_app(app_module)
    app.start(["beat", "--scheduler=agentexec.tasks.schedules:Scheduler",
               f"--loglevel={get_settings().log_level}", *ctx.args])  # fmt: skip


@click.group()
def schedule() -> None:
    """List, add and remove schedules, while beat runs.

    \b
    Example:
      agentexec schedule list -A myapp.worker
    """


@schedule.command("list")
@app_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per schedule.")
def list_schedules(app_module: str | None, as_json: bool) -> None:
    """The schedules in Redis, the soonest first.

    \b
    Example:
      agentexec schedule list -A myapp.worker --json
    """
    from rich.console import Console
    from rich.table import Table

    from agentexec.tasks.schedules import stored

    app = load_app(app_module)
    entries = stored(app)
    rows = [_row(e) for e in entries]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "TASK", "EVERY", "NEXT", "LAST", "RUNS", "POLICY"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["task"], row["every"], row["next"] or "-",
                      row["last"] or "-", str(row["runs"]), row["policy"])  # fmt: skip
    Console(highlight=False).print(table if rows else "no schedules")


def _row(entry: Any) -> dict[str, Any]:
    from agentexec.tasks.queued import SCHEDULE_HEADER

    policy = ((entry.options or {}).get("headers") or {}).get(SCHEDULE_HEADER) or {}
    every = getattr(entry.schedule, "run_every", None)
    shown = f"{every.total_seconds():g}s" if every is not None else str(entry.schedule)
    return {
        "name": entry.name,
        "task": entry.task,
        "every": shown,
        "next": entry.due_at.isoformat(timespec="seconds") if entry.due_at else None,
        "last": entry.last_run_at.isoformat(timespec="seconds") if entry.last_run_at else None,
        "runs": entry.total_run_count,
        "policy": f"overlap={policy.get('overlap', 'allow')} repeat={policy.get('repeat', -1)}",
    }


@schedule.command("add")
@app_option
@click.argument("name")
@click.argument("task")
@click.argument("every")
@click.option("--context", default="{}", help="The runs' context, as JSON.")
@click.option("--repeat", type=int, default=-1, help="Fire N more times after the first.")
@click.option("--overlap", type=click.Choice(["allow", "skip"]), default="allow")
def add(
    app_module: str | None, name: str, task: str, every: str, context: str, repeat: int,
    overlap: str,
) -> None:  # fmt: skip
    """Add (or replace) schedule NAME: runs of TASK every EVERY (a cron expression in
    quotes, or seconds).

    \b
    Example:
      agentexec schedule add -A myapp.worker weekly research_company "0 9 * * 1" \\
        --context '{"company": "Acme"}' --overlap skip
    """
    from agentexec.exceptions import AgentExecError
    from agentexec.tasks.schedules import make, save
    from agentexec.tasks.task import get_agent_task

    app = load_app(app_module)
    try:
        parsed = json.loads(context)
        when: str | float = float(every) if _is_number(every) else every
        spec = make(get_agent_task(task), when, parsed, repeat=repeat, overlap=overlap,
                    name=name)  # fmt: skip
    except (AgentExecError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    save(app, spec)
    click.echo(f"schedule {name}: {task} every {every}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@schedule.command("remove")
@app_option
@click.argument("name")
def remove(app_module: str | None, name: str) -> None:
    """Remove schedule NAME (one declared in code comes back when beat starts again).

    \b
    Example:
      agentexec schedule remove -A myapp.worker weekly
    """
    from agentexec.tasks.schedules import remove as remove_schedule

    if not remove_schedule(load_app(app_module), name):
        raise click.ClickException(f"no schedule is named {name!r}")
    click.echo(f"schedule {name} removed")
