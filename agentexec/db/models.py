"""The activity tables: one row per agent run, one log row per step it reports."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from agentexec.config import get_settings
from agentexec.db.schema import SerializedMetaData
from agentexec.states import Status, utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend, SQLite included.

    SQLite has no time zones: values are stored as naive UTC and come back aware, so
    `created_at.isoformat()` reads the same on SQLite and PostgreSQL.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base holding agentexec's tables: `ax.Base.metadata.create_all(engine)`.

    Its `metadata.create_all` is safe to run from many processes at once (see
    `agentexec.client.activity.schema`).
    """

    metadata = SerializedMetaData()


_PREFIX = get_settings().table_prefix
_STATUS = SqlEnum(Status, native_enum=False, length=16, name=f"{_PREFIX}status")
# SQLite only autoincrements INTEGER PRIMARY KEY.
_LOG_ID = BigInteger().with_variant(Integer(), "sqlite")


class Activity(Base):
    """One agent run. Status, percentage and last message mirror its newest log row."""

    __tablename__ = f"{_PREFIX}activity"
    __table_args__ = (
        Index(f"ix_{_PREFIX}activity_created_at", "created_at"),
        Index(f"ix_{_PREFIX}activity_status", "status"),
        Index(f"ix_{_PREFIX}activity_owner", "owner", "created_at"),
    )

    agent_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    agent_type: Mapped[str] = mapped_column(String(255))
    status: Mapped[Status] = mapped_column(_STATUS)
    latest_completion_percentage: Mapped[int | None] = mapped_column(Integer)
    latest_log: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(255))
    #: Whom the run belongs to; set once, when it is queued. None: no owner given.
    owner: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    #: Position in the event log of the event the row shows; older events never override it.
    last_seq: Mapped[int | None] = mapped_column(BigInteger)

    logs: Mapped[list[ActivityLog]] = relationship(
        back_populates="activity",
        order_by=lambda: [ActivityLog.seq, ActivityLog.id],
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    approvals: Mapped[list[Approval]] = relationship(
        back_populates="activity",
        order_by=lambda: [Approval.requested_seq, Approval.id],
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class ActivityLog(Base):
    """One step of a run: a lifecycle change or a status report from the agent."""

    __tablename__ = f"{_PREFIX}activity_log"
    # One row per event: the projector may apply an event twice, the second is a no-op.
    __table_args__ = (UniqueConstraint("agent_id", "seq", name=f"uq_{_PREFIX}activity_log_seq"),)

    id: Mapped[int] = mapped_column(_LOG_ID, primary_key=True, autoincrement=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey(f"{_PREFIX}activity.agent_id", ondelete="CASCADE")
    )
    #: Position of the event in the event log: the order of a run's log.
    seq: Mapped[int] = mapped_column(BigInteger)
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[Status] = mapped_column(_STATUS)
    completion_percentage: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    activity: Mapped[Activity] = relationship(back_populates="logs")


class Approval(Base):
    """One tool call a run waited on: asked for when it stopped, decided by a person."""

    __tablename__ = f"{_PREFIX}activity_approval"
    __table_args__ = (
        UniqueConstraint("agent_id", "call_id", name=f"uq_{_PREFIX}activity_approval_call"),
    )

    id: Mapped[int] = mapped_column(_LOG_ID, primary_key=True, autoincrement=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey(f"{_PREFIX}activity.agent_id", ondelete="CASCADE")
    )
    #: The model's id of the tool call.
    call_id: Mapped[str] = mapped_column(String(255))
    tool: Mapped[str] = mapped_column(String(255))
    #: The call's arguments, as the model gave them (JSON text).
    arguments: Mapped[str] = mapped_column(Text)
    #: What the agent said last before it stopped, if anything.
    agent_message: Mapped[str | None] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Position in the event log of the WAITING event that asked.
    requested_seq: Mapped[int] = mapped_column(BigInteger)
    #: None while pending; True approved, False rejected.
    approved: Mapped[bool | None] = mapped_column(Boolean)
    #: The decider's message (for a rejection, what the model is told).
    decision_message: Mapped[str | None] = mapped_column(Text)
    #: Who decided: the owner the deciding request was scoped to, when known.
    decided_by: Mapped[str | None] = mapped_column(String(255))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    activity: Mapped[Activity] = relationship(back_populates="approvals")


class ModelUsage(Base):
    """The usage of one model call of a run: tokens, and the cost when the model's price is
    known. One row per usage event (unique by its log position), so a projection applied
    twice counts once; a run's usage is the sum of its rows."""

    __tablename__ = f"{_PREFIX}activity_usage"
    __table_args__ = (
        UniqueConstraint("agent_id", "seq", name=f"uq_{_PREFIX}activity_usage_seq"),
        Index(f"ix_{_PREFIX}activity_usage_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(_LOG_ID, primary_key=True, autoincrement=True)
    #: The run; no foreign key: usage may be projected before the run's row.
    agent_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    seq: Mapped[int] = mapped_column(BigInteger)
    model: Mapped[str] = mapped_column(String(255))
    requests: Mapped[int] = mapped_column(Integer)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)
    #: In the price table's currency (USD by convention); None: the model has no price.
    cost: Mapped[float | None] = mapped_column(Float)
    #: The price table's version the cost was computed with.
    prices: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ActivityChild(Base):
    """A run started by a composed run (a pipeline's step, or a child of a step's fan-out):
    which run is its parent, and where in it the child stands. One row per child, written
    from the child's QUEUED event."""

    __tablename__ = f"{_PREFIX}activity_child"
    __table_args__ = (Index(f"ix_{_PREFIX}activity_child_parent", "parent_id", "position"),)

    #: The child run; no foreign key: the link may be projected before either row.
    agent_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    parent_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    #: Its place in the parent: "2" for step 2, "2.3" for the fourth child of step 2's fan-out.
    position: Mapped[str] = mapped_column(String(32))
    #: The step's name.
    step: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
