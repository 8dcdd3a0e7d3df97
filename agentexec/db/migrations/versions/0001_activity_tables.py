"""The activity tables: one row per run, one log row per event of the run.

As agentexec made them before the event log: log rows in insertion order, indexed by run.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agentexec.db.migrations.naming import table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = ("QUEUED", "RUNNING", "COMPLETE", "ERROR", "CANCELED")


def _status() -> sa.Enum:
    return sa.Enum(*STATUSES, native_enum=False, length=16, name=table("status"))


def upgrade() -> None:
    activity, log = table("activity"), table("activity_log")
    op.create_table(
        activity,
        sa.Column("agent_id", sa.Uuid(), primary_key=True),
        sa.Column("agent_type", sa.String(255), nullable=False),
        sa.Column("status", _status(), nullable=False),
        sa.Column("latest_completion_percentage", sa.Integer(), nullable=True),
        sa.Column("latest_log", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(f"ix_{activity}_created_at", activity, ["created_at"])
    op.create_index(f"ix_{activity}_status", activity, ["status"])
    op.create_index(f"ix_{activity}_updated_at", activity, ["updated_at"])
    op.create_table(
        log,
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "agent_id",
            sa.Uuid(),
            sa.ForeignKey(f"{activity}.agent_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("status", _status(), nullable=False),
        sa.Column("completion_percentage", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(f"ix_{log}_agent_id", log, ["agent_id"])


def downgrade() -> None:
    op.drop_table(table("activity_log"))
    op.drop_table(table("activity"))
