"""The activity tables (defined in `agentexec.db.models`), under their public name."""

from agentexec.db.models import (
    ACTIVE,
    TERMINAL,
    Activity,
    ActivityLog,
    Base,
    Status,
    UTCDateTime,
    utcnow,
)

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "Activity",
    "ActivityLog",
    "Base",
    "Status",
    "UTCDateTime",
    "utcnow",
]
