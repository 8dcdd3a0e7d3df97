"""The SQL projection of the event log: how events become activity rows.

`apply` is the only write. It is idempotent and order-safe, because the projector may apply
an event twice (after a redelivery) and two projectors may apply one run's events out of
order:

- each event is one log row, unique by (agent_id, seq), so a second copy is a no-op;
- a run's row shows its newest event: an event older than the one the row shows
  (`last_seq`) leaves it alone;
- a finished run stays finished: after COMPLETE, ERROR or CANCELED only QUEUED (a new
  attempt) moves the row again.

On PostgreSQL a batch of any size is one statement, so one round trip: the rows travel as two
JSON documents that `json_to_recordset` turns back into rows on the server. (As fifteen
arrays they cost twice the CPU: psycopg adapts arrays element by element in Python, while
`json.dumps` runs in C.) PostgreSQL's text cannot hold NUL characters: they are stored as
U+FFFD rather than losing the event.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, or_
from sqlalchemy.dialects import postgresql, sqlite

from agentexec.db.models import Activity, ActivityChild, ActivityLog, Approval, ModelUsage
from agentexec.eventlog.event import Event
from agentexec.states import TERMINAL, EventKind, Status

_ACTIVITY = Activity.__tablename__
_LOG = ActivityLog.__tablename__
_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL))


@dataclass(frozen=True, slots=True)
class _RunRow:
    """What one batch says about one run's row."""

    agent_id: uuid.UUID
    agent_type: str
    status: Status
    message: str
    percentage: int | None
    worker: str | None
    owner: str | None
    created_at: datetime
    updated_at: datetime
    seq: int


def apply(conn: Connection, events: Sequence[Event], *, synchronous_commit: bool = True) -> None:
    """Apply appended events (each has a `seq`) to the activity tables.

    Args:
        conn: a connection; the caller commits.
        events: in any order, duplicates allowed.
        synchronous_commit: on PostgreSQL, False skips the WAL flush for this transaction.
    """
    unique = sorted({e.seq: e for e in events if e.seq is not None}.values(), key=_seq)
    usage = [e for e in unique if e.kind is EventKind.USAGE]
    if usage:  # usage adds to a run's usage; it moves neither its row nor its log
        _insert_usage(conn, usage)
        unique = [e for e in unique if e.kind is not EventKind.USAGE]
    if not unique:
        return
    rows = _run_rows(unique)
    if conn.dialect.name == "postgresql":
        _apply_pg(conn, unique, rows, synchronous_commit)
    else:
        _upsert_runs(conn, rows)
        _insert_logs(conn, unique)
    approvals = [e for e in unique if e.data is not None and e.kind is not EventKind.QUEUED]
    if approvals:
        _apply_approvals(conn, approvals)
    links = [e for e in unique if e.kind is EventKind.QUEUED and e.data and "parent" in e.data]
    if links:
        _insert_links(conn, links)


def _insert_links(conn: Connection, events: list[Event]) -> None:
    """A composed run's child: its parent and its place (from its QUEUED event's data)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    rows = []
    for event in events:
        parent = (event.data or {})["parent"]
        try:
            parent_id = uuid.UUID(str(parent.get("id")))
        except (AttributeError, ValueError):
            continue  # not ours: a malformed header never stops the projection
        rows.append(
            {
                "agent_id": event.agent_id,
                "parent_id": parent_id,
                "position": str(parent.get("position", ""))[:32],
                "step": str(parent.get("step", ""))[:255],
                "created_at": event.at,
            }
        )
    if rows:
        conn.execute(
            insert(ActivityChild).on_conflict_do_nothing(index_elements=["agent_id"]), rows
        )


def _insert_usage(conn: Connection, events: list[Event]) -> None:
    """One usage row per usage event; a second copy of an event is a no-op."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    rows = []
    for event in events:
        data = event.data or {}
        cost = data.get("cost")
        rows.append(
            {
                "agent_id": event.agent_id,
                "seq": event.seq,
                "model": str(data.get("model") or "unknown")[:255],
                "requests": _count(data.get("requests")),
                "input_tokens": _count(data.get("input")),
                "output_tokens": _count(data.get("output")),
                "cached_tokens": _count(data.get("cached")),
                "reasoning_tokens": _count(data.get("reasoning")),
                "cost": float(cost) if isinstance(cost, int | float) else None,
                "prices": str(data["prices"])[:64] if data.get("prices") else None,
                "created_at": event.at,
            }
        )
    stmt = insert(ModelUsage).on_conflict_do_nothing(index_elements=["agent_id", "seq"])
    conn.execute(stmt, rows)


def _count(value: object) -> int:
    return max(0, int(value)) if isinstance(value, int | float) else 0


def _apply_approvals(conn: Connection, events: list[Event]) -> None:
    """The approvals a WAITING event asks for, and the decisions of DECISION events.

    Each side writes its own columns only, as an upsert: a decision applied before the
    WAITING event that asked for it (two projectors) keeps both.
    """
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    for event in events:
        data = event.data or {}
        if event.kind is EventKind.WAITING:
            asked = [
                {
                    "agent_id": event.agent_id,
                    "call_id": str(a.get("call_id", "")),
                    "tool": str(a.get("tool", "")),
                    "arguments": str(a.get("arguments", "")),
                    "agent_message": a.get("agent_message"),
                    "requested_at": event.at,
                    "requested_seq": event.seq,
                }
                for a in data.get("approvals", ())
                if isinstance(a, dict)
            ]
            if asked:
                stmt = insert(Approval)
                asked_columns = (
                    "tool",
                    "arguments",
                    "agent_message",
                    "requested_at",
                    "requested_seq",
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["agent_id", "call_id"],
                        set_={k: stmt.excluded[k] for k in asked_columns},
                    ),
                    asked,
                )
        elif event.kind is EventKind.DECISION and "call_id" in data:
            stmt = insert(Approval).values(
                agent_id=event.agent_id,
                call_id=str(data["call_id"]),
                tool=str(data.get("tool", "")),
                arguments="",
                requested_at=event.at,
                requested_seq=event.seq,
                approved=bool(data.get("approved")),
                decision_message=data.get("message"),
                decided_by=data.get("by"),
                decided_at=event.at,
            )
            keep = ("approved", "decision_message", "decided_by", "decided_at")
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["agent_id", "call_id"],
                    set_={k: stmt.excluded[k] for k in keep},
                )
            )


def _seq(event: Event) -> int:
    return event.seq or 0


def _run_rows(events: list[Event]) -> list[_RunRow]:
    """Per run, the event its row should show, folding the batch in log order."""
    by_run: dict[uuid.UUID, list[Event]] = {}
    for event in events:
        by_run.setdefault(event.agent_id, []).append(event)
    rows = []
    for agent_id, run in by_run.items():
        latest = run[0]
        percentage, worker = latest.percentage, latest.worker
        for event in run[1:]:
            if latest.terminal and event.status is not Status.QUEUED:
                continue  # finished stays finished
            latest = event
            percentage = event.percentage if event.percentage is not None else percentage
            worker = event.worker or worker
        rows.append(
            _RunRow(
                agent_id=agent_id,
                agent_type=next((e.task for e in run if e.task), "unknown"),
                status=latest.status,
                message=latest.message,
                percentage=percentage,
                worker=worker,
                owner=next((e.owner for e in run if e.owner), None),
                created_at=run[0].at,
                updated_at=latest.at,
                seq=_seq(latest),
            )
        )
    return rows


def _sqlite_upsert_runs() -> Any:
    """Built once: SQLAlchemy then computes its cache key once, not on every batch."""
    stmt = sqlite.insert(Activity)
    new, table = stmt.excluded, Activity.__table__.c
    return stmt.on_conflict_do_update(
        index_elements=[Activity.agent_id],
        set_={
            "status": new.status,
            "latest_log": new.latest_log,
            "latest_completion_percentage": func.coalesce(
                new.latest_completion_percentage, table.latest_completion_percentage
            ),
            "worker": func.coalesce(new.worker, table.worker),
            "owner": func.coalesce(table.owner, new.owner),
            "updated_at": new.updated_at,
            "last_seq": new.last_seq,
        },
        where=and_(
            or_(table.last_seq.is_(None), table.last_seq < new.last_seq),
            or_(and_(*(table.status != s for s in TERMINAL)), new.status == Status.QUEUED),
        ),
    )


_SQLITE_UPSERT_RUNS = _sqlite_upsert_runs()
_SQLITE_INSERT_LOGS = sqlite.insert(ActivityLog).on_conflict_do_nothing(
    index_elements=["agent_id", "seq"]
)


def _upsert_runs(conn: Connection, rows: list[_RunRow]) -> None:
    conn.execute(
        _SQLITE_UPSERT_RUNS,
        [
            {
                "agent_id": r.agent_id,
                "agent_type": r.agent_type,
                "status": r.status,
                "latest_log": r.message,
                "latest_completion_percentage": r.percentage,
                "worker": r.worker,
                "owner": r.owner,
                "created_at": r.created_at,
                "updated_at": r.updated_at,
                "last_seq": r.seq,
            }
            for r in rows
        ],
    )


def _insert_logs(conn: Connection, events: list[Event]) -> None:
    conn.execute(
        _SQLITE_INSERT_LOGS,
        [
            {
                "agent_id": e.agent_id,
                "seq": e.seq,
                "message": e.message,
                "status": e.status,
                "completion_percentage": e.percentage,
                "created_at": e.at,
            }
            for e in events
        ],
    )


# A run's row moves to a newer event only, and a finished run only to a new attempt.
_PG_MOVE_RUN = f"""ON CONFLICT (agent_id) DO UPDATE SET
        status = excluded.status,
        latest_log = excluded.latest_log,
        latest_completion_percentage =
            coalesce(excluded.latest_completion_percentage, a.latest_completion_percentage),
        worker = coalesce(excluded.worker, a.worker),
        owner = coalesce(a.owner, excluded.owner),
        updated_at = excluded.updated_at,
        last_seq = excluded.last_seq
    WHERE (a.last_seq IS NULL OR a.last_seq < excluded.last_seq)
      AND (a.status NOT IN ({_TERMINAL_SQL}) OR excluded.status = 'QUEUED')"""
_PG_APPLY = f"""
WITH commit_mode AS (
    SELECT set_config('synchronous_commit', %(commit)s, true)
), runs AS (
    INSERT INTO {_ACTIVITY} AS a (agent_id, agent_type, status, latest_log,
        latest_completion_percentage, worker, owner, created_at, updated_at, last_seq)
    SELECT * FROM json_to_recordset(%(runs)s::json) AS r(agent_id uuid, agent_type varchar,
        status varchar, latest_log text, latest_completion_percentage int, worker varchar,
        owner varchar, created_at timestamptz, updated_at timestamptz, last_seq bigint)
    {_PG_MOVE_RUN}
)
INSERT INTO {_LOG} (agent_id, seq, message, status, completion_percentage, created_at)
SELECT v.agent_id, v.seq, v.message, v.status, v.percentage, v.created_at
FROM json_to_recordset(%(events)s::json) AS v(agent_id uuid, seq bigint, message text,
        status varchar, percentage int, created_at timestamptz), commit_mode
ORDER BY v.seq
ON CONFLICT (agent_id, seq) DO NOTHING
"""


_PG_APPLY_ONE = f"""
WITH commit_mode AS (
    SELECT set_config('synchronous_commit', %(commit)s, true)
), runs AS (
    INSERT INTO {_ACTIVITY} AS a (agent_id, agent_type, status, latest_log,
        latest_completion_percentage, worker, owner, created_at, updated_at, last_seq)
    VALUES (%(id)s, %(type)s, %(status)s, %(message)s, %(percentage)s, %(worker)s,
        %(owner)s, %(at)s, %(at)s, %(seq)s)
    {_PG_MOVE_RUN}
)
INSERT INTO {_LOG} (agent_id, seq, message, status, completion_percentage, created_at)
SELECT %(id)s, %(seq)s, %(message)s, %(status)s, %(percentage)s::int, %(at)s::timestamptz
FROM commit_mode
ON CONFLICT (agent_id, seq) DO NOTHING
"""


def _apply_pg(
    conn: Connection, events: list[Event], rows: list[_RunRow], synchronous_commit: bool
) -> None:
    """The whole batch in one statement: the runs' rows first, then their log rows.

    Plain SQL, so no statement tree is walked for a cache key on every batch. The log rows'
    foreign keys are checked at the end of the statement, after the runs' rows exist.
    """
    if len(events) == 1:  # the publish path: plain values are cheaper than a document
        [e] = events
        conn.exec_driver_sql(
            _PG_APPLY_ONE,
            {
                "commit": "on" if synchronous_commit else "off",
                "id": e.agent_id,
                "type": e.task or "unknown",
                "status": e.status.value,
                "message": _pg_text(e.message),
                "percentage": e.percentage,
                "worker": e.worker,
                "owner": e.owner,
                "at": e.at,
                "seq": e.seq,
            },
        )
        return
    runs = [
        {
            "agent_id": str(r.agent_id),
            "agent_type": r.agent_type,
            "status": r.status.value,
            "latest_log": _pg_text(r.message),
            "latest_completion_percentage": r.percentage,
            "worker": r.worker,
            "owner": r.owner,
            "created_at": r.created_at.isoformat(),
            "updated_at": r.updated_at.isoformat(),
            "last_seq": r.seq,
        }
        for r in rows
    ]
    logs = [
        {
            "agent_id": str(e.agent_id),
            "seq": e.seq,
            "message": _pg_text(e.message),
            "status": e.status.value,
            "percentage": e.percentage,
            "created_at": e.at.isoformat(),
        }
        for e in events
    ]
    conn.exec_driver_sql(
        _PG_APPLY,
        {
            "commit": "on" if synchronous_commit else "off",
            "runs": json.dumps(runs),
            "events": json.dumps(logs),
        },
    )


def _pg_text(text: str) -> str:
    """`text` as PostgreSQL can store it: NUL characters become U+FFFD."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text
