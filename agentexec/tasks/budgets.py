"""Budgets: what a run may spend (tokens, cost), and what an owner may spend per day.

A run's budget comes from `ax.enqueue(..., max_tokens=..., max_cost=...)` (the message's
`BUDGET_HEADER`), else from the task (`@pool.task(..., max_tokens=..., max_cost=...)`); the
runner stops a run that went over at its next turn boundary (`agentexec.runners.durable`).
An owner's daily budget (`AGENTEXEC_OWNER_DAILY_TOKENS`, `AGENTEXEC_OWNER_DAILY_COST`) is
checked when a run is enqueued for that owner, against the usage of its runs since midnight
UTC. That usage is counted in Redis, in one hash per owner and day (`Keys.owner_spent`), so
the check costs one round trip however much the owner ran: the first check of a day reads
the day's usage so far from SQL into it, and from then on the workers add each model call's
tokens and cost. (Calls whose usage events had not reached SQL when the day's hash was made,
a fraction of a second's worth, go uncounted.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis
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
    if not owner_budgets_set():
        return
    settings = get_settings()
    tokens, cost = spent_today(owner)
    if settings.owner_daily_tokens is not None and tokens >= settings.owner_daily_tokens:
        raise BudgetExceededError("tokens", tokens, settings.owner_daily_tokens, owner)
    if settings.owner_daily_cost is not None and cost >= settings.owner_daily_cost:
        raise BudgetExceededError("cost", cost, settings.owner_daily_cost, owner)


#: How long an owner's day of spending stays in Redis: a day, and a day's margin.
_SPENT_TTL = 2 * 86_400
#: Seed an owner's day from SQL, unless a check seeded it already: returns the hash.
_SEED = """
if redis.call('exists', KEYS[1]) == 0 then
  redis.call('hset', KEYS[1], 'tokens', ARGV[1], 'cost', ARGV[2])
  redis.call('expire', KEYS[1], ARGV[3])
end
return redis.call('hmget', KEYS[1], 'tokens', 'cost')
"""
#: Add a model call to an owner's day, once a check has seeded it (before then SQL has it).
ADD_SPENT = """
if redis.call('exists', KEYS[1]) == 1 then
  redis.call('hincrby', KEYS[1], 'tokens', ARGV[1])
  redis.call('hincrbyfloat', KEYS[1], 'cost', ARGV[2])
end
"""


def add_spent(pipe: Any, owner: str, tokens: int, cost: float) -> None:
    """Queue, on `pipe`, a model call's tokens and cost for `owner`'s day."""
    pipe.eval(ADD_SPENT, 1, owner_spent_key(owner), tokens, repr(cost))


def owner_spent_key(owner: str) -> str:
    """Today's (UTC) spending hash of `owner`."""
    return get_settings().keys.owner_spent(owner, datetime.now(UTC).strftime("%Y-%m-%d"))


def owner_budgets_set() -> bool:
    settings = get_settings()
    return settings.owner_daily_tokens is not None or settings.owner_daily_cost is not None


def spent_today(owner: str) -> tuple[int, float]:
    """The tokens and cost of `owner`'s runs since midnight UTC."""
    client: redis.Redis = get_runtime().events.client()
    key = owner_spent_key(owner)
    found = client.hmget(key, ["tokens", "cost"])
    if found[0] is None:
        tokens, cost = _spent_in_sql(owner)
        found = client.eval(_SEED, 1, key, tokens, repr(cost), _SPENT_TTL)
    return int(found[0] or 0), float(found[1] or 0.0)


def _spent_in_sql(owner: str) -> tuple[int, float]:
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
