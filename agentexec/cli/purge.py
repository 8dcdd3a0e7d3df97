"""`agentexec purge`: remove old finished runs, so the activity tables and Redis stay small."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from agentexec.cli.common import app_option

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy import Connection, Engine

#: Runs removed per transaction and per Redis pipeline: memory stays bounded at any size.
BATCH = 1_000

_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([dhms]?)")


def parse_duration(value: str) -> timedelta:
    """`30d`, `12h`, `90m`, `3600s`, or a plain number of days, as a timedelta.

    Raises:
        click.BadParameter: it is none of these, or not positive.
    """
    match = _DURATION.fullmatch(value.strip().lower())
    amount = float(match.group(1)) if match else 0.0
    if match is None or amount <= 0:
        raise click.BadParameter(
            f"{value!r} is not a duration: give a positive number with a unit, such as 30d, "
            "12h, 90m or 3600s (a plain number is days)"
        )
    try:
        delta = timedelta(**{_UNITS[match.group(2) or "d"]: amount})
        datetime.now() - delta  # a cutoff before year 1 cannot be compared with
    except OverflowError:
        raise click.BadParameter(f"{value!r} is longer than any run has existed") from None
    return delta


@click.command()
@app_option
@click.option(
    "--older-than", "older_than", required=True, metavar="DURATION",
    callback=lambda _c, _p, value: parse_duration(value),
    help="Remove runs that ended longer ago than this: 30d, 12h, 90m, 3600s (or days).",
)  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
def purge(app_module: str | None, older_than: timedelta, dry_run: bool) -> None:
    """Remove finished runs last updated longer ago than DURATION.

    A run that is COMPLETE, ERROR or CANCELED goes with its log, its Celery result and the
    reason it was canceled with; a QUEUED or RUNNING run is never touched, however old. It
    works in batches of 1,000 runs, so any number of rows can go.

    \b
    Examples:
      agentexec purge --older-than 30d -A myapp.worker
      agentexec purge --older-than 12h --dry-run     # how many would go
    """
    import redis
    from sqlalchemy.exc import SQLAlchemyError

    from agentexec.cli.common import activity_engine, load_app
    from agentexec.states import utcnow

    app = load_app(app_module)
    engine = activity_engine()
    runs = results = 0
    try:
        for batch_runs, batch_results in _batches(engine, app, utcnow() - older_than, dry_run):
            runs += batch_runs
            results += batch_results
    except (redis.RedisError, SQLAlchemyError) as exc:
        done = "" if dry_run else f" after removing {runs:,} runs and {results:,} result keys"
        raise click.ClickException(f"stopped{done}: {type(exc).__name__}: {exc}") from exc
    if dry_run:
        click.echo(f"would remove {runs:,} finished runs and {results:,} result keys (dry run)")
    else:
        click.echo(f"removed {runs:,} finished runs and {results:,} result keys")


def _batches(
    engine: Engine, app: Celery, cutoff: datetime, dry_run: bool
) -> Iterator[tuple[int, int]]:
    """Remove (or count) the finished runs last updated before `cutoff`, a batch at a time,
    each in its own transaction; yields each batch's runs and result keys."""
    from sqlalchemy import select

    from agentexec.db.models import Activity
    from agentexec.states import TERMINAL

    backend: Any = app.backend
    client = backend.client
    finished = (Activity.status.in_(TERMINAL), Activity.updated_at < cutoff)
    after: uuid.UUID | None = None
    while True:
        query = select(Activity.agent_id).where(*finished)
        if after is not None:
            query = query.where(Activity.agent_id > after)
        # Keyset pages by id: a run left in place (it changed since) is never read twice.
        query = query.order_by(Activity.agent_id).limit(BATCH)
        with engine.begin() as conn:
            ids = list(conn.scalars(query if dry_run else query.with_for_update()))
            if not ids:
                return
            after = ids[-1]
            result_keys = [backend.get_key_for_task(str(agent_id)) for agent_id in ids]
            if dry_run:
                runs, results = len(ids), int(client.exists(*result_keys))
            else:
                runs, results = _remove(conn, client, ids, result_keys, finished)
        yield runs, results


def _remove(
    conn: Connection, client: Any, ids: list[uuid.UUID], result_keys: list[bytes], finished: Any
) -> tuple[int, int]:
    """Remove one batch of runs that are still `finished`, within the caller's transaction:
    their log rows and approvals, their rows, then their result keys, cancel reasons and
    checkpoints."""
    from sqlalchemy import delete, select

    from agentexec.config import get_settings
    from agentexec.db.models import Activity, ActivityChild, ActivityLog, Approval
    from agentexec.keys import cancel_reason

    # Still finished and old within this transaction; the logs go explicitly, as the
    # foreign key cascades only where the engine enforces it.
    still = select(Activity.agent_id).where(Activity.agent_id.in_(ids), *finished)
    conn.execute(delete(ActivityLog).where(ActivityLog.agent_id.in_(still)))
    conn.execute(delete(Approval).where(Approval.agent_id.in_(still)))
    conn.execute(delete(ActivityChild).where(ActivityChild.agent_id.in_(still)))
    removed = conn.execute(delete(Activity).where(Activity.agent_id.in_(ids), *finished))
    # The Redis keys before the commit: should Redis fail, the batch's rows stay, and a
    # second purge finds them again.
    with client.pipeline(transaction=False) as pipe:
        pipe.delete(*result_keys)
        pipe.delete(*(cancel_reason(str(agent_id)) for agent_id in ids))
        keys = get_settings().keys
        pipe.delete(*(keys.checkpoint(str(agent_id)) for agent_id in ids))
        deleted = pipe.execute()
    return removed.rowcount, int(deleted[0])
