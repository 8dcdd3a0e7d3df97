"""Alembic migrations of the activity tables, shipped with agentexec.

`agentexec db upgrade` runs them on the activity database (the WorkerPool's with `-A`, else
`DATABASE_URL`); each function here takes that database's engine. Their version is kept in
`<table prefix>alembic_version`, so they never mix with a project's own Alembic history in
the same database.

Tables made without migrations (`ax.Base.metadata.create_all`, or created on first use)
have no version yet. `upgrade` records them at the shipped revision whose tables have the
same columns, indexes and unique constraints, this version's or an earlier one (0001: before
the event log), and migrates them from there; tables that match none make it stop and ask
for `agentexec db stamp REVISION` with the revision they were created at.

A change to `agentexec.db.models` needs a new revision here: `tests/db/test_migrations.py`
fails until the migrations produce the models' tables again.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, inspect

from agentexec.config import get_settings
from agentexec.db.migrations.naming import table
from agentexec.db.models import Base
from agentexec.exceptions import MigrationError

__all__ = [
    "MigrationError",
    "current_revision",
    "differences",
    "head_revision",
    "stamp",
    "upgrade",
    "version_table",
]


def version_table() -> str:
    """The table holding the activity tables' revision."""
    return f"{get_settings().table_prefix}alembic_version"


def config(connection: Connection | None = None) -> Config:
    """An Alembic config for these migrations, bound to `connection`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    cfg.attributes["connection"] = connection
    return cfg


@contextmanager
def _connection(engine: Engine) -> Iterator[Connection]:
    with engine.begin() as conn:
        yield conn


def head_revision() -> str:
    """The newest revision shipped."""
    head = ScriptDirectory.from_config(config()).get_current_head()
    assert head is not None
    return head


def _current(conn: Connection) -> str | None:
    context = MigrationContext.configure(conn, opts={"version_table": version_table()})
    return context.get_current_revision()


def current_revision(engine: Engine) -> str | None:
    """The revision the activity tables are at; None when they have none."""
    with _connection(engine) as conn:
        return _current(conn)


def differences(conn: Connection) -> list[Any]:
    """How the activity tables in the database differ from this version's models (Alembic
    autogenerate's diffs), other tables ignored."""
    ours = {table.name for table in Base.metadata.sorted_tables}

    def include_name(name: str | None, type_: str, parent: Any) -> bool:
        return type_ != "table" or name in ours

    context = MigrationContext.configure(
        conn,
        opts={
            "compare_type": True,
            "version_table": version_table(),
            "include_name": include_name,
        },
    )
    return list(compare_metadata(context, Base.metadata))


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the activity tables to `revision`; returns the revisions before and after.

    Tables without a version are first recorded at the shipped revision whose tables have
    the same columns, indexes and unique constraints (tables made by `create_all` of an
    earlier agentexec), then migrated; that revision is the one returned as before. Tables
    recorded at a revision older than their shape are recorded again at the one they match.

    Raises:
        MigrationError: the tables exist without a version and match no shipped revision.
    """
    with _connection(engine) as conn:
        before = _current(conn)
        here = _shape(conn)
        found = _revision_by_shape(here) if here else None
        if before is None and here:
            if found is None or (found == head_revision() and differences(conn)):
                raise MigrationError(
                    engine.url.render_as_string(hide_password=True),
                    "the activity tables exist without a migration version and match no "
                    "revision shipped with this agentexec: run `agentexec db stamp REVISION` "
                    "with the revision they were created at, then upgrade",
                )
            command.stamp(config(conn), found)
            before = found
        elif before is not None and found is not None and _newer(found, than=before):
            # Recorded at an older revision than their shape says: agentexec's first
            # migration once made the event log's tables as "0001". Record what they are.
            command.stamp(config(conn), found)
        command.upgrade(config(conn), revision)
        return before, _current(conn)


def _newer(revision: str, *, than: str) -> bool:
    """Whether `revision` comes after `than` in the shipped history."""
    order = list(_shapes_by_revision(get_settings().table_prefix))  # newest first
    return than in order and order.index(revision) < order.index(than)


def _shape(conn: Connection) -> dict[str, frozenset[str]]:
    """Each activity table present, under the configured prefix, as the names of its
    columns, indexes and unique constraints (the same on SQLite and PostgreSQL)."""
    inspector = inspect(conn)
    ours = (table("activity"), table("activity_log"))
    present = set(inspector.get_table_names())
    shapes = {}
    for name in ours:
        if name not in present:
            continue
        columns = {f"column {c['name']}" for c in inspector.get_columns(name)}
        indexes = {
            f"index {i['name']}"
            for i in inspector.get_indexes(name)
            if not i.get("duplicates_constraint")  # PostgreSQL's index behind a constraint
        }
        uniques = {f"unique {u['name']}" for u in inspector.get_unique_constraints(name)}
        shapes[name] = frozenset(columns | indexes | uniques)
    return shapes


@functools.lru_cache
def _shapes_by_revision(prefix: str) -> dict[str, dict[str, frozenset[str]]]:
    """Each shipped revision's activity tables under `prefix`, newest first: each migration
    run up to it on an in-memory SQLite database."""
    script = ScriptDirectory.from_config(config())
    found = {}
    for rev in script.walk_revisions():
        engine = create_engine("sqlite://")
        try:
            with engine.begin() as scratch:
                command.upgrade(config(scratch), rev.revision)
                found[rev.revision] = _shape(scratch)
        finally:
            engine.dispose()
    return found


def _revision_by_shape(here: dict[str, frozenset[str]]) -> str | None:
    """The shipped revision whose tables have exactly the columns, indexes and unique
    constraints of the tables `here` (`_shape`)."""
    by_revision = _shapes_by_revision(get_settings().table_prefix)
    return next((rev for rev, shape in by_revision.items() if shape == here), None)


def stamp(engine: Engine, revision: str) -> None:
    """Record that the activity tables are at `revision`, changing nothing else."""
    with _connection(engine) as conn:
        command.stamp(config(conn), revision)
