"""Scheduled agent runs: one every second, and a 3-second run every second that skips a
firing while its previous run still goes."""

from __future__ import annotations

import asyncio
from uuid import UUID

from pydantic import BaseModel, Field

import agentexec as ax

pool = ax.WorkerPool()


class TickContext(BaseModel):
    seconds: float = Field(default=0.0, ge=0)


@pool.schedule("tick_agent", 1.0, context={"seconds": 0}, name="every_second")
async def tick_agent(agent_id: UUID, context: TickContext) -> dict[str, float]:
    await asyncio.sleep(context.seconds)
    return {"slept": context.seconds}


pool.add_schedule("tick_agent", 1.0, TickContext(seconds=3), overlap="skip", name="slow_skip")
