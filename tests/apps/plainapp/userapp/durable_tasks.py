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
    #: Extra characters in each step's output (a big document, say).
    output_bytes: int = Field(default=0, ge=0)


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
    padding = ctx.context.output_bytes if isinstance(ctx.context, DurableContext) else 0
    return f"step {n} done" + " " * padding


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


class CountingRunner(ax.BaseAgentRunner):
    """A runner of its own (no Agents SDK) made durable with the checkpoint hook."""

    async def run(self, agent: Any, input: Any, **kwargs: Any) -> dict[str, int]:
        stored = await self.load_checkpoint()
        state = stored.state if stored is not None and stored.state else {"done": 0}
        resumed_from = int(state["done"])
        for step in range(resumed_from, 3):
            self.report_status(f"step {step + 1}", (step + 1) * 30)
            await self.save_checkpoint({"done": step + 1})
            if step == 1 and stored is not None and stored.state is None:
                raise RuntimeError("crashed after step 2")  # the first attempt only
        return {"done": 3, "resumed_from": resumed_from}


@pool.task("counting_agent", autoretry_for=(RuntimeError,), max_retries=1, default_retry_delay=0)
async def counting_agent(agent_id: UUID, context: DurableContext) -> dict[str, int]:
    """A custom runner whose first attempt fails after two steps; the retry resumes."""
    return await CountingRunner(agent_id).run(None, None)


class KeyedContext(BaseModel):
    user_id: int
    seconds: float = Field(default=0.5, ge=0)


@pool.task("keyed_agent", lock_key="user:{user_id}", max_concurrency=2)
async def keyed_agent(agent_id: UUID, context: KeyedContext) -> dict[str, object]:
    """At most two runs per user at once, across every worker."""
    await asyncio.sleep(context.seconds)
    return {"user_id": context.user_id, "pid": os.getpid()}


@pool.task("rated_agent", rate_limit="30/m")
async def rated_agent(agent_id: UUID, context: KeyedContext) -> dict[str, object]:
    """At most 30 starts a minute (one every 2 s), across every worker."""
    await asyncio.sleep(context.seconds)
    return {"user_id": context.user_id, "pid": os.getpid()}
