"""Agent tasks driven by the real Agents SDK, offline: scripted models or a local server."""

from __future__ import annotations

import os
from typing import Literal
from uuid import UUID

from agents import Agent, function_tool, set_tracing_disabled
from pydantic import BaseModel, Field

import agentexec as ax
from agentexec.runners.offline import (
    answer,
    call,
    endless_tool_calls,
    fail,
    report,
    scripted_model,
)

set_tracing_disabled(True)
pool = ax.WorkerPool()

Scenario = Literal["reports", "endless", "tool_raises", "model_raises", "http", "http_streamed"]


class AgentContext(BaseModel):
    scenario: Scenario = "reports"
    reports: int = Field(default=1, ge=0)
    latency: float = Field(default=0.0, ge=0)
    max_turns: int = Field(default=10, ge=1)
    recovery: bool = False
    prompt: str = "Research Acme"


@function_tool(failure_error_function=None)
def lookup(query: str) -> str:
    """Look something up."""
    raise LookupError(f"search backend refused {query!r}")


@pool.task("scripted_agent")
async def scripted_agent(agent_id: UUID, context: AgentContext) -> dict[str, object]:
    runner = ax.OpenAIRunner(agent_id=agent_id, max_turns_recovery=context.recovery)
    tools = [runner.tools.report_status]
    if context.scenario == "reports":
        steps = [report(f"report {i + 1}", (i + 1) * 100 // (context.reports + 1))
                 for i in range(context.reports)]  # fmt: skip
        model = scripted_model(*steps, answer("all done"), latency=context.latency)
    elif context.scenario == "endless":
        steps = endless_tool_calls(turns=context.max_turns)
        model = scripted_model(*steps, answer("wrapped up with partial findings"))
    elif context.scenario == "tool_raises":
        tools.append(lookup)
        model = scripted_model(call("lookup", {"query": "acme"}), answer("unreachable"))
    elif context.scenario == "model_raises":
        model = scripted_model(report("starting", 10), fail(ConnectionError("provider down")))
    else:
        agent = Agent(
            name="HTTP agent",
            instructions=runner.prompts.report_status,
            tools=tools,
            model=os.environ.get("AGENT_MODEL", "gpt-4o"),
        )
        if context.scenario == "http":
            result = await runner.run(agent, input=context.prompt, max_turns=context.max_turns)
            return {"final": result.final_output, "streamed_events": 0}
        events: list[str] = []
        streamed = await runner.run_streamed(
            agent,
            input=context.prompt,
            max_turns=context.max_turns,
            on_event=lambda event: events.append(event.type),
        )
        return {"final": streamed.final_output, "streamed_events": len(events)}
    agent = Agent(name="Scripted agent", instructions=runner.prompts.report_status,
                  tools=tools, model=model)  # fmt: skip
    result = await runner.run(agent, input="go", max_turns=context.max_turns)
    return {"final": result.final_output, "streamed_events": 0}


@pool.task("scripted_agent_once", retries=0)
async def scripted_agent_once(agent_id: UUID, context: AgentContext) -> dict[str, object]:
    """The same agent, with no retry after a transient model error (`retries=0`)."""
    return await scripted_agent.agent_fn(agent_id, context)
