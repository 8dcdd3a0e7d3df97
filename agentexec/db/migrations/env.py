"""Alembic's entry point: runs the migrations on the connection `agentexec.db.migrations` gives."""

from __future__ import annotations

from alembic import context

from agentexec.db.migrations import version_table
from agentexec.db.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=version_table(),
    # SQLite alters tables by copying them.
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
