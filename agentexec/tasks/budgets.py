"""Budgets: what a run may spend (tokens, cost), and what an owner may spend per day.

A run's budget comes from `ax.enqueue(..., max_tokens=..., max_cost=...)` (the message's
`BUDGET_HEADER`), else from the task (`@pool.task(..., max_tokens=..., max_cost=...)`); the
runner stops a run that went over at its next turn boundary (`agentexec.runners.durable`).
An owner's daily budget (`AGENTEXEC_OWNER_DAILY_TOKENS`, `AGENTEXEC_OWNER_DAILY_COST`) is
checked when a run is enqueued for that owner, against the usage of its runs since midnight
UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentexec.config import get_settings
from agentexec.db.models import Activity, ModelUsage
from agentexec.exceptions import BudgetExceededError, InvalidRequestError
from agentexec.runtime import get_runtime


def parse_budget(max_tokens: Any, max_cost: Any) -> dict[str, float]:
    """A run's budget as the message carries it: `{"tokens": n, "cost": x}`, either key
    left out when not given.

    Raises:
        InvalidRequestError: a limit that is not a positive number.
    """
    budget: dict[str, float] = {}
    for key, value in (("tokens", max_tokens), ("cost", max_cost)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise InvalidRequestError(f"max_{key} must be a positive number, got {value!r}")
        budget[key] = value
    return budget


def task_budget(task: Any) -> dict[str, float]:
    """The budget a task declares (`@pool.task(..., max_tokens=..., max_cost=...)`)."""
    return parse_budget(getattr(task, "max_tokens", None), getattr(task, "max_cost", None))


def check_owner_budget(owner: str) -> None:
    """Refuse a new run of `owner` when its runs have spent the daily budget.

    Raises:
        BudgetExceededError: they have.
    """
    settings = get_settings()
    if settings.owner_daily_tokens is None and settings.owner_daily_cost is None:
        return
    tokens, cost = spent_today(owner)
    if settings.owner_daily_tokens is not None and tokens >= settings.owner_daily_tokens:
        raise BudgetExceededError("tokens", tokens, settings.owner_daily_tokens, owner)
    if settings.owner_daily_cost is not None and cost >= settings.owner_daily_cost:
        raise BudgetExceededError("cost", cost, settings.owner_daily_cost, owner)


def spent_today(owner: str) -> tuple[int, float]:
    """The tokens and cost of `owner`'s runs since midnight UTC."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    stmt = (
        select(
            func.coalesce(func.sum(ModelUsage.input_tokens + ModelUsage.output_tokens), 0),
            func.coalesce(func.sum(ModelUsage.cost), 0.0),
        )
        .join(Activity, Activity.agent_id == ModelUsage.agent_id)
        .where(Activity.owner == owner, ModelUsage.created_at >= midnight)
    )
    with Session(get_runtime().engine) as session:
        tokens, cost = session.execute(stmt).one()
    return int(tokens or 0), float(cost or 0.0)
