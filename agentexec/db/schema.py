"""Creating the activity tables safely when many processes start at once.

An API server and its workers all create missing tables at start (the integration guide's
`ax.Base.metadata.create_all(engine)`, and agentexec on first use). On PostgreSQL two
concurrent `CREATE TABLE`s of one name can fail with a unique violation on `pg_type`, even
with `IF NOT EXISTS`, so creation runs under a transaction-scoped advisory lock, taken before
the check for existing tables. SQLite serialises writers anyway; a creator that loses the race
sees "already exists" and checks again.
"""

from __future__ import annotations

import zlib
from typing import Any

from sqlalchemy import Connection, MetaData, text
from sqlalchemy.exc import OperationalError

#: The advisory lock's key, the same in every agentexec process.
LOCK_KEY = zlib.crc32(b"agentexec.create_tables")


class SerializedMetaData(MetaData):
    """MetaData whose `create_all` serialises concurrent creators."""

    def create_all(self, bind: Any, tables: Any = None, checkfirst: Any = True) -> None:
        if isinstance(bind, Connection):
            self._create(bind, tables, checkfirst)
            return
        for attempt in range(3):
            try:
                with bind.begin() as conn:
                    self._create(conn, tables, checkfirst)
                return
            except OperationalError as exc:
                # SQLite: another process created a table between our check and our CREATE.
                if attempt == 2 or "already exists" not in str(exc.orig):
                    raise

    def _create(self, conn: Connection, tables: Any, checkfirst: bool) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        super().create_all(conn, tables=tables, checkfirst=checkfirst)
