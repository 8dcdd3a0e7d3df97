"""The contract every agent runner follows, whatever the agent framework.

A runner wraps one agent run inside an agentexec task. It gives the agent a way to report
progress (`prompts.report_status` to put in its instructions, `tools.report_status` to call)
and turns the framework's run into activity: status reports become RUNNING log rows, and a
run that cannot finish raises, so the task ends ERROR with the reason.

A subclass supplies `tools.report_status` in its framework's tool format and a `run`.
`report_status()` does the recording, without blocking the event loop.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from agentexec.client.activity import report
from agentexec.ids import parse_agent_id
from agentexec.tasks import checkpoints
from agentexec.tasks.checkpoints import current_run

REPORT_STATUS_PROMPT = (
    "Keep the user informed while you work. Before each step (each tool call, search or "
    "lookup), call the `report_status` tool with a short user-facing message saying what you "
    "are about to do (one sentence, no internal details) and your estimated overall progress "
    "as a whole-number percentage from 0 to 100. Progress only goes up. Report 100 only when "
    "your final answer is ready."
)

WRAP_UP_PROMPT = (
    "You have used all the steps available for this task. Do not start any new research or "
    "tool calls except `report_status`. Give your best final answer now, based on what you "
    "have found so far, and say briefly what is still missing."
)


@dataclass(frozen=True, slots=True)
class RunnerPrompts:
    """Instruction texts a runner adds to an agent."""

    #: Tells the model to call `report_status` before each step.
    report_status: str
    #: Sent when the turn limit is reached and recovery is on.
    wrap_up: str


class BaseAgentRunner:
    """Runs one agent for one agentexec task and records what it does.

    Args:
        agent_id: the id of the task the agent runs in.
        max_turns_recovery: when the agent reaches its turn limit, give it `recovery_turns`
            more turns, with `wrap_up_prompt`, to give a final answer instead of failing.
        recovery_turns: how many turns the wrap-up gets.
        wrap_up_prompt: replaces the default wrap-up instruction.
        report_status_prompt: replaces the default `prompts.report_status`.
    """

    def __init__(
        self,
        agent_id: uuid.UUID | str,
        *,
        max_turns_recovery: bool = False,
        recovery_turns: int = 5,
        wrap_up_prompt: str | None = None,
        report_status_prompt: str | None = None,
    ) -> None:
        if recovery_turns < 1:
            raise ValueError("recovery_turns must be at least 1")
        self.agent_id = parse_agent_id(agent_id)
        self.max_turns_recovery = max_turns_recovery
        self.recovery_turns = recovery_turns
        self.prompts = RunnerPrompts(
            report_status=report_status_prompt or REPORT_STATUS_PROMPT,
            wrap_up=wrap_up_prompt or WRAP_UP_PROMPT,
        )

    def report_status(self, message: str, percentage: int | None = None) -> str:
        """Record a status report; returns the text to hand back to the model.

        An invalid report is not recorded, and the returned text tells the model why, so it
        can correct itself. Nothing here waits on I/O.
        """
        message = message.strip()
        if not message:
            return "Error: message must not be empty. Describe what you are doing."
        if percentage is not None and not 0 <= percentage <= 100:
            return f"Error: percentage must be a whole number from 0 to 100, got {percentage}."
        report(self.agent_id, message, percentage)
        return "Status recorded."

    async def run(self, agent: Any, input: Any, **kwargs: Any) -> Any:
        """Run `agent` on `input` and return the framework's result."""
        raise NotImplementedError

    # The checkpoint hook. A runner for another framework makes its runs durable with these
    # two: save at each turn boundary, and start from `load_checkpoint()` when it has one.

    async def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Store `state` (JSON data) as this run's checkpoint, replacing the last one.

        Durable across worker and Redis restarts (with Redis's append-only file); removed
        when the run completes or is canceled. Outside an agentexec worker, or in a task
        declared with `checkpoint=False`, it does nothing.

        Raises:
            CheckpointTooLargeError: `state` is over `AGENTEXEC_CHECKPOINT_MAX_BYTES`.
        """
        scope = current_run.get()
        if scope is not None and scope.checkpoint and scope.agent_id == str(self.agent_id):
            await checkpoints.save(scope, state)

    async def load_checkpoint(self) -> checkpoints.Stored | None:
        """The checkpoint this run left on an earlier delivery (`.state`, the dict given to
        `save_checkpoint`, with `v` added), with any approval decisions and the turns
        `ax.resume` gave it; None outside an agentexec worker."""
        scope = current_run.get()
        if scope is None or scope.agent_id != str(self.agent_id):
            return None
        return await checkpoints.load(scope.agent_id)
