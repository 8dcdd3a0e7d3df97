"""Durable agents: tool turns against a model over real HTTP, and a tool that needs approval.

Every tool counts its executions in Redis (`<prefix>.tool.<agent id>.<turn>` and
`<prefix>.sent.<agent id>`), so the tests can prove which ran, and how often.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal
from uuid import UUID

import redis.asyncio as aioredis
from agents import Agent, RunContextWrapper, function_tool, set_tracing_disabled
from pydantic import BaseModel, Field

import agentexec as ax

set_tracing_disabled(True)
pool = ax.WorkerPool()


class DurableContext(BaseModel):
    mode: Literal["steps", "approval", "plain"] = "steps"
    steps: int = Field(default=4, ge=0)
    max_turns: int = Field(default=10, ge=1)
    #: Seconds each step takes (a slow API call, say).
    tool_seconds: float = Field(default=0.0, ge=0)


async def _count(key: str, idempotency_key: str | None = None) -> int:
    client = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    prefix = os.environ["AGENTEXEC_QUEUE_PREFIX"]
    try:
        if idempotency_key is not None:
            await client.rpush(f"{prefix}.keys.{key}", idempotency_key)
        return int(await client.incr(f"{prefix}.{key}"))
    finally:
        await client.aclose()


@function_tool
async def step(ctx: RunContextWrapper[Any], n: int) -> str:
    """Do step n of the job."""
    key = ax.idempotency_key(ctx)  # type: ignore[arg-type]
    if isinstance(ctx.context, DurableContext) and ctx.context.tool_seconds:
        await asyncio.sleep(ctx.context.tool_seconds)
    await _count(f"tool.{key.split(':')[0]}.{n}", key)
    return f"step {n} done"


@function_tool(needs_approval=True)
async def send_email(ctx: RunContextWrapper[Any], to: str) -> str:
    """Send the report by email."""
    run = ax.idempotency_key(ctx).split(":")[0]  # type: ignore[arg-type]
    await _count(f"sent.{run}")
    return f"sent to {to}"


def _agent(runner: ax.OpenAIRunner) -> Agent[Any]:
    return Agent(
        name="Durable agent",
        instructions="Do the steps, then answer.",
        tools=[runner.tools.report_status, step, send_email],
        model=os.environ.get("AGENT_MODEL", "gpt-4o"),
    )


async def _run(agent_id: UUID, context: DurableContext, **options: Any) -> dict[str, object]:
    runner = ax.OpenAIRunner(agent_id=agent_id)
    prompt = f"run {agent_id} {context.mode} {context.steps}"
    result = await runner.run(
        _agent(runner), input=prompt, max_turns=context.max_turns, context=context
    )
    return {"final": result.final_output}


@pool.task("durable_agent")
async def durable_agent(agent_id: UUID, context: DurableContext) -> dict[str, object]:
    return await _run(agent_id, context)


@pool.task("durable_agent_off", checkpoint=False)
async def durable_agent_off(agent_id: UUID, context: DurableContext) -> dict[str, object]:
    """The same agent, with turn checkpoints turned off."""
    return await _run(agent_id, context)


@pool.task("durable_agent_hurried", approval_timeout=2)
async def durable_agent_hurried(agent_id: UUID, context: DurableContext) -> dict[str, object]:
    """The same agent, whose approvals expire after 2 s."""
    return await _run(agent_id, context)
