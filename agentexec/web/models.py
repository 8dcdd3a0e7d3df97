"""What the web router answers: typed response models, shown in the app's OpenAPI schema."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from agentexec.activity.schemas import ActivityDetail, ActivityListItem
from agentexec.db.models import Status
from agentexec.events import Event, EventKind


class AgentSummary(BaseModel):
    """A run as one line of the list."""

    agent_id: uuid.UUID
    task: str
    status: Status
    percentage: int | None
    message: str | None
    created_at: datetime
    updated_at: datetime
    #: Position of the newest event the run shows: resume its event stream after it.
    seq: int | None

    @classmethod
    def of(cls, item: ActivityListItem) -> AgentSummary:
        """The summary of an activity list item."""
        return cls(
            agent_id=item.agent_id,
            task=item.agent_type,
            status=item.status,
            percentage=item.latest_completion_percentage,
            message=item.latest_log,
            created_at=item.created_at,
            updated_at=item.updated_at,
            seq=item.last_seq,
        )


class AgentPage(BaseModel):
    """One page of runs, newest first."""

    items: list[AgentSummary]
    total: int
    page: int
    page_size: int
    pages: int


class AgentLog(BaseModel):
    """One entry of a run's log."""

    message: str
    status: Status
    percentage: int | None
    created_at: datetime


class AgentDetail(BaseModel):
    """A run with its whole log, oldest entry first."""

    agent_id: uuid.UUID
    task: str
    status: Status
    percentage: int | None
    message: str | None
    created_at: datetime
    updated_at: datetime
    seq: int | None
    logs: list[AgentLog]

    @classmethod
    def of(cls, detail: ActivityDetail) -> AgentDetail:
        """The web form of an activity detail."""
        return cls(
            agent_id=detail.agent_id,
            task=detail.agent_type,
            status=detail.status,
            percentage=detail.latest_completion_percentage,
            message=detail.logs[-1].message if detail.logs else None,
            created_at=detail.created_at,
            updated_at=detail.updated_at,
            seq=detail.last_seq,
            logs=[
                AgentLog(
                    message=log.message,
                    status=log.status,
                    percentage=log.completion_percentage,
                    created_at=log.created_at,
                )
                for log in detail.logs
            ],
        )


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


class AgentEvent(BaseModel):
    """One change of one run, as sent on the event streams (SSE `data`, WebSocket messages)."""

    agent_id: uuid.UUID
    kind: EventKind
    status: Status
    message: str
    percentage: int | None
    task: str | None
    worker: str | None
    at: datetime
    #: Position in the event log (the SSE `id`): resume after it with `Last-Event-ID`.
    seq: int | None

    @classmethod
    def of(cls, event: Event) -> AgentEvent:
        """The wire form of an event."""
        return cls(
            agent_id=event.agent_id,
            kind=event.kind,
            status=event.status,
            message=event.message,
            percentage=event.percentage,
            task=event.task,
            worker=event.worker,
            at=event.at,
            seq=event.seq,
        )


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
