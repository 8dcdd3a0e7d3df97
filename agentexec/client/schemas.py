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


class UsageTotals(BaseModel):
    """Model usage added up: requests, tokens by kind, and the cost where prices are known."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    #: Input tokens served from the provider's cache (part of `input_tokens`).
    cached_tokens: int = 0
    #: Output tokens spent on reasoning (part of `output_tokens`).
    reasoning_tokens: int = 0
    #: The cost of the priced calls; None when no call had a price (`AGENTEXEC_PRICES`).
    cost: float | None = None
    #: Calls of models the price table does not have: counted in the tokens, not in `cost`.
    unpriced_requests: int = 0

    @property
    def total_tokens(self) -> int:
        """Input and output tokens."""
        return self.input_tokens + self.output_tokens


class RunUsage(UsageTotals):
    """A run's usage, in total and per model."""

    models: dict[str, UsageTotals] = {}


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
    #: Its model usage so far (tokens, cost), filled by `ax.activity.list` and `detail`.
    usage: UsageTotals | None = None


class ApprovalView(BaseModel):
    """A tool call the run waited on (or waits on) for a person's decision."""

    model_config = ConfigDict(from_attributes=True)

    #: The model's id of the call: what `ax.approve(agent_id, call_id)` takes.
    call_id: str
    tool: str
    #: The call's arguments as the model gave them (JSON text).
    arguments: str
    #: What the agent said last before it stopped.
    agent_message: str | None = None
    requested_at: datetime
    #: None while pending; True approved; False rejected.
    approved: bool | None = None
    decision_message: str | None = None
    #: Who decided, when known (the owner a router was scoped to, or `by=`).
    decided_by: str | None = None
    decided_at: datetime | None = None

    @property
    def pending(self) -> bool:
        """Whether nobody has decided yet."""
        return self.approved is None


class ChildRun(BaseModel):
    """A run a composed run started: a pipeline's step, or a child of a step's fan-out."""

    agent_id: uuid.UUID
    #: Its place in the parent: "1" for the second step, "1.3" for the fourth child of its
    #: fan-out.
    position: str
    #: The step it belongs to.
    step: str
    task: str | None = None
    #: None until its own row is written.
    status: Status | None = None
    latest_log: str | None = None


class ActivityDetail(ActivityListItem):
    """A run with its whole log, oldest first, the approvals it asked for, and (for a
    pipeline run) the runs it started, in order."""

    logs: list[ActivityLogView]
    approvals: list[ApprovalView] = []
    usage: RunUsage | None = None
    children: list[ChildRun] = []


class ActivityPage(BaseModel):
    """One page of runs, newest first."""

    model_config = ConfigDict(from_attributes=True)

    items: list[ActivityListItem]
    total: int
    page: int
    page_size: int
    pages: int
