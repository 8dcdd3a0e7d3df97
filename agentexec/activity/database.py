"""Which database the activity tables live in.

A `WorkerPool(engine=...)` binds the user's engine; otherwise the first write creates one
from `DATABASE_URL`. Nothing connects until the first write or read.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from sqlalchemy import Engine, create_engine, event

from agentexec.config import get_settings

_lock = threading.Lock()
_engine: Engine | None = None


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    """Make SQLite honour `ON DELETE CASCADE` and wait for a lock instead of failing at once.

    Registered on every engine, the user's included, because the guide deletes activities
    with raw SQL through its own engine and expects their logs to go with them.
    """
    module = type(dbapi_connection).__module__
    if module.startswith(("sqlite3", "pysqlite2")):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


def bind(engine: Engine | None = None, database_url: str | None = None) -> Engine:
    """Make `engine` (or a new engine for `database_url`) the activity store of this process."""
    global _engine
    with _lock:
        if engine is None:
            engine = _create(database_url or get_settings().database_url)
        _engine = engine
        return engine


def get_engine() -> Engine:
    """The bound engine, creating one from `DATABASE_URL` on first use."""
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                _engine = _create(get_settings().database_url)
    return _engine


def reset_after_fork() -> None:
    """Drop pooled connections inherited from the parent process; never close them."""
    if _engine is not None:
        _engine.dispose(close=False)


def _create(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _wal(dbapi_connection: Any, connection_record: Any) -> None:
            # WAL lets the web app read while a worker writes.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    # No pre-ping: it costs a round trip on every checkout, on the publish path. Stale
    # connections are recycled instead, and a failed write is retried by the writer.
    engine = create_engine(url, pool_recycle=1800, pool_size=10, max_overflow=20)
    if engine.dialect.name == "postgresql" and not get_settings().synchronous_commit:
        # An engine of our own: relax commits once per connection, not per transaction.
        @event.listens_for(engine, "connect")
        def _relax(dbapi_connection: Any, connection_record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET synchronous_commit TO OFF")
            dbapi_connection.commit()

        _relaxed.add(engine)
    return engine


#: Engines whose connections already skip the WAL flush (see `Settings.synchronous_commit`).
_relaxed: weakref.WeakSet[Engine] = weakref.WeakSet()


def relaxes_commits(engine: Engine) -> bool:
    """Whether every connection of `engine` already skips the WAL flush."""
    return engine in _relaxed
