"""What the commands share: the user's app module, the activity database, and output.

Nothing heavy is imported at module level: the commands call these helpers when they run.
"""

from __future__ import annotations

import importlib
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agentexec.states import STATUS_STYLES, Status

if TYPE_CHECKING:
    from celery import Celery
    from rich.console import Console
    from sqlalchemy import Engine

#: The statuses a run can have, for option choices.
STATUSES = tuple(status.value for status in Status)

#: Columns of tables printed into a pipe or a file.
_PIPE_WIDTH = 240

app_option = click.option(
    "-A",
    "--app",
    "app_module",
    default=None,
    metavar="MODULE",
    help="The module that builds your WorkerPool, e.g. myapp.worker: its database and tasks "
    "are used (default: DATABASE_URL and agentexec's app).",
)


def load_app(module: str | None) -> Celery:
    """Import the user's app module (binding its WorkerPool's database) and return its app.

    The module is found from the current directory, as `celery -A` finds it.

    Raises:
        click.ClickException: it cannot be imported.
    """
    if module:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            imported = importlib.import_module(module)
        except ImportError as exc:
            raise click.ClickException(f"cannot import {module!r}: {exc}") from exc
        from agentexec.tasks.worker_pool import WorkerPool

        for value in vars(imported).values():
            if isinstance(value, WorkerPool):
                return value.app
    from agentexec.tasks.app import app

    return app


def activity_engine() -> Engine:
    """The activity database's engine (the WorkerPool's, once `load_app` imported it), for
    reading: a SQLite file that is not there is an error rather than a new empty database,
    and no table is created.

    Raises:
        click.ClickException: the URL is bad, or the SQLite file does not exist.
    """
    from agentexec.exceptions import ActivityStoreError
    from agentexec.runtime import get_runtime

    try:
        engine = get_runtime().engine
    except ActivityStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    require_sqlite_file(engine)
    return engine


def require_sqlite_file(engine: Engine) -> None:
    """Raise `click.ClickException` when `engine` is on a SQLite file that does not exist
    (connecting would create it)."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not Path(str(url.database)).exists():
            raise click.ClickException(
                f"no activity database at {url.render_as_string()} (give -A MODULE or DATABASE_URL)"
            )


def console(stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr); wide when it is not a terminal, so piped
    output is not cut at 80 columns."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:
        out = Console(stderr=stderr, highlight=False, width=_PIPE_WIDTH)
    return out


def parse_id(value: str) -> Any:
    """An agent id from the command line.

    Raises:
        click.BadParameter: it is not a UUID.
    """
    import uuid

    try:
        return uuid.UUID(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an agent id (a UUID)") from None


owner_option = click.option(
    "--owner", default=None, metavar="OWNER", help="Only runs of this owner (the `owner` given "
    "to ax.enqueue); another owner's run is not found.",
)  # fmt: skip
id_argument = click.argument("agent_id", metavar="ID", callback=lambda _c, _p, v: parse_id(v))
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


def percent(value: int | None) -> str:
    """A percentage as the tables show it; empty when unknown."""
    return "" if value is None else f"{value}%"


def clock(at: datetime) -> str:
    """A time as the tables show it: local, to the second."""
    return at.astimezone().strftime("%H:%M:%S")


def shown(value: object) -> str:
    """User text (a message, a task name, an owner) as rich markup that prints it literally:
    control characters removed, `[...]` escaped."""
    from rich.markup import escape

    from agentexec.eventlog.event import printable

    return escape(printable("" if value is None else str(value)))


def styled(status: str) -> str:
    """`status` in its colour, as rich markup."""
    known = STATUS_STYLES.get(Status(status.strip())) if status.strip() in STATUSES else None
    style = known.terminal if known is not None else "white"
    return f"[{style}]{status}[/{style}]"
