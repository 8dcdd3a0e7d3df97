"""A plain async agent task: no model, just the shape every agent task has."""

from __future__ import annotations

import asyncio
from uuid import UUID

from pydantic import BaseModel, Field

import agentexec as ax

pool = ax.WorkerPool()


class NumbersContext(BaseModel):
    """Numbers to add up, and how long to pretend each step takes."""

    numbers: list[float] = Field(min_length=1)
    step_seconds: float = Field(default=0.0, ge=0, le=60)


@pool.task("summarize_numbers")
async def summarize_numbers(agent_id: UUID, context: NumbersContext) -> dict[str, float]:
    """Add the numbers up, reporting progress after each one."""
    total = 0.0
    for index, number in enumerate(context.numbers, start=1):
        await asyncio.sleep(context.step_seconds)
        total += number
        percentage = round(100 * index / len(context.numbers))
        ax.activity.update(agent_id, f"Added {index} of {len(context.numbers)}", percentage)
    return {"total": total, "count": float(len(context.numbers))}
