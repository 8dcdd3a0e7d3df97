"""What the web router answers: typed response models, shown in the app's OpenAPI schema.

The runs' models are the activity schemas of `ax.activity` (`agentexec.client.schemas`) under
the web API's shorter field names (`WEB_NAMES`), so a field added there appears here too.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentexec.client.schemas import (
    ActivityDetail,
    ActivityListItem,
    ActivityLogView,
    ActivityPage,
)
from agentexec.states import EventKind, Status

#: The web API's name of each activity field it renames.
WEB_NAMES = {
    "agent_type": "task",
    "latest_completion_percentage": "percentage",
    "completion_percentage": "percentage",
    "latest_log": "message",
    "last_seq": "seq",
}

#: The activity schemas, under the web's names: in JSON, in the OpenAPI schema, and when
#: read from an activity schema or an ORM row.
_WEB = ConfigDict(
    alias_generator=lambda name: WEB_NAMES.get(name, name),
    serialize_by_alias=True,
    validate_by_name=True,
    from_attributes=True,
)


class AgentLog(ActivityLogView):
    """One entry of a run's log."""

    model_config = _WEB


class AgentSummary(ActivityListItem):
    """A run as one line of the list."""

    model_config = _WEB


class AgentPage(ActivityPage):
    """One page of runs, newest first."""

    model_config = _WEB

    items: list[AgentSummary]  # type: ignore[assignment]


class AgentDetail(ActivityDetail):
    """A run with its whole log, oldest entry first."""

    model_config = _WEB

    logs: list[AgentLog]  # type: ignore[assignment]


class Enqueued(BaseModel):
    """A run just queued."""

    agent_id: uuid.UUID
    task: str
    priority: str


class AgentResultBody(BaseModel):
    """A finished run's return value."""

    agent_id: uuid.UUID
    result: Any


class Canceled(BaseModel):
    """A run that was asked to stop."""

    agent_id: uuid.UUID
    canceled: bool = True


class DecisionBody(BaseModel):
    """A person's decision on one tool call a run waits on."""

    model_config = ConfigDict(extra="forbid")

    #: True runs the tool; False rejects it.
    approve: bool
    #: A note kept with the decision; for a rejection, what the model is told.
    message: str | None = Field(default=None, max_length=2_000)


class Decision(BaseModel):
    """A decision that was recorded."""

    agent_id: uuid.UUID
    call_id: str
    approved: bool


class AgentEvent(BaseModel):
    """One change of one run, as sent on the event streams (SSE `data`, WebSocket messages):
    an `Event`, read from its attributes (`AgentEvent.model_validate(event)`)."""

    model_config = ConfigDict(from_attributes=True)

    agent_id: uuid.UUID
    kind: EventKind
    status: Status
    message: str
    percentage: int | None
    task: str | None
    worker: str | None
    #: Whom the run belongs to, when it has an owner.
    owner: str | None = None
    at: datetime
    #: Position in the event log (the SSE `id`): resume after it with `Last-Event-ID`.
    seq: int | None
    #: What a `waiting` event asks (`approvals`), a `decision` says, or a `usage` event
    #: counts (model, requests, input, output, cached, reasoning, cost).
    data: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """An error: what went wrong, in words."""

    detail: str


class RunEndedBody(BaseModel):
    """A run that failed or was canceled (409)."""

    detail: str
    agent_id: uuid.UUID
    status: Status
    reason: str


class ValidationErrorBody(BaseModel):
    """A request that does not validate (422): one entry per field error."""

    detail: list[dict[str, Any]] = Field(description="pydantic's errors: loc, msg, type")
