"""The activity database: engines, table creation, and telling a misconfiguration from an outage.

The two kinds of failure are handled differently. A misconfiguration (a missing driver, an
unknown database, no permission, missing tables that may not be created) will not heal by
waiting, so it raises `ActivityStoreError` where the user can see it, at enqueue. An outage
(refused or dropped connections) heals, so runs go on and their activity waits in the event
log until the database is back.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    ProgrammingError,
    SQLAlchemyError,
)

from agentexec.config import get_settings, redact
from agentexec.db import compat
from agentexec.db.models import Activity, ActivityLog, Base
from agentexec.exceptions import ActivityStoreError

logger = logging.getLogger(__name__)

#: Words in a driver's error that mean the setup is wrong, not that the server is away.
_MISCONFIGURED = (
    "does not exist",
    "authentication failed",
    "permission denied",
    "no pg_hba.conf entry",
    "password",
    "unable to open database file",
    "no such table",
    "no such column",
    "has no column",
    "undefinedcolumn",
    "undefinedtable",
    "readonly database",
)


def create(url: str) -> Engine:
    """An engine for the activity tables at `url`, adopted (see `adopt`).

    Raises:
        ActivityStoreError: the URL is malformed or its driver is not installed.
    """
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False})
            # WAL lets the web app read while a worker writes.
            event.listen(engine, "connect", _sqlite_wal)
            return adopt(engine)
        # No pre-ping: it costs a round trip on every checkout, on the publish path. A
        # connection that died with its server fails once and is replaced.
        engine = create_engine(
            url,
            pool_recycle=1800,
            pool_size=10,
            max_overflow=20,
            connect_args={"connect_timeout": 5} if url.startswith("postgresql") else {},
        )
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise ActivityStoreError(_safe(url), f"{type(exc).__name__}: {exc}") from exc
    return adopt(engine)


_adopted: weakref.WeakSet[Engine] = weakref.WeakSet()
_adopting = threading.Lock()


def adopt(engine: Engine) -> Engine:
    """Make `engine` one of agentexec's (one it created, or was given with `WorkerPool`).

    On SQLite, its connections honour `ON DELETE CASCADE` (the guide deletes activities with
    raw SQL and expects their logs to go with them) and wait for a lock instead of failing at
    once; connections already in its pool get the same at their next checkout. Sessions on it
    may execute plain SQL strings (`agentexec.db.compat`). No other engine is touched.
    Idempotent.
    """
    with _adopting:
        if engine in _adopted:
            return engine
        _adopted.add(engine)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "checkout", _sqlite_pragmas)
    if get_settings().sql_string_compat:
        compat.accept_sql_strings(engine)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
    if not connection_record.info.get("agentexec_pragmas"):
        _pragmas(dbapi_connection, "foreign_keys=ON", "busy_timeout=30000")
        connection_record.info["agentexec_pragmas"] = True


def _sqlite_wal(dbapi_connection: Any, connection_record: Any) -> None:
    _pragmas(dbapi_connection, "journal_mode=WAL", "synchronous=NORMAL")


def _pragmas(dbapi_connection: Any, *pragmas: str) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in pragmas:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def prepare(engine: Engine) -> None:
    """Check that the activity tables can be used, creating them when they are missing.

    Raises:
        ActivityStoreError: the database is misconfigured.
        SQLAlchemyError: it is unreachable (see `is_outage`).
    """
    try:
        tables = {Activity.__tablename__, ActivityLog.__tablename__}
        with engine.connect() as conn:
            missing = tables - set(inspect(conn).get_table_names())
        if not missing:
            return
        if not get_settings().create_tables:
            raise ActivityStoreError(
                _safe(engine),
                f"missing tables {', '.join(sorted(missing))} and AGENTEXEC_CREATE_TABLES is "
                "off: run `agentexec db upgrade` (or `agentexec create-tables`)",
            )
        Base.metadata.create_all(engine)
    except SQLAlchemyError as exc:
        raise misconfigured(engine, exc) or exc from None


@contextlib.contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """A connection for one `projection.apply`, committed at the end.

    On PostgreSQL `apply` is a single statement, so autocommit makes it its own transaction:
    one round trip instead of three (BEGIN, the statement, COMMIT).
    """
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn
        return
    # SQLite has one writer at a time anyway. Threads of this process queue on a lock, and
    # wait exactly as long as they must, instead of sleeping in SQLite's busy handler.
    with _sqlite_writes, engine.begin() as conn:
        yield conn


_sqlite_writes = threading.Lock()


class KeptConnection:
    """One connection kept open for a writer that runs one batch at a time.

    The publish path's group commit has one leader at a time; on PostgreSQL it writes through
    this connection, in autocommit, and saves the pool checkout and the isolation level
    switch on every batch (a third of a small write's time). Elsewhere it is `transaction`.
    """

    def __init__(self) -> None:
        self._conn: Connection | None = None

    @contextlib.contextmanager
    def transaction(self, engine: Engine) -> Iterator[Connection]:
        """Like `transaction(engine)`; not for concurrent use."""
        if engine.dialect.name != "postgresql":
            with transaction(engine) as pooled:
                yield pooled
            return
        kept = self._conn
        if kept is None or kept.closed or kept.invalidated or kept.engine is not engine:
            self.close()
            kept = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._conn = kept
        try:
            yield kept
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Give the connection back."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                conn.close()


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` means the database is unreachable for now, as opposed to misconfigured."""
    if isinstance(exc, ActivityStoreError | ProgrammingError | ImportError):
        return False
    if isinstance(exc, DBAPIError):
        text = f"{type(exc.orig).__name__} {exc.orig}".lower()
        return not any(word in text for word in _MISCONFIGURED)
    return isinstance(exc, SQLAlchemyError | OSError)


def misconfigured(engine: Engine, exc: BaseException) -> ActivityStoreError | None:
    """`exc` as an ActivityStoreError when it is a misconfiguration, else None."""
    if isinstance(exc, ActivityStoreError):
        return exc
    if is_outage(exc):
        return None
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return ActivityStoreError(_safe(engine), f"{type(exc).__name__}: {detail}")


def _safe(engine_or_url: Engine | str) -> str:
    """The URL without its password."""
    if isinstance(engine_or_url, Engine):
        return engine_or_url.url.render_as_string(hide_password=True)
    return redact(engine_or_url)


class Outage:
    """Whether this process sees the activity database down, logged once per outage.

    Shared by the synchronous writes and the projector of a process, so an outage reads as
    one warning, not one per write.
    """

    def __init__(self) -> None:
        self._since = 0.0
        self._lock = threading.Lock()

    @property
    def since(self) -> float:
        """`time.monotonic()` when the outage began; 0 while the database answers."""
        return self._since

    def failed(self, exc: BaseException) -> None:
        """A write failed because the database is unreachable."""
        with self._lock:
            if self._since:
                return
            self._since = time.monotonic()
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        logger.warning(
            "activity database unreachable (%s); runs go on, their activity waits in the event log",
            first[0] if first else type(exc).__name__,
        )

    def succeeded(self) -> None:
        """A write went through."""
        if not self._since:
            return
        with self._lock:
            since, self._since = self._since, 0.0
        if since:
            logger.warning(
                "activity database reachable again after %.1fs", time.monotonic() - since
            )
