"""The demo's agent: the integration guide's research agent, with or without an OpenAI key.

With `OPENAI_API_KEY` set, the agent talks to `gpt-4o` exactly as in the guide. Without it,
the same agent runs on a scripted offline model that reports progress and answers after a
short simulated delay, and says so in its activity log and in its result.
"""

from __future__ import annotations

import logging
import os
from uuid import UUID

from agents import Agent, Model, set_tracing_disabled
from pydantic import BaseModel

import agentexec as ax
from agentexec.runners.offline import answer, report, scripted_model

logger = logging.getLogger(__name__)

pool = ax.WorkerPool()

#: Seconds per model turn of the offline model; `RESEARCH_SCRIPTED_LATENCY` overrides it.
SCRIPTED_LATENCY = float(os.environ.get("RESEARCH_SCRIPTED_LATENCY", "1.0"))


class ResearchContext(BaseModel):
    """What to research."""

    company: str
    focus_areas: list[str] = []


def research_model(context: ResearchContext) -> str | Model:
    """`gpt-4o` when a key is set, otherwise a scripted model that needs no network."""
    if os.environ.get("OPENAI_API_KEY"):
        return "gpt-4o"
    set_tracing_disabled(True)  # nowhere to send traces without a key
    areas = ", ".join(context.focus_areas) or "general info"
    return scripted_model(
        report(f"Gathering public information about {context.company}", 20),
        report(f"Analysing {areas}", 60),
        report("Writing up the findings", 90),
        answer(
            f"{context.company}: offline summary covering {areas}. "
            "(Scripted model; set OPENAI_API_KEY for real research.)"
        ),
        latency=SCRIPTED_LATENCY,
    )


@pool.task("research_company")
async def research_company(agent_id: UUID, context: ResearchContext) -> dict[str, str]:
    """Research a company, reporting progress, and return the findings."""
    runner = ax.OpenAIRunner(agent_id=agent_id, max_turns_recovery=True)
    model = research_model(context)
    model_name = model if isinstance(model, str) else "scripted (offline, no OPENAI_API_KEY)"
    runner.report_status(f"Using model: {model_name}", 0)

    agent = Agent(
        name="Research Agent",
        instructions=f"""Research {context.company}.
        Focus on: {", ".join(context.focus_areas) or "general info"}
        {runner.prompts.report_status}""",
        tools=[runner.tools.report_status],
        model=model,
    )

    result = await runner.run(agent, input=f"Research {context.company}", max_turns=15)
    return {"company": context.company, "findings": result.final_output, "model": model_name}
