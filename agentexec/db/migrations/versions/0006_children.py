"""Composed runs: `activity_child`, the runs a pipeline started (its steps and their fan-out
children), each with its parent and its place in it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agentexec.db.migrations.naming import table

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    children = table("activity_child")
    op.create_table(
        children,
        sa.Column("agent_id", sa.Uuid(), primary_key=True),
        sa.Column("parent_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.String(32), nullable=False),
        sa.Column("step", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(f"ix_{children}_parent", children, ["parent_id", "position"])


def downgrade() -> None:
    op.drop_table(table("activity_child"))
