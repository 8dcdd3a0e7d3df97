"""SQLAlchemy 1.x habits the integration guide relies on.

The guide's cleanup job runs `session.execute("DELETE FROM agentexec_activity ...", params)`,
a plain string, which SQLAlchemy 2 refuses. agentexec promises that every snippet of the guide
runs unchanged, so importing agentexec lets `Session.execute` take a plain SQL string and wraps
it in `text()`. Everything else is untouched. `AGENTEXEC_SQL_STRING_COMPAT=false` opts out.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from agentexec.config import get_settings

_MARK = "_agentexec_accepts_str"


def install() -> None:
    """Let `Session.execute` accept a plain SQL string. Idempotent."""
    if not get_settings().sql_string_compat:
        return
    original = Session.execute
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def execute(self: Session, statement: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(statement, str):
            statement = text(statement)
        return original(self, statement, *args, **kwargs)

    setattr(execute, _MARK, True)
    Session.execute = execute  # type: ignore[method-assign]
