"""`agentexec check`: a health probe for a deployment, with no side effects.

Failures (`FAIL`) exit 1; warnings (`warn`) name a risk that does not stop the deployment
working now (a projector falling behind, Redis settings that lose data), and exit 0.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from agentexec.cli.common import app_option, load_app

if TYPE_CHECKING:
    import redis
    from celery import Celery

#: Events the SQL projection may be behind the log before `check` warns.
MAX_BEHIND = 10_000
#: Seconds the oldest event not yet in SQL may wait before `check` warns.
MAX_BEHIND_SECONDS = 60


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

    It warns, without failing, when the SQL projection is more than 10,000 events or a
    minute behind the event log (or no projector ever read it), and when Redis may lose
    data: a maxmemory-policy other than noeviction, or no persistence (neither appendonly
    nor save), or settings it cannot read (CONFIG refused).

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


def _warn(name: str, detail: str) -> None:
    """A line like `_report`'s for a risk that does not fail the probe."""
    click.echo(f"{name:<9} {click.style('warn', fg='yellow')} {detail}")


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
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            return _report("redis", False, f"{redact(url)}: {exc}")
        _report("redis", True, redact(url))
        _durability(client)
        _events(client)
    finally:
        client.close()
    return True


def _durability(client: redis.Redis) -> None:
    """Warn about Redis settings that lose runs: eviction, and no persistence."""
    import redis

    try:
        config = {
            name: client.config_get(name).get(name)
            for name in ("maxmemory-policy", "appendonly", "save")
        }
    except (redis.RedisError, OSError) as exc:
        _warn(
            "redis",
            f"cannot read its settings ({exc}): make sure maxmemory-policy is noeviction "
            "and persistence is on (appendonly or save)",
        )
        return
    policy = config["maxmemory-policy"]
    if policy is not None and policy != "noeviction":
        _warn(
            "redis",
            f"maxmemory-policy is {policy}: evicted keys lose queued runs, results and events "
            "(set it to noeviction)",
        )
    if config["appendonly"] == "no" and config["save"] == "":
        _warn(
            "redis",
            "persistence is off (appendonly no, no save): a restart loses queued runs and "
            "results (set appendonly yes)",
        )


def _events(client: redis.Redis) -> None:
    """How far the SQL projection is behind the event log; a warning when it is far behind
    or no projector ever read the log (the log is never trimmed below what is unapplied)."""
    import redis

    from agentexec.config import get_settings
    from agentexec.eventlog.event import entry_id_of
    from agentexec.eventlog.position import PROJECTED, applied_through
    from agentexec.keys import PROJECTOR_GROUP

    key = get_settings().keys.events
    remedy = (
        "start workers with the projector (AGENTEXEC_PROJECTOR=true) or run `agentexec project`; "
        "the log is never trimmed below what is unapplied, so it grows"
    )
    try:
        applied = applied_through(client.eval(PROJECTED, 1, key, PROJECTOR_GROUP))
        if applied is None:
            length = client.xlen(key)
            if length:
                _warn(
                    "events",
                    f"{length:,} events in {key} and no projector ever read them "
                    f"(AGENTEXEC_PROJECTOR=false and no `agentexec project`?): {remedy}",
                )
            else:
                _report("events", True, "0 behind")
            return
        first = entry_id_of(applied + 1)
        behind, capped = _behind(client, key, first)
        oldest: Any = client.xrange(key, min=first, count=1) if behind else []
        seconds, micros = client.time()
    except (redis.RedisError, OSError) as exc:
        _warn("events", f"cannot read the event log {key}: {exc}")
        return
    count = f"more than {MAX_BEHIND:,}" if capped else f"{behind:,}"
    age = 0.0
    if oldest:
        appended_ms = int(oldest[0][0].decode().partition("-")[0])
        age = max(0.0, (seconds * 1000 + micros // 1000 - appended_ms) / 1000)
    if behind > MAX_BEHIND or age > MAX_BEHIND_SECONDS:
        detail = f"SQL is {count} events behind, the oldest appended {age:,.0f}s ago: {remedy}"
        _warn("events", detail)
        return
    _report("events", True, f"{count} behind")


def _behind(client: redis.Redis, key: str, first: str) -> tuple[int, bool]:
    """Events not yet applied, and whether that is only a lower bound: the group's `lag`
    (undelivered) plus its pending ones, or, where Redis cannot say (before 7.0, or after
    deletions), the entries from `first` on, counted up to just past `MAX_BEHIND`."""
    from agentexec.keys import PROJECTOR_GROUP

    groups: Any = client.xinfo_groups(key)
    for group in groups:
        name = group["name"]
        if (name.decode() if isinstance(name, bytes) else name) != PROJECTOR_GROUP:
            continue
        if group.get("lag") is not None:
            return int(group["lag"]) + int(group["pending"]), False
    entries: Any = client.xrange(key, min=first, count=MAX_BEHIND + 1)
    return len(entries), len(entries) > MAX_BEHIND


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
    if missing and not tables & set(wanted):
        detail = f"{where}: missing tables {', '.join(missing)} (run `agentexec db upgrade`)"
        return _report("database", False, detail)
    old = sorted(
        [f"{table}.{name}" for table in wanted if table in tables
         for name in wanted[table] - columns[table]] + missing
    )  # fmt: skip
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
