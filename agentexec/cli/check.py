"""`agentexec check`: a health probe for a deployment, with no side effects."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from agentexec.cli.common import app_option, load_app

if TYPE_CHECKING:
    from celery import Celery


class _Answered(Exception):
    """A worker that consumes our queues answered: stop waiting for others."""


@click.command()
@app_option
@click.option(
    "--timeout", default=2.0, show_default=True, type=click.FloatRange(min=0.1),
    help="Seconds to wait for each service.",
)  # fmt: skip
@click.option(
    "--allow-no-workers", is_flag=True,
    help="Pass without a live worker (a probe for a producer, such as the web app).",
)  # fmt: skip
def check(app_module: str | None, timeout: float, allow_no_workers: bool) -> None:
    """Check Redis, the activity tables and the workers; exit code 1 on any failure.

    It fails when Redis does not answer, the database cannot be reached or lacks the
    activity tables, or no worker consumes the queues. It changes nothing: no table and no
    SQLite file is created.

    \b
    Examples:
      agentexec check -A myapp.worker
      agentexec check --allow-no-workers      # the web app's container probe
    """
    app = load_app(app_module)
    ok = _redis() and _database()
    if ok:
        ok = _workers(app, timeout) or allow_no_workers
    sys.exit(0 if ok else 1)


def _report(name: str, ok: bool, detail: str) -> bool:
    mark = click.style("ok  ", fg="green") if ok else click.style("FAIL", fg="red", bold=True)
    click.echo(f"{name:<9} {mark} {detail}")
    return ok


def _redis() -> bool:
    import redis

    from agentexec.config import get_settings, redact

    url = get_settings().redis_url
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return _report("redis", False, f"{redact(url)}: {exc}")
    finally:
        client.close()
    return _report("redis", True, redact(url))


def _database() -> bool:
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from agentexec.cli.common import activity_engine
    from agentexec.db.models import Activity, ActivityLog

    try:
        engine = activity_engine()
    except click.ClickException as exc:
        return _report("database", False, exc.message)
    where = engine.url.render_as_string()
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
    except SQLAlchemyError as exc:
        return _report("database", False, f"{where}: {type(exc).__name__}: {exc.orig or exc}")
    finally:
        engine.dispose()
    missing = sorted({Activity.__tablename__, ActivityLog.__tablename__} - tables)
    if missing:
        detail = f"{where}: missing tables {', '.join(missing)} (run `agentexec db upgrade`)"
        return _report("database", False, detail)
    return _report("database", True, where)


def _workers(app: Celery, timeout: float) -> bool:
    """Whether a worker consuming the queues answers; returns at the first that does."""
    from agentexec.config import get_settings

    settings = get_settings()
    queues = {settings.high_queue, settings.low_queue}
    found: list[str] = []

    def on_reply(reply: dict[str, Any]) -> None:
        for name, consumed in reply.items():
            if queues & {queue.get("name") for queue in consumed or ()}:
                found.append(name)
                raise _Answered

    others: list[Any] = []
    try:
        others = app.control.broadcast(
            "active_queues", reply=True, timeout=timeout, callback=on_reply
        ) or []
    except _Answered:
        return _report("workers", True, f"{found[0]} consumes {', '.join(sorted(queues))}")
    except Exception as exc:  # the broker went away between the checks
        return _report("workers", False, f"{type(exc).__name__}: {exc}")
    detail = f"none consumes {', '.join(sorted(queues))} (answered within {timeout}s: {len(others)})"
    return _report("workers", False, detail)
