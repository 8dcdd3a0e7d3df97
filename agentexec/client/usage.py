"""Reading model usage: per run (with its per-model split), and totals for reports.

Usage comes from the `activity_usage` rows the projection writes, one per model call (see
`agentexec.db.models.ModelUsage`): tokens always, cost where the price table knows the model.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentexec.client.schemas import RunUsage, UsageTotals
from agentexec.db.models import Activity, ModelUsage
from agentexec.exceptions import InvalidRequestError

GroupBy = Literal["task", "owner", "model", "day"]

_SUMS = (
    func.sum(ModelUsage.requests),
    func.sum(ModelUsage.input_tokens),
    func.sum(ModelUsage.output_tokens),
    func.sum(ModelUsage.cached_tokens),
    func.sum(ModelUsage.reasoning_tokens),
    func.sum(ModelUsage.cost),
    func.sum(ModelUsage.requests).filter(ModelUsage.cost.is_(None)),
)


def run_usage(session: Session, agent_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, RunUsage]:
    """The usage of each run, with its per-model split, in one query (runs without usage are
    left out)."""
    ids = list(agent_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(ModelUsage.agent_id, ModelUsage.model, *_SUMS)
        .where(ModelUsage.agent_id.in_(ids))
        .group_by(ModelUsage.agent_id, ModelUsage.model)
    ).all()
    found: dict[uuid.UUID, RunUsage] = {}
    for row in rows:
        per_model = _totals(tuple(row[2:]))
        run = found.setdefault(row[0], RunUsage())
        run.models[str(row[1])] = per_model
        _add(run, per_model)
    return found


def usage(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    group_by: GroupBy = "task",
    owner: str | None = None,
) -> dict[str, UsageTotals]:
    """Usage totals for reports, by task, owner, model or day (UTC, `YYYY-MM-DD`).

    Args:
        session: a session on the activity database.
        since: only model calls at or after this time.
        until: only model calls before this time.
        group_by: what the totals are keyed by; runs without an owner group under "".
        owner: only the runs of this owner.

    Raises:
        InvalidRequestError: an unknown `group_by` (a ValueError).
    """
    key: Any
    if group_by == "task":
        key = Activity.agent_type
    elif group_by == "owner":
        key = func.coalesce(Activity.owner, "")
    elif group_by == "model":
        key = ModelUsage.model
    elif group_by == "day":
        key = _day(session)
    else:
        raise InvalidRequestError(f"group_by must be task, owner, model or day, got {group_by!r}")
    stmt = select(key, *_SUMS).select_from(ModelUsage)
    if group_by in ("task", "owner") or owner is not None:
        stmt = stmt.join(Activity, Activity.agent_id == ModelUsage.agent_id)
    if since is not None:
        stmt = stmt.where(ModelUsage.created_at >= since)
    if until is not None:
        stmt = stmt.where(ModelUsage.created_at < until)
    if owner is not None:
        stmt = stmt.where(Activity.owner == owner)
    rows = session.execute(stmt.group_by(key).order_by(key)).all()
    return {str(row[0]): _totals(tuple(row[1:])) for row in rows}


def _day(session: Session) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", ModelUsage.created_at), "YYYY-MM-DD")
    return func.date(ModelUsage.created_at)  # stored as naive UTC


def _totals(sums: Sequence[Any]) -> UsageTotals:
    requests, input_tokens, output_tokens, cached, reasoning, cost, unpriced = sums
    return UsageTotals(
        requests=int(requests or 0),
        input_tokens=int(input_tokens or 0),
        output_tokens=int(output_tokens or 0),
        cached_tokens=int(cached or 0),
        reasoning_tokens=int(reasoning or 0),
        cost=float(cost) if cost is not None else None,
        unpriced_requests=int(unpriced or 0),
    )


def _add(total: UsageTotals, part: UsageTotals) -> None:
    total.requests += part.requests
    total.input_tokens += part.input_tokens
    total.output_tokens += part.output_tokens
    total.cached_tokens += part.cached_tokens
    total.reasoning_tokens += part.reasoning_tokens
    total.unpriced_requests += part.unpriced_requests
    if part.cost is not None:
        total.cost = (total.cost or 0.0) + part.cost
