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

    It fails when Redis does not answer, the database cannot be reached, lacks the activity
    tables or has them out of date (`agentexec db upgrade`), or no worker consumes the
    queues. It changes nothing: no table and no SQLite file is created.

    \b
    Examples:
      agentexec check -A myapp.worker
      agentexec check --allow-no-workers      # the web app's container probe
    """
    app = load_app(app_module) if app_module else None
    ok = _redis() and _database(app_module)
    if ok:
        ok = _workers(app, timeout, allow_no_workers)
    sys.exit(0 if ok else 1)


def _report(name: str, ok: bool, detail: str, allowed: bool = False) -> bool:
    """One line per check; a failure that `allowed` lets pass is marked `none`."""
    if ok:
        mark = click.style("ok  ", fg="green")
    elif allowed:
        mark = click.style("none", fg="yellow")
    else:
        mark = click.style("FAIL", fg="red", bold=True)
    click.echo(f"{name:<9} {mark} {detail}")
    return ok or allowed


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


def _database(app_module: str | None) -> bool:
    from sqlalchemy import Engine, create_engine, inspect
    from sqlalchemy.exc import SQLAlchemyError

    from agentexec.cli.common import activity_engine, require_sqlite_file
    from agentexec.config import get_settings

    settings = get_settings()
    wanted = _wanted_columns()
    engine: Engine | None = None
    try:
        if app_module:
            engine = activity_engine()  # the one the WorkerPool bound
        else:
            # A bare engine: agentexec's runtime would start threads and create tables.
            engine = create_engine(settings.database_url)
            require_sqlite_file(engine)
        where = engine.url.render_as_string()
        with engine.connect() as conn:
            inspector = inspect(conn)
            tables = set(inspector.get_table_names())
            columns = {
                table: {column["name"] for column in inspector.get_columns(table)}
                for table in wanted
                if table in tables
            }
    except click.ClickException as exc:
        return _report("database", False, exc.message)
    except (SQLAlchemyError, ImportError) as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip()
        return _report("database", False, f"{type(exc).__name__}: {detail}")
    finally:
        if engine is not None:
            engine.dispose()
    missing = sorted(set(wanted) - tables)
    if missing:
        detail = f"{where}: missing tables {', '.join(missing)} (run `agentexec db upgrade`)"
        return _report("database", False, detail)
    old = sorted(f"{table}.{name}" for table in wanted for name in wanted[table] - columns[table])
    if old:
        detail = (
            f"{where}: tables out of date, missing {', '.join(old)} (run `agentexec db upgrade`)"
        )
        return _report("database", False, detail)
    return _report("database", True, where)


def _wanted_columns() -> dict[str, set[str]]:
    """The column names of each activity table, as this version's models have them."""
    from agentexec.db.models import Base

    return {
        table.name: {column.name for column in table.columns}
        for table in Base.metadata.sorted_tables
    }


def _workers(app: Celery | None, timeout: float, allowed: bool) -> bool:
    """Whether a worker consuming the queues answers (or none has to); returns at the first
    that does."""
    import os

    from celery import Celery

    from agentexec.config import get_settings
    from agentexec.tasks.config import transport_options

    settings = get_settings()
    if app is None:
        # A bare app on the broker (and the Celery config module, as the worker reads it):
        # agentexec's own app would load the whole recording path.
        app = Celery("agentexec", broker=settings.redis_url)
        app.conf.broker_transport_options = transport_options(settings)
        app.config_from_object(os.environ.get("CELERY_CONFIG_MODULE", "celeryconfig"), silent=True)
    queues = {settings.high_queue, settings.low_queue}
    named = ", ".join(sorted(queues))
    found: list[str] = []

    def on_reply(reply: dict[str, Any]) -> None:
        for name, consumed in reply.items():
            if queues & {queue.get("name") for queue in consumed or ()}:
                found.append(name)
                raise _Answered

    try:
        others = app.control.broadcast(
            "active_queues", reply=True, timeout=timeout, callback=on_reply
        )
    except _Answered:
        return _report("workers", True, f"{found[0]} consumes {named}")
    except Exception as exc:  # the broker went away between the checks
        return _report("workers", False, f"{type(exc).__name__}: {exc}")
    detail = f"no worker consumes {named} ({len(others or ())} others answered in {timeout}s)"
    return _report("workers", False, detail, allowed)
