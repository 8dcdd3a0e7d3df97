"""`agentexec tail`: follow a run until it ends, from the event log (or the database)."""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from agentexec.cli.common import (
    activity_engine,
    app_option,
    clock,
    console,
    id_argument,
    load_app,
    percent,
    shown,
    styled,
)
from agentexec.states import TERMINAL

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from agentexec.eventlog.event import Event

#: Seconds between reads of the database while the event log cannot be read.
_DB_POLL = 0.5
#: Seconds between reads of the database while following the event log.
_DB_READ = 3.0


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
    from agentexec.eventlog.event import seq_of
    from agentexec.eventlog.reading import Follower
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
    if row.status in TERMINAL:
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
            if row.status in TERMINAL:
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
            f"{clock(at)}  {styled(status.ljust(8))}  {percent(percentage):>4}  {shown(message)}"
        )
        update: dict[str, Any] = {"description": styled(status)}
        if percentage is not None:
            update["completed"] = percentage
        if status == "COMPLETE":
            update["completed"] = 100
        self.progress.update(self.bar, **update)
