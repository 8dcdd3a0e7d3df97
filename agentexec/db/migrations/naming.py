"""Names in migrations follow the configured table prefix (`AGENTEXEC_TABLE_PREFIX`)."""

from __future__ import annotations

from agentexec.config import get_settings


def table(name: str) -> str:
    """`name` with the table prefix: `table("activity")` is `agentexec_activity`."""
    return f"{get_settings().table_prefix}{name}"
