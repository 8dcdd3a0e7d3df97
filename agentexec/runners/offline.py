"""Drive agents offline with the SDK's `ScriptedModel`: no API key, no network.

A scripted model plays back model turns you write: tool calls (such as `report_status`)
and a final answer. Pass it as the agent's `model`, in your task or in a test. The demo runs
on one without a key; tests import the same helpers from `agentexec.testing`.

Example:
    ```python
    from agentexec.testing import answer, report, scripted_model

    model = scripted_model(
        report("Looking up Acme", 30),
        report("Reading the annual report", 70),
        answer("Acme makes anvils."),
        latency=0.5,                      # seconds per model turn, like a real model
    )
    agent = Agent(name="Research Agent", model=model, tools=[runner.tools.report_status])
    result = await runner.run(agent, input="Research Acme")
    assert result.final_output == "Acme makes anvils."
    ```
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

from agents.items import ModelResponse, TResponseOutputItem, TResponseStreamEvent
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

_call_ids = itertools.count(1)


def report(message: str, percentage: int, *, tool: str = "report_status") -> ModelStep:
    """A model turn that calls `report_status(message, percentage)`."""
    call = function_call(
        tool,
        {"message": message, "percentage": percentage},
        call_id=f"call_{next(_call_ids)}",
    )
    return ModelStep(output=[call])


def call(tool: str, arguments: dict[str, Any]) -> ModelStep:
    """A model turn that calls any function tool."""
    return ModelStep(output=[function_call(tool, arguments, call_id=f"call_{next(_call_ids)}")])


def answer(text: str) -> ModelStep:
    """A model turn that gives the final answer."""
    return ModelStep(output=[assistant_message(text)])


def fail(error: Exception) -> ModelStep:
    """A model turn that raises, like a provider outage."""
    return ModelStep.raise_error(error)


class SlowScriptedModel(ScriptedModel):
    """A ScriptedModel that waits `latency` seconds per turn, as a real model would."""

    def __init__(self, steps: list[ModelStep], *, latency: float = 0.0) -> None:
        super().__init__(steps)
        self.latency = latency

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        if self.latency:
            await asyncio.sleep(self.latency)
        return await super().get_response(*args, **kwargs)

    async def stream_response(
        self, *args: Any, **kwargs: Any
    ) -> AsyncIterator[TResponseStreamEvent]:
        if self.latency:
            await asyncio.sleep(self.latency)
        async for event in super().stream_response(*args, **kwargs):
            yield event


def scripted_model(*steps: ModelStep, latency: float = 0.0) -> SlowScriptedModel:
    """A model that plays back `steps`, one per turn, each after `latency` seconds."""
    return SlowScriptedModel(list(steps), latency=latency)


def endless_tool_calls(tool: str = "report_status", turns: int = 100) -> list[ModelStep]:
    """Turns that never stop calling a tool: for testing max-turns handling."""
    return [report(f"Still searching ({i})", min(i, 99), tool=tool) for i in range(turns)]


__all__ = [
    "ModelStep",
    "SlowScriptedModel",
    "TResponseOutputItem",
    "answer",
    "call",
    "endless_tool_calls",
    "fail",
    "report",
    "scripted_model",
]
