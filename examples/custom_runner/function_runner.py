"""A second agent runner: the contract another framework follows, for a plain async function.

A runner needs three things from `BaseAgentRunner`:

- `prompts.report_status`: instruction text for a model (a plain function ignores it);
- `tools.report_status`: the status tool in the framework's own tool format; here it is a
  plain callable `(message, percentage) -> str` that returns what a model would be told;
- `run(...)`: runs the "agent" and returns its result. Exceptions propagate, so the task
  ends ERROR with the reason; cancellation propagates, so it ends CANCELED.

`BaseAgentRunner.report_status()` does the recording (a RUNNING log row with the percentage,
written off the event loop), and validates the percentage.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import agentexec as ax

Report = Callable[[str, int], str]
AgentFunction = Callable[[Any, Report], Awaitable[Any]]


@dataclass(frozen=True)
class FunctionTools:
    """The tools a function agent gets: plain callables."""

    report_status: Report


class FunctionRunner(ax.BaseAgentRunner):
    """Runs `async def agent(input, report_status)` inside an agentexec task."""

    def __init__(self, agent_id: uuid.UUID | str, **options: Any) -> None:
        super().__init__(agent_id, **options)
        self.tools = FunctionTools(report_status=self.report_status)

    async def run(self, agent: AgentFunction, input: Any, **kwargs: Any) -> Any:
        return await agent(input, self.tools.report_status)


# How a task uses it:
#
#     @pool.task("summarize")
#     async def summarize(agent_id: UUID, context: SummaryContext) -> dict:
#         runner = FunctionRunner(agent_id)
#         return await runner.run(summarize_text, context.text)
#
#     async def summarize_text(text: str, report_status: Report) -> dict:
#         report_status("Counting words", 50)
#         return {"words": len(text.split())}
