"""Identifiers: the agent id that names a run (the activity row, the Celery task and its
result), and the owner a run belongs to."""

from __future__ import annotations

import uuid

from agentexec.exceptions import InvalidAgentIdError, InvalidRequestError

#: The longest owner string, as the activity table stores it.
MAX_OWNER_LENGTH = 255


def parse_agent_id(value: uuid.UUID | str) -> uuid.UUID:
    """`value` as a UUID, or InvalidAgentIdError (a KeyError) when it is not one."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (ValueError, AttributeError, TypeError):
        raise InvalidAgentIdError(value) from None


def parse_owner(value: object) -> str | None:
    """`value` as an owner: None, or a string of 1 to 255 printable characters.

    Raises:
        InvalidRequestError: it is not one.
    """
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_OWNER_LENGTH
        or not value.isprintable()
    ):
        raise InvalidRequestError(
            f"owner must be a string of 1 to {MAX_OWNER_LENGTH} printable characters, "
            f"got {value!r}"[:300]
        )
    return value
