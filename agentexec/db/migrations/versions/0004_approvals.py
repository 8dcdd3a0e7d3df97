"""Runs can wait for approvals: `activity_approval`, one row per tool call a run asked a person
about, with the decision once made.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agentexec.db.migrations.naming import table

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    approval, activity = table("activity_approval"), table("activity")
    op.create_table(
        approval,
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
        sa.Column("call_id", sa.String(255), nullable=False),
        sa.Column("tool", sa.String(255), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("agent_message", sa.Text(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_seq", sa.BigInteger(), nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=True),
        sa.Column("decision_message", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(255), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("agent_id", "call_id", name=f"uq_{approval}_call"),
    )


def downgrade() -> None:
    op.drop_table(table("activity_approval"))
