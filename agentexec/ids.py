"""Agent ids: one UUID names the activity row, the Celery task and its result."""

from __future__ import annotations

import uuid

from agentexec.exceptions import InvalidAgentIdError


def parse_agent_id(value: uuid.UUID | str) -> uuid.UUID:
    """`value` as a UUID, or InvalidAgentIdError (a KeyError) when it is not one."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (ValueError, AttributeError, TypeError):
        raise InvalidAgentIdError(value) from None
