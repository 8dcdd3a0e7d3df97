"""The SQL that writes the activity tables: the publish path and the writer's batches."""

from __future__ import annotations

import contextlib
import functools
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, text, update
from sqlalchemy.dialects import postgresql, sqlite

from agentexec.activity.database import get_engine, relaxes_commits
from agentexec.activity.models import Activity, ActivityLog, Status, utcnow
from agentexec.config import get_settings


@dataclass(slots=True)
class Entry:
    """One step of one run, on its way to the log."""

    agent_id: uuid.UUID
    status: Status
    message: str
    percentage: int | None = None
    agent_type: str | None = None
    worker: str | None = None
    created_at: Any = field(default_factory=utcnow)


@functools.cache
def _upsert(dialect: str, reset: bool) -> Any:
    """INSERT ... ON CONFLICT for `dialect`, built once; None where there is no such thing."""
    dialect_insert: Any = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if dialect_insert is None:
        return None
    stmt = dialect_insert(Activity)
    if not reset:
        return stmt.on_conflict_do_nothing(index_elements=[Activity.agent_id])
    excluded = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[Activity.agent_id],
        set_={
            "status": excluded.status,
            "latest_log": excluded.latest_log,
            "latest_completion_percentage": excluded.latest_completion_percentage,
            "updated_at": excluded.updated_at,
        },
    )


def _activity_row(e: Entry) -> dict[str, Any]:
    return {
        "agent_id": e.agent_id,
        "agent_type": e.agent_type or "unknown",
        "status": e.status,
        "latest_completion_percentage": e.percentage,
        "latest_log": e.message,
        "worker": e.worker,
        "created_at": e.created_at,
        "updated_at": e.created_at,
    }


def ensure_activities(conn: Connection, entries: Sequence[Entry], *, reset: bool) -> bool:
    """Insert an activity row for each entry that has none.

    With `reset`, an existing row takes the entry's status, message and time too (a retry
    re-queues its run). Returns False when the dialect could not do that in the same
    statement, so the caller still has to point existing rows at their entries.
    """
    rows = [_activity_row(e) for e in entries]
    stmt = _upsert(conn.dialect.name, reset)
    if stmt is not None:
        conn.execute(stmt, rows)
        return True
    existing = {
        row[0]
        for row in conn.execute(
            Activity.__table__.select()
            .with_only_columns(Activity.agent_id)
            .where(Activity.agent_id.in_([r["agent_id"] for r in rows]))
        )
    }
    fresh = [r for r in rows if r["agent_id"] not in existing]
    if fresh:
        conn.execute(insert(Activity), fresh)
    return not (reset and existing)


_update_latest = (
    update(Activity)
    .where(Activity.agent_id == bindparam("b_agent_id"))
    .values(
        status=bindparam("b_status"),
        latest_log=bindparam("b_message"),
        latest_completion_percentage=func.coalesce(
            bindparam("b_percentage", type_=Activity.latest_completion_percentage.type),
            Activity.latest_completion_percentage,
        ),
        worker=func.coalesce(bindparam("b_worker", type_=Activity.worker.type), Activity.worker),
        updated_at=bindparam("b_updated_at"),
    )
)


def append(conn: Connection, entries: Iterable[Entry]) -> None:
    """Add log rows, then point each activity at its newest one. Order within a run is kept."""
    entries = list(entries)
    if not entries:
        return
    if conn.dialect.name == "postgresql":
        _append_pg(conn, entries, [])
        return
    _insert_logs(conn, entries)
    _point_latest(conn, entries)


def _append_pg(conn: Connection, entries: list[Entry], missing: list[Entry]) -> None:
    """`append` in two statements whatever the batch size: rows travel as arrays.

    Per-row parameter handling is most of a batch's CPU time with executemany; `unnest`
    turns one array per column back into rows on the server. WITH ORDINALITY keeps the
    entries' order for the log ids. Activity rows of `missing` are only inserted when the
    update finds fewer rows than runs, which is rare: the publish path creates them.
    """
    latest = _latest(entries)
    columns = (
        [e.agent_id for e, _ in latest],
        [e.status.value for e, _ in latest],
        [e.message for e, _ in latest],
        [percentage for _, percentage in latest],
        [e.worker for e, _ in latest],
        [e.created_at for e, _ in latest],
    )
    updated = conn.exec_driver_sql(_PG_POINT_LATEST, columns).rowcount
    if missing and updated < len(latest):
        ensure_activities(conn, missing, reset=False)
        conn.exec_driver_sql(_PG_POINT_LATEST, columns)
    conn.exec_driver_sql(
        _PG_INSERT_LOGS,
        (
            [e.agent_id for e in entries],
            [e.message for e in entries],
            [e.status.value for e in entries],
            [e.percentage for e in entries],
            [e.created_at for e in entries],
        ),
    )


_ACTIVITY_TABLE = Activity.__tablename__
_LOG_TABLE = ActivityLog.__tablename__
_PG_INSERT_LOGS = f"""
INSERT INTO {_LOG_TABLE} (agent_id, message, status, completion_percentage, created_at)
SELECT agent_id, message, status, percentage, created_at
FROM unnest(%s::uuid[], %s::text[], %s::varchar[], %s::int[], %s::timestamptz[])
     WITH ORDINALITY AS v(agent_id, message, status, percentage, created_at, n)
ORDER BY n
"""
_PG_POINT_LATEST = f"""
UPDATE {_ACTIVITY_TABLE} AS a SET
    status = v.status,
    latest_log = v.message,
    latest_completion_percentage = coalesce(v.percentage, a.latest_completion_percentage),
    worker = coalesce(v.worker, a.worker),
    updated_at = v.updated_at
FROM unnest(%s::uuid[], %s::varchar[], %s::text[], %s::int[], %s::varchar[], %s::timestamptz[])
     AS v(agent_id, status, message, percentage, worker, updated_at)
WHERE a.agent_id = v.agent_id
"""


def _insert_logs(conn: Connection, entries: list[Entry]) -> None:
    conn.execute(
        insert(ActivityLog),
        [
            {
                "agent_id": e.agent_id,
                "message": e.message,
                "status": e.status,
                "completion_percentage": e.percentage,
                "created_at": e.created_at,
            }
            for e in entries
        ],
    )


def _latest(entries: list[Entry]) -> list[tuple[Entry, int | None]]:
    """Each run's newest entry, with the newest percentage any of its entries carried."""
    newest: dict[uuid.UUID, Entry] = {}
    percentage: dict[uuid.UUID, int | None] = {}
    for e in entries:
        newest[e.agent_id] = e
        if e.percentage is not None or e.agent_id not in percentage:
            percentage[e.agent_id] = e.percentage
    return [(e, percentage[e.agent_id]) for e in newest.values()]


def _point_latest(conn: Connection, entries: list[Entry]) -> None:
    conn.execute(
        _update_latest,
        [
            {
                "b_agent_id": e.agent_id,
                "b_status": e.status,
                "b_message": e.message,
                "b_percentage": percentage,
                "b_worker": e.worker,
                "b_updated_at": e.created_at,
            }
            for e, percentage in _latest(entries)
        ],
    )


_PG_QUEUED = f"""
WITH queued AS (
    INSERT INTO {_ACTIVITY_TABLE} (agent_id, agent_type, status, latest_completion_percentage,
                                   latest_log, worker, created_at, updated_at)
    VALUES (%(agent_id)s, %(agent_type)s, %(status)s, %(percentage)s,
            %(message)s, %(worker)s, %(created_at)s, %(created_at)s)
    ON CONFLICT (agent_id) DO UPDATE SET
        status = excluded.status,
        latest_log = excluded.latest_log,
        latest_completion_percentage = excluded.latest_completion_percentage,
        updated_at = excluded.updated_at
    RETURNING agent_id
), commit_mode AS (
    SELECT set_config('synchronous_commit', %(commit)s, true)
)
INSERT INTO {_LOG_TABLE} (agent_id, message, status, completion_percentage, created_at)
SELECT agent_id, %(message)s, %(status)s, %(percentage)s::int, %(created_at)s::timestamptz
FROM queued, commit_mode
"""


def record_queued_pg(conn: Connection, entry: Entry, *, synchronous: bool) -> None:
    """The publish path's single statement: commit mode, activity upsert and its log row.

    Plain SQL, so no statement tree is walked for a cache key on every enqueue.
    """
    conn.exec_driver_sql(
        _PG_QUEUED,
        {
            "agent_id": entry.agent_id,
            "agent_type": entry.agent_type or "unknown",
            "status": entry.status.value,
            "percentage": entry.percentage,
            "message": entry.message,
            "worker": entry.worker,
            "created_at": entry.created_at,
            "commit": "on" if synchronous else "off",
        },
    )


_ASYNC_COMMIT = text("SET LOCAL synchronous_commit TO OFF")

_ACTIVITY_COLUMNS = (
    "agent_id",
    "agent_type",
    "status",
    "latest_completion_percentage",
    "latest_log",
    "worker",
    "created_at",
    "updated_at",
)


@contextlib.contextmanager
def _transaction() -> Iterator[Connection]:
    """A write transaction. On SQLite, one at a time per process.

    SQLite has one writer at a time anyway; threads that queue on a lock here wait exactly as
    long as they must, while its busy handler would make them sleep and retry.
    """
    engine = get_engine()
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with _sqlite_writes, engine.begin() as conn:
        yield conn


_sqlite_writes = threading.Lock()


def write(entries: list[Entry], missing: list[Entry] | None = None) -> None:
    """Write log entries in one transaction, first creating activity rows for `missing`."""
    with _transaction() as conn:
        if conn.dialect.name == "postgresql":
            if not get_settings().synchronous_commit and not relaxes_commits(conn.engine):
                conn.execute(_ASYNC_COMMIT)
            _append_pg(conn, entries, missing or [])
            return
        if missing:
            ensure_activities(conn, missing, reset=False)
        append(conn, entries)


def record_queued(entry: Entry) -> None:
    """Create or re-queue a run's activity and log it, in one transaction (the publish path)."""
    engine = get_engine()
    if engine.dialect.name == "postgresql":
        # One round trip: commit mode, upsert and log row in one statement, which autocommit
        # makes its own transaction (no BEGIN and COMMIT round trips).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            record_queued_pg(conn, entry, synchronous=get_settings().synchronous_commit)
        return
    with _transaction() as conn:
        if ensure_activities(conn, [entry], reset=True):
            _insert_logs(conn, [entry])
        else:
            append(conn, [entry])
