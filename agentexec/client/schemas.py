"""What the activity API returns: plain pydantic models, safe to use after the session closes."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from agentexec.states import Status


class ActivityLogView(BaseModel):
    """One log row."""

    model_config = ConfigDict(from_attributes=True)

    message: str
    status: Status
    completion_percentage: int | None
    created_at: datetime


class ActivityListItem(BaseModel):
    """A run as one line of a list page."""

    model_config = ConfigDict(from_attributes=True)

    agent_id: uuid.UUID
    agent_type: str
    status: Status
    latest_completion_percentage: int | None
    latest_log: str | None
    #: Whom the run belongs to, when `ax.enqueue(..., owner=...)` said.
    owner: str | None = None
    created_at: datetime
    updated_at: datetime
    #: Position in the event log of the newest event the run shows (`ax.watch(after=...)`).
    last_seq: int | None = None


class ActivityDetail(ActivityListItem):
    """A run with its whole log, oldest first."""

    logs: list[ActivityLogView]


class ActivityPage(BaseModel):
    """One page of runs, newest first."""

    model_config = ConfigDict(from_attributes=True)

    items: list[ActivityListItem]
    total: int
    page: int
    page_size: int
    pages: int
