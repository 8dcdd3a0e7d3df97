"""What a fault test checks at the end: every event of every run is in SQL, in order, and done."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import redis
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from agentexec.db.models import Activity, ActivityLog, ModelUsage
from agentexec.eventlog.event import Event
from agentexec.states import ACTIVE, EventKind, Status


@dataclass
class Audit:
    """Counts over the runs a fault test sent."""

    sent: int
    complete: int = 0
    error: int = 0
    #: Events in the log that never reached SQL, plus runs without a row.
    lost: int = 0
    #: Runs still QUEUED or RUNNING.
    stuck: int = 0
    #: Runs whose body completed more than once (where the test can tell).
    dup: int = 0
    #: Runs whose log is not QUEUED first, a finished status last, in log order.
    disordered: list[uuid.UUID] = field(default_factory=list)
    #: The stuck runs' logs (status, message), to tell why when a test fails.
    stuck_logs: dict[uuid.UUID, list[tuple[str, str]]] = field(default_factory=dict)

    def line(self, fault: str, **extra: int) -> str:
        """The line fault tests print."""
        more = "".join(f" {k}={v}" for k, v in extra.items())
        return (
            f"fault={fault} sent={self.sent} complete={self.complete} error={self.error} "
            f"lost={self.lost} stuck={self.stuck} dup={self.dup}{more}"
        )


def logged_events(redis_url: str, key: str, ids: set[uuid.UUID]) -> dict[uuid.UUID, list[Event]]:
    """Every event of the runs `ids` in the event log, oldest first."""
    client = redis.Redis.from_url(redis_url)
    try:
        found: dict[uuid.UUID, list[Event]] = {i: [] for i in ids}
        for entry_id, fields in client.xrange(key, "-", "+"):  # type: ignore[union-attr]
            event = Event.from_entry(entry_id, fields)
            if event.agent_id in found:
                found[event.agent_id].append(event)
        return found
    finally:
        client.close()


def audit(engine: Engine, redis_url: str, key: str, ids: list[uuid.UUID]) -> Audit:
    """Compare the event log with the SQL tables. Raises SQLAlchemyError while SQL is down."""
    logged = logged_events(redis_url, key, set(ids))
    result = Audit(sent=len(ids))
    with Session(engine) as session:
        rows = {
            a.agent_id: a
            for a in session.scalars(select(Activity).where(Activity.agent_id.in_(ids)))
        }
        logs: dict[uuid.UUID, list[ActivityLog]] = {i: [] for i in ids}
        for log in session.scalars(
            select(ActivityLog)
            .where(ActivityLog.agent_id.in_(ids))
            .order_by(ActivityLog.seq, ActivityLog.id)
        ):
            logs[log.agent_id].append(log)
        # Usage events are projected into the usage table, not the log.
        usage = {
            (agent_id, seq)
            for agent_id, seq in session.execute(
                select(ModelUsage.agent_id, ModelUsage.seq).where(ModelUsage.agent_id.in_(ids))
            )
        }
    for agent_id in ids:
        row = rows.get(agent_id)
        if row is None:
            result.lost += 1
            continue
        in_sql = {log.seq for log in logs[agent_id]}
        result.lost += sum(
            1
            for e in logged[agent_id]
            if (
                e.seq not in in_sql
                if e.kind is not EventKind.USAGE
                else (agent_id, e.seq) not in usage
            )
        )
        result.complete += row.status is Status.COMPLETE
        result.error += row.status is Status.ERROR
        if row.status in ACTIVE:
            result.stuck += 1
            result.stuck_logs[agent_id] = [(g.status.value, g.message) for g in logs[agent_id]]
        statuses = [log.status for log in logs[agent_id]]
        if not statuses or statuses[0] is not Status.QUEUED or statuses[-1] is not row.status:
            result.disordered.append(agent_id)
    return result


def try_audit(engine: Engine, redis_url: str, key: str, ids: list[uuid.UUID]) -> Audit | None:
    """`audit`, or None while the database does not answer."""
    try:
        return audit(engine, redis_url, key, ids)
    except SQLAlchemyError:
        return None
