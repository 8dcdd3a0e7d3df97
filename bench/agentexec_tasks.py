"""The benchmark's agentexec tasks: `celery -A agentexec worker -I bench.agentexec_tasks`.

`bench_agent` runs the scripted agent (bench.common.scripted_agent) through `ax.OpenAIRunner`
with the runner's own `report_status` tool, so its status report lands in the activity log.
`bench_noop` returns at once: the cost of the queue and the tracking alone.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel

import agentexec as ax
from bench.common import disable_tracing, scripted_agent

disable_tracing()
pool = ax.WorkerPool()


class AgentContext(BaseModel):
    idx: int
    latency: float


class NoopContext(BaseModel):
    idx: int


@pool.task("bench_agent")
async def bench_agent(agent_id: UUID, context: AgentContext) -> dict[str, Any]:
    """Two model turns of `latency` seconds; the first reports its status."""
    runner = ax.OpenAIRunner(agent_id=agent_id)
    agent = scripted_agent(runner.tools.report_status, context.latency, context.idx)
    result = await runner.run(agent, input=f"task {context.idx}", max_turns=5)
    return {"idx": context.idx, "final": str(result.final_output)}


@pool.task("bench_noop")
async def bench_noop(agent_id: UUID, context: NoopContext) -> dict[str, Any]:
    """Returns at once."""
    return {"idx": context.idx}
