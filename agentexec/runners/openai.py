"""OpenAIRunner: the OpenAI Agents SDK, with status reports and max-turns recovery."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from agents import Agent, FunctionTool, RunConfig, Runner, RunResult
from agents.exceptions import MaxTurnsExceeded
from agents.items import TResponseInputItem
from agents.result import RunResultStreaming
from agents.run_state import RunState
from agents.stream_events import StreamEvent
from pydantic import BaseModel, ValidationError

from agentexec.exceptions import MaxTurnsError
from agentexec.runners.base import BaseAgentRunner
from agentexec.runners.durable import DurableRun

EventCallback = Callable[[StreamEvent], Awaitable[None] | None]
R = TypeVar("R")
Input = str | list[TResponseInputItem]
#: One run of the SDK: `attempt(agent, input or state, max_turns)`.
Attempt = Callable[[Agent[Any], "Input | RunState[Any, Agent[Any]]", int], Awaitable[R]]


@dataclass(frozen=True, slots=True)
class OpenAITools:
    """Tools an OpenAIRunner gives its agent."""

    #: `report_status(message: str, percentage: int)`, an SDK function tool.
    report_status: FunctionTool


class OpenAIRunner(BaseAgentRunner):
    """Runs an OpenAI Agents SDK agent inside an agentexec task.

    Example:
        ```python
        runner = ax.OpenAIRunner(agent_id=agent_id, max_turns_recovery=True)
        agent = Agent(
            name="Research Agent",
            instructions=f"Research the company. {runner.prompts.report_status}",
            tools=[runner.tools.report_status],
        )
        result = await runner.run(agent, input="Research Acme", max_turns=15)
        ```
    """

    def __init__(self, agent_id: uuid.UUID | str, **options: Any) -> None:
        super().__init__(agent_id, **options)
        self.tools = OpenAITools(report_status=self._report_status_tool())

    async def run(
        self,
        agent: Agent[Any],
        input: str | list[TResponseInputItem],
        *,
        max_turns: int = 10,
        context: Any = None,
        run_config: RunConfig | None = None,
        **kwargs: Any,
    ) -> RunResult:
        """Run the agent to its final output and return the SDK's RunResult.

        Raises:
            MaxTurnsError: the turn limit was reached (and the wrap-up, if on, did not help).
            Any exception of the SDK, the model or a tool, unchanged.
        """
        options = {"context": context, "run_config": run_config, **kwargs}

        async def attempt(
            run_agent: Agent[Any], given: Input | RunState[Any, Agent[Any]], turns: int
        ) -> RunResult:
            return await Runner.run(run_agent, given, max_turns=turns, **options)

        return await self._durable(attempt, agent, input, max_turns, options)

    async def run_streamed(
        self,
        agent: Agent[Any],
        input: str | list[TResponseInputItem],
        *,
        on_event: EventCallback | None = None,
        max_turns: int = 10,
        context: Any = None,
        run_config: RunConfig | None = None,
        **kwargs: Any,
    ) -> RunResultStreaming:
        """Like `run`, streaming: every SDK event goes to `on_event` (sync or async).

        Returns the finished streaming result; `final_output` holds the answer.
        """
        options = {"context": context, "run_config": run_config, **kwargs}

        async def attempt(
            run_agent: Agent[Any], given: Input | RunState[Any, Agent[Any]], turns: int
        ) -> RunResultStreaming:
            return await self._stream(run_agent, given, turns, on_event, options)

        return await self._durable(attempt, agent, input, max_turns, options)

    async def _durable(
        self,
        attempt: Attempt[R],
        agent: Agent[Any],
        input: Input,
        max_turns: int,
        options: dict[str, Any],
    ) -> R:
        """Run `attempt` from the run's checkpoint (if it has one), checkpointing each turn;
        stop for approvals. Outside an agentexec worker, just `attempt`, with recovery."""
        durable = DurableRun.of(self, options.pop("hooks", None))
        if durable is None:
            return await self._with_recovery(attempt, agent, input, max_turns)
        options["hooks"] = durable.hooks()
        agent, given, turns = await durable.start(agent, input, max_turns, options)
        try:
            result = await self._with_recovery(attempt, agent, given, turns, durable)
        except Exception as exc:
            durable.close_spans(exc)
            await durable.refused(exc)
            raise
        durable.close_spans()
        await durable.finished(result)
        return result

    async def _with_recovery(
        self,
        attempt: Attempt[R],
        agent: Agent[Any],
        input: Input | RunState[Any, Agent[Any]],
        max_turns: int,
        durable: DurableRun | None = None,
    ) -> R:
        """Run `attempt`; at the turn limit, wrap up (or fail) as the runner is configured."""
        try:
            return await attempt(agent, input, max_turns)
        except MaxTurnsExceeded as exc:
            if durable is not None:
                await durable.at_turn_limit(exc)
            wrap_up = self._wrap_up_input(exc, max_turns)
            last_agent = exc.run_data.last_agent if exc.run_data is not None else agent
        try:
            return await attempt(last_agent, wrap_up, self.recovery_turns)
        except MaxTurnsExceeded as exc:
            if durable is not None:
                await durable.at_turn_limit(exc)
            raise MaxTurnsError(max_turns, recovered=True) from exc

    async def _stream(
        self,
        agent: Agent[Any],
        input: Input | RunState[Any, Agent[Any]],
        max_turns: int,
        on_event: EventCallback | None,
        options: dict[str, Any],
    ) -> RunResultStreaming:
        result = Runner.run_streamed(agent, input, max_turns=max_turns, **options)
        async for event in result.stream_events():
            if on_event is not None:
                outcome = on_event(event)
                if inspect.isawaitable(outcome):
                    await outcome
        return result

    def _wrap_up_input(self, exc: MaxTurnsExceeded, max_turns: int) -> list[TResponseInputItem]:
        """The conversation so far plus the wrap-up instruction, or MaxTurnsError."""
        if not self.max_turns_recovery or exc.run_data is None:
            self.report_status(f"Stopped: reached the limit of {max_turns} turns")
            raise MaxTurnsError(max_turns, recovered=False) from exc
        self.report_status(
            f"Reached the limit of {max_turns} turns; wrapping up in at most "
            f"{self.recovery_turns} more"
        )
        data = exc.run_data
        history: list[TResponseInputItem] = (
            [{"role": "user", "content": data.input}]
            if isinstance(data.input, str)
            else list(data.input)
        )
        history += [item.to_input_item() for item in data.new_items]
        history.append({"role": "user", "content": self.prompts.wrap_up})
        return history

    def _report_status_tool(self) -> FunctionTool:
        # Built by hand rather than with @function_tool, which inspects the signature and
        # builds a pydantic model on every call: that is per agent run, on the shared loop.
        async def invoke(context: Any, arguments: str) -> str:
            try:
                report = _ReportStatusArgs.model_validate_json(arguments or "{}")
            except ValidationError as exc:
                return f"Error: invalid arguments for report_status: {exc.errors()[0]['msg']}"
            return self.report_status(report.message, report.percentage)

        return FunctionTool(
            name="report_status",
            description=_REPORT_STATUS_DESCRIPTION,
            params_json_schema=_REPORT_STATUS_SCHEMA,
            on_invoke_tool=invoke,
            strict_json_schema=True,
        )


class _ReportStatusArgs(BaseModel):
    message: str
    percentage: int


_REPORT_STATUS_DESCRIPTION = (
    "Tell the user what you are doing now and how far along the whole task is."
)
_REPORT_STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "message": {
            "type": "string",
            "description": "One short user-facing sentence about the current step.",
        },
        "percentage": {
            "type": "integer",
            "description": "Estimated overall progress, a whole number from 0 to 100.",
        },
    },
    "required": ["message", "percentage"],
    "additionalProperties": False,
}
