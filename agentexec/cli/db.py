"""`agentexec db ...`: the activity tables' schema, through the migrations agentexec ships."""

from __future__ import annotations

import click

from agentexec.cli.common import app_option, load_app


@click.group()
def db() -> None:
    """Migrate the activity tables (Alembic migrations shipped with agentexec).

    \b
    Examples:
      agentexec db upgrade -A myapp.worker
      agentexec db current
    """


@db.command()
@app_option
@click.option("--revision", default="head", show_default=True, help="The revision to reach.")
def upgrade(app_module: str | None, revision: str) -> None:
    """Bring the activity tables up to date (create them on an empty database).

    Tables made by `ax.Base.metadata.create_all` (or created on first use), by this
    version or an earlier one, are first recorded at the revision they match.

    \b
    Example:
      DATABASE_URL=postgresql+psycopg://app@db/app agentexec db upgrade
    """
    from agentexec.db.migrations import upgrade as run_upgrade
    from agentexec.exceptions import MigrationError
    from agentexec.runtime import get_runtime

    load_app(app_module)
    try:
        before, after = run_upgrade(get_runtime().engine, revision)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    if before == after:
        click.echo(f"activity tables already at {after}")
    else:
        click.echo(f"activity tables upgraded: {before or 'empty'} -> {after}")


@db.command()
@app_option
def current(app_module: str | None) -> None:
    """Print the revision the activity tables are at.

    \b
    Example:
      agentexec db current -A myapp.worker
    """
    from agentexec.db.migrations import current_revision, head_revision
    from agentexec.runtime import get_runtime

    load_app(app_module)
    revision = current_revision(get_runtime().engine)
    click.echo(f"{revision or 'none'} (head: {head_revision()})")


@db.command()
@app_option
@click.argument("revision")
def stamp(app_module: str | None, revision: str) -> None:
    """Record that the tables are at REVISION without changing them.

    \b
    Example:
      agentexec db stamp 0001
    """
    from agentexec.db.migrations import stamp as run_stamp
    from agentexec.runtime import get_runtime

    load_app(app_module)
    run_stamp(get_runtime().engine, revision)
    click.echo(f"activity tables stamped at {revision}")


@click.command("create-tables")
@app_option
def create_tables(app_module: str | None) -> None:
    """Create the activity tables that are missing, without migrations (idempotent).

    \b
    Example:
      agentexec create-tables -A myapp.worker
    """
    from agentexec.db.models import Base
    from agentexec.runtime import get_runtime

    load_app(app_module)
    engine = get_runtime().engine
    Base.metadata.create_all(engine)
    click.echo(f"activity tables ready in {engine.url.render_as_string()}")
