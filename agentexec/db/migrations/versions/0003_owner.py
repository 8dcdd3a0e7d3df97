"""Runs have an owner: `activity.owner`, set when a run is queued, indexed with `created_at` for
one owner's list page.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agentexec.db.migrations.naming import table

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    activity = table("activity")
    # Not by copying the table on SQLite: dropping the old copy would cascade to the log.
    with op.batch_alter_table(activity, recreate="never") as batch:
        batch.add_column(sa.Column("owner", sa.String(255), nullable=True))
    op.create_index(f"ix_{activity}_owner", activity, ["owner", "created_at"])


def downgrade() -> None:
    activity = table("activity")
    op.drop_index(f"ix_{activity}_owner", table_name=activity)
    with op.batch_alter_table(activity, recreate="never") as batch:
        batch.drop_column("owner")
