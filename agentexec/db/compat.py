"""SQLAlchemy 1.x habits the integration guide relies on, on agentexec's engines only.

The guide's cleanup job runs `session.execute("DELETE FROM agentexec_activity ...", params)`,
a plain string, which SQLAlchemy 2 refuses. agentexec promises that every snippet of the guide
runs unchanged, so a session bound to an engine agentexec created or was given
(`WorkerPool(engine=...)`) may pass `Session.execute` a plain SQL string, which is wrapped in
`text()`. Sessions on any other engine behave exactly as SQLAlchemy made them: a string still
raises. `AGENTEXEC_SQL_STRING_COMPAT=false` turns it off.
"""

from __future__ import annotations

import functools
import threading
import weakref
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
_lock = threading.Lock()
_MARK = "_agentexec_accepts_str"


def accept_sql_strings(engine: Engine) -> None:
    """Let sessions bound to `engine` execute plain SQL strings. Idempotent."""
    with _lock:
        _engines.add(engine)
        original = Session.execute
        if getattr(original, _MARK, False):
            return

        @functools.wraps(original)
        def execute(self: Session, statement: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(statement, str) and _bound_to_ours(self):
                statement = text(statement)
            return original(self, statement, *args, **kwargs)

        setattr(execute, _MARK, True)
        Session.execute = execute  # type: ignore[method-assign]


def _bound_to_ours(session: Session) -> bool:
    try:
        bind = session.get_bind()
    except Exception:  # no bind: SQLAlchemy raises its own error for the string
        return False
    return getattr(bind, "engine", bind) in _engines
