"""The event log: each log row carries its event's position, and each run the newest it applied.

`activity_log.seq` is the position of the row's event in the Redis Stream, one sortable
bigint; a row is unique per run and position, which makes applying the log idempotent.
`activity.last_seq` is the position of the newest event a run's row reflects, so an older
event that arrives late leaves the row alone. Rows written before the event log keep their
order: their `seq` is their id, below any position the log gives.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agentexec.db.migrations.naming import table

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    activity, log = table("activity"), table("activity_log")
    with op.batch_alter_table(activity, recreate="never") as batch:
        batch.add_column(sa.Column("last_seq", sa.BigInteger(), nullable=True))
    with op.batch_alter_table(log) as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
    rows = sa.table(log, sa.column("id"), sa.column("seq"))
    op.execute(rows.update().values(seq=rows.c.id))
    with op.batch_alter_table(log) as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch.drop_index(f"ix_{log}_agent_id")
        batch.create_unique_constraint(f"uq_{log}_seq", ["agent_id", "seq"])


def downgrade() -> None:
    activity, log = table("activity"), table("activity_log")
    with op.batch_alter_table(log) as batch:
        batch.drop_constraint(f"uq_{log}_seq", type_="unique")
        batch.create_index(f"ix_{log}_agent_id", ["agent_id"])
        batch.drop_column("seq")
    # Not by copying the table on SQLite: dropping the old copy would cascade to the log.
    with op.batch_alter_table(activity, recreate="never") as batch:
        batch.drop_column("last_seq")
