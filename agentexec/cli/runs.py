"""Commands about runs: `list`, `show`, `tail`, `cancel` and `result`."""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from agentexec.cli.common import (
    STATUSES,
    activity_engine,
    app_option,
    console,
    load_app,
    parse_id,
    styled,
)

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from agentexec.events import Event

#: Statuses that end a run.
TERMINAL = ("COMPLETE", "ERROR", "CANCELED")
#: Seconds between reads of the database while the event log cannot be read.
_DB_POLL = 0.5
#: Seconds between reads of the database while following the event log.
_DB_READ = 3.0

id_argument = click.argument("agent_id", metavar="ID", callback=lambda _c, _p, v: parse_id(v))
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


@click.command("list")
@app_option
@click.option(
    "-s",
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUSES, case_sensitive=False),
    help="Only runs with this status (repeat for several).",
)
@click.option("-t", "--task", "tasks", multiple=True, help="Only runs of this task (repeatable).")
@click.option(
    "-n", "--limit", default=20, show_default=True, type=click.IntRange(1, 10_000),
    help="How many runs, newest first.",
)  # fmt: skip
@json_option
def list_runs(
    app_module: str | None,
    statuses: tuple[str, ...],
    tasks: tuple[str, ...],
    limit: int,
    as_json: bool,
) -> None:
    """List runs, newest first.

    \b
    Examples:
      agentexec list
      agentexec list -s RUNNING -s QUEUED -A myapp.worker
      agentexec list --task research_company --json | jq -r '.[].agent_id'
    """
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from agentexec.activity.schemas import ActivityListItem
    from agentexec.db.models import Activity

    load_app(app_module)
    query = select(Activity).order_by(Activity.created_at.desc(), Activity.agent_id.desc())
    if statuses:
        query = query.where(Activity.status.in_([s.upper() for s in statuses]))
    if tasks:
        query = query.where(Activity.agent_type.in_(tasks))
    with Session(activity_engine()) as session:
        rows = [ActivityListItem.model_validate(r) for r in session.scalars(query.limit(limit))]
    if as_json:
        click.echo(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", no_wrap=True, min_width=36)
    table.add_column("TASK", no_wrap=True, overflow="ellipsis")
    table.add_column("STATUS", no_wrap=True, min_width=8)
    table.add_column("%", no_wrap=True, justify="right", min_width=4)
    table.add_column("UPDATED", no_wrap=True, min_width=8)
    table.add_column("LAST MESSAGE", no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(
            str(row.agent_id),
            row.agent_type,
            styled(row.status.value),
            _percent(row.latest_completion_percentage),
            _clock(row.updated_at),
            row.latest_log or "",
        )
    out = console()
    out.print(table if rows else "no runs")


@click.command()
@id_argument
@app_option
@json_option
def show(agent_id: uuid.UUID, app_module: str | None, as_json: bool) -> None:
    """Show one run and its log, oldest entry first.

    \b
    Example:
      agentexec show 3f2c9a4e-... -A myapp.worker
    """
    from sqlalchemy.orm import Session

    from agentexec.activity.queries import detail

    load_app(app_module)
    with Session(activity_engine()) as session:
        activity = detail(session, agent_id)
    if activity is None:
        raise click.ClickException(f"no run {agent_id}")
    if as_json:
        click.echo(json.dumps(activity.model_dump(mode="json"), indent=2))
        return
    from rich.table import Table

    out = console()
    out.print(f"[bold]{activity.agent_id}[/bold]  {activity.agent_type}")
    out.print(
        f"status   {styled(activity.status.value)}  "
        f"{_percent(activity.latest_completion_percentage)}"
    )
    out.print(f"created  {activity.created_at.isoformat()}")
    out.print(f"updated  {activity.updated_at.isoformat()}\n")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("TIME", "STATUS", "%", "MESSAGE"):
        table.add_column(column, justify="right" if column == "%" else "left")
    for log in activity.logs:
        table.add_row(
            _clock(log.created_at),
            styled(log.status.value),
            _percent(log.completion_percentage),
            log.message,
        )
    out.print(table)


@click.command()
@id_argument
@app_option
@click.option(
    "--timeout", type=click.FloatRange(min=0), default=None,
    help="Stop following after this many seconds (exit code 1).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per event.")
def tail(agent_id: uuid.UUID, app_module: str | None, timeout: float | None, as_json: bool) -> None:
    """Follow a run until it ends: its log so far, then every event as it happens.

    Live events come from the event log in Redis; where it is not there, the database is
    read instead. The exit code is 0 when the run completes, 1 when it fails, is canceled
    or --timeout passes.

    \b
    Examples:
      agentexec tail 3f2c9a4e-...
      agentexec tail 3f2c9a4e-... --json --timeout 600 | jq -r .message
    """
    load_app(app_module)
    deadline = None if timeout is None else time.monotonic() + timeout
    printer = _TailPrinter(as_json)
    with printer:
        status = _tail(agent_id, printer, deadline)
    if status is None:
        click.echo(f"still running after {timeout}s", err=True)
    sys.exit(0 if status == "COMPLETE" else 1)


def _tail(agent_id: uuid.UUID, printer: _TailPrinter, deadline: float | None) -> str | None:
    """Print the run's events until it ends; its final status (None at the deadline).

    Events come from the event log as they are appended, starting after what the database
    shows. The database is read again every few seconds too (every half second while the
    log cannot be read), for events that never reach the log (recorded while Redis was
    unreachable) or are trimmed from it. An event seen on both sides has one position, so
    it is printed once.
    """
    import redis
    from sqlalchemy import select
    from sqlalchemy.orm import Session, selectinload

    from agentexec.db.models import Activity
    from agentexec.events import seq_of
    from agentexec.follow import Follower
    from agentexec.runtime import get_runtime

    engine = activity_engine()
    seen: set[int] = set()

    def from_database() -> Activity:
        """Print the log rows not printed yet; the run's row."""
        with Session(engine) as session:
            query = select(Activity).options(selectinload(Activity.logs))
            row = session.scalar(query.where(Activity.agent_id == agent_id))
        if row is None:
            raise click.ClickException(f"no run {agent_id}")
        for log in row.logs:
            if log.seq not in seen:
                seen.add(log.seq)
                printer.line(
                    log.created_at, log.status.value, log.completion_percentage, log.message
                )
        return row

    row = from_database()
    if row.status.value in TERMINAL:
        return row.status.value
    # Start after what the row shows (or shortly before the run was created).
    after = row.last_seq or seq_of(f"{int(row.created_at.timestamp() * 1000) - 1000}-0")
    events = get_runtime().events
    follower = Follower(events.client(), events.key, {agent_id}, after=after)
    next_read = time.monotonic() + _DB_READ
    while deadline is None or time.monotonic() < deadline:
        batch: list[Event] = []
        try:
            live = bool(follower.exists())
            if live:
                batch = follower.read()  # waits up to half a second for an event
        except redis.RedisError:
            live = False
        if not live:
            time.sleep(_DB_POLL)
        for event in batch:
            if event.seq is None or event.seq in seen:
                continue
            seen.add(event.seq)
            printer.line(event.at, event.status.value, event.percentage, event.message)
            if event.terminal:
                return event.status.value
        if not live or time.monotonic() >= next_read:
            next_read = time.monotonic() + _DB_READ
            row = from_database()
            if row.status.value in TERMINAL:
                return row.status.value
    return None


class _TailPrinter:
    """Prints a run's events: lines above a progress bar, or JSON lines."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.progress: Progress | None = None
        self.bar: TaskID | None = None

    def __enter__(self) -> _TailPrinter:
        if not self.as_json:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                console=console(),
            )
            self.bar = self.progress.add_task("QUEUED", total=100)
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def line(self, at: datetime, status: str, percentage: int | None, message: str) -> None:
        if self.as_json:
            record = {"at": at.isoformat(), "status": status, "percentage": percentage}
            click.echo(json.dumps({**record, "message": message}), nl=True)
            return
        assert self.progress is not None and self.bar is not None
        self.progress.console.print(
            f"{_clock(at)}  {styled(status.ljust(8))}  {_percent(percentage):>4}  {message}"
        )
        update: dict[str, Any] = {"description": styled(status)}
        if percentage is not None:
            update["completed"] = percentage
        if status == "COMPLETE":
            update["completed"] = 100
        self.progress.update(self.bar, **update)


@click.command()
@id_argument
@app_option
@click.option(
    "--reason", default="Canceled from the command line", show_default=True,
    help="Why: the run's last log line and its result's reason.",
)  # fmt: skip
def cancel(agent_id: uuid.UUID, app_module: str | None, reason: str) -> None:
    """Cancel a run: a queued one never starts, a running one is stopped.

    \b
    Example:
      agentexec cancel 3f2c9a4e-... -A myapp.worker --reason "wrong company"
    """
    import asyncio

    from agentexec.control import cancel as cancel_run

    load_app(app_module)
    try:
        canceled = asyncio.run(cancel_run(agent_id, reason=reason))
    except KeyError:
        raise click.ClickException(f"no run {agent_id}") from None
    if canceled:
        click.echo(f"canceled {agent_id}")
    else:
        click.echo(f"{agent_id} had already ended")


@click.command()
@id_argument
@app_option
@click.option(
    "--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0),
    help="Seconds to wait for the run to end.",
)  # fmt: skip
def result(agent_id: uuid.UUID, app_module: str | None, timeout: float) -> None:
    """Wait for a run's return value and print it as JSON.

    Exits 1 when the run failed or was canceled, is unknown, or does not end in time.

    \b
    Example:
      agentexec result 3f2c9a4e-... --timeout 300 | jq .findings
    """
    import asyncio

    from agentexec.exceptions import AgentExecError
    from agentexec.results import close_redis, get_result

    load_app(app_module)

    async def wait() -> Any:
        try:
            return await get_result(agent_id, timeout=timeout)
        finally:
            await close_redis()

    try:
        value = asyncio.run(wait())
    except KeyError:
        raise click.ClickException(f"no run {agent_id}") from None
    except TimeoutError:
        raise click.ClickException(f"{agent_id} has not ended within {timeout}s") from None
    except AgentExecError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(value, indent=2))


def _percent(value: int | None) -> str:
    return "" if value is None else f"{value}%"


def _clock(at: datetime) -> str:
    return at.astimezone().strftime("%H:%M:%S")
