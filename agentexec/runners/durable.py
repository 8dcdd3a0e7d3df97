"""Durable runs for the Agents SDK: turn checkpoints, resume, and stopping for approvals.

**Turn checkpoints.** Just before each model call after the first, the conversation the model
is about to be sent (the original input, every model response and every tool result so far)
is the run's checkpoint: everything a completed turn produced, and all the SDK needs to go
on (`Runner.run(agent, input=history)`, the SDK's own way to continue a conversation). It is
written before the call is made. When the model's response asks for tool calls, the response
is stored too, as soon as it arrives. A worker that dies at any point loses at most the turn
in progress: a new delivery resumes with the same history and, when the response had
arrived, replays it instead of calling the model again (`_ReplayModel`), so the tools of the
interrupted turn run again with the same call ids. At most one model call is repeated (the
one in flight), and no tool of a completed turn runs again. The user's code needs no determinism:
the task body runs again from its start, and `runner.run` picks up from the checkpoint.

**Approvals.** When the agent calls a tool declared with the SDK's
`@function_tool(needs_approval=True)`, the SDK stops the run with `interruptions`. The runner
then stores the SDK's own `RunState` (`to_json`), lists the pending calls, and raises
`RunSuspended`: the worker records WAITING and ends the delivery, so the run holds no slot.
Once every call is decided (`ax.approve`, `ax.reject`) the run is queued again; its next
delivery loads the state, applies the decisions (`RunState.approve`, `RunState.reject`) and
goes on.

Limits, documented in docs/durable-runs.md: the checkpoint is the conversation as the model
is sent it, so a `call_model_input_filter` that drops items resumes without them, and a run
that keeps its conversation on the server (`previous_response_id`, `conversation_id`)
resumes with what was last sent. After a handoff the run resumes with the agent that was
talking, found by name among the starting agent's handoffs (else the starting agent).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from agents import Agent, ItemHelpers, Model, ModelProvider, RunConfig, RunHooks, Usage
from agents.exceptions import MaxTurnsExceeded
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.models import get_default_model
from agents.run_state import RunState
from agents.tool_context import ToolContext
from openai.types.responses import Response, ResponseCompletedEvent, ResponseOutputItem
from pydantic import TypeAdapter

from agentexec import telemetry
from agentexec.eventlog.event import Event
from agentexec.exceptions import BudgetExceededError
from agentexec.pricing import prices
from agentexec.runners.base import BaseAgentRunner
from agentexec.runtime import get_runtime
from agentexec.states import EventKind, Status
from agentexec.tasks import budgets, checkpoints, ratelimits
from agentexec.tasks.checkpoints import RunScope, RunSuspended, current_run

logger = logging.getLogger(__name__)

Input = str | list[TResponseInputItem]


def idempotency_key(context: ToolContext[Any]) -> str:
    """A key for one tool call of one run: the run's id and the model's call id.

    A tool with side effects (an email, a payment, a row written) can pass it to the service it
    calls, so that a call repeated after a crash (tools of the interrupted turn run at least
    once) is recognized. Outside an agentexec worker the run id is `local`.
    """
    scope = current_run.get()
    return f"{scope.agent_id if scope else 'local'}:{context.tool_call_id}"


class DurableRun:
    """One `runner.run` call of a durable run: where it starts, its checkpoints, its end."""

    def __init__(self, runner: BaseAgentRunner, scope: RunScope, hooks: Any) -> None:
        self.runner = runner
        self.scope = scope
        self.user_hooks = hooks
        #: Turns completed before this delivery started.
        self.done = 0
        #: Model calls this delivery has started.
        self.calls = 0
        self.max_turns = 0
        #: The run config the SDK runs with, to name the model of each call.
        self.run_config: RunConfig | None = None
        #: What the run has spent so far, across its deliveries: tokens and cost.
        self.spent: dict[str, float] = {"tokens": 0, "cost": 0.0}
        #: The model of the call in progress, for a 429's hold.
        self.model: str | None = None
        #: Tokens to charge to rate-limited models.
        self.charges: list[tuple[str, int]] = []
        #: The last call's tokens and cost, for its owner's daily budget.
        self.owner_charge: tuple[int, float] | None = None
        #: Its OpenTelemetry spans, when tracing is on.
        self.spans = telemetry.RunSpans.start()

    @classmethod
    def of(cls, runner: BaseAgentRunner, hooks: Any = None) -> DurableRun | None:
        """The durable run of `runner`, when it runs in an agentexec worker for its own run."""
        scope = current_run.get()
        if scope is None or scope.agent_id != str(runner.agent_id):
            return None
        return cls(runner, scope, hooks)

    async def start(
        self, agent: Agent[Any], input: Input, max_turns: int, options: dict[str, Any]
    ) -> tuple[Agent[Any], Input | RunState[Any, Agent[Any]], int]:
        """The agent, input and turn limit to run with: from the checkpoint, if any. A stored
        model response of the turn it resumes at is replayed (`options["run_config"]`)."""
        self.max_turns = max_turns
        self.run_config = options.get("run_config")
        stored = await self.runner.load_checkpoint()
        if stored is None or (stored.state is None and stored.response is None):
            return agent, input, max_turns
        state = stored.state or {}
        self.done = int(state.get("turn", 0))
        spent = state.get("spent")
        if isinstance(spent, dict):
            self.spent = {"tokens": int(spent.get("tokens", 0)), "cost": spent.get("cost", 0.0)}
        turns = stored.max_turns or max(1, max_turns - self.done)
        self.max_turns = self.done + turns
        response = stored.response
        if response is not None and response.get("turn") != self.done + 1:
            response = None  # of an older turn: superseded
        replayed = ", replaying its model response" if response is not None else ""
        self.runner.report_status(
            f"Resumed at turn {self.done + 1} (delivery {self.scope.delivery}){replayed}"
        )
        given: Input | RunState[Any, Agent[Any]]
        if state.get("kind") == "state":
            run_state = await RunState.from_json(agent, state["state"])
            _decide(run_state, stored.decisions)
            run_state._max_turns = run_state._current_turn + turns
            current, given = agent, run_state
        else:
            current = _find_agent(agent, str(state.get("agent", ""))) or agent
            given = list(state["input"]) if "input" in state else input
        if response is not None and response.get("agent") == current.name:
            current = _replaying(current, options, _model_response(response))
            self.run_config = options.get("run_config")
        return current, given, turns

    def close_spans(self, error: BaseException | None = None) -> None:
        """End the run's open spans (when tracing), failed when `error` ended the run."""
        if self.spans is not None:
            self.spans.close(error)

    def hooks(self) -> RunHooks[Any]:
        """Hooks that checkpoint each turn, and call the user's own."""
        return _CheckpointHooks(self, self.user_hooks)

    async def turn_starts(self, agent: Agent[Any], input_items: list[TResponseInputItem]) -> None:
        """A model call is about to be made: every turn before it is complete."""
        self.calls += 1
        if self.spans is not None:
            self.spans.turn_starts(self.done + self.calls, agent.name)
        if self.calls > 1 and self.scope.checkpoint:  # else nothing new to keep
            await self.runner.save_checkpoint(
                {
                    "kind": "history",
                    "turn": self.done + self.calls - 1,
                    "agent": agent.name,
                    "input": input_items,
                    "max_turns": self.max_turns,
                    "spent": self.spent,
                }
            )
        self.check_budget()

    async def wait_for_capacity(self, agent: Agent[Any]) -> None:
        """Wait for the model's turn under the shared rate limits (`AGENTEXEC_RATE_LIMITS`)."""
        self.model = _model_name(agent, self.run_config)
        if ratelimits.limit_for(self.model) is not None:
            await ratelimits.before_call(checkpoints.async_client(), self.model)
        if self.spans is not None:
            self.spans.model_starts(self.model)

    async def refused(self, exc: BaseException) -> None:
        """A 429 from the provider: slow every worker's calls to that model down."""
        if self.model is None or not _is_rate_limit(exc):
            return
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        try:
            retry_after = float(headers.get("retry-after", 0) or 0)
        except (TypeError, ValueError):
            retry_after = 0.0
        await ratelimits.provider_refused(checkpoints.async_client(), self.model, retry_after)

    def check_budget(self) -> None:
        """Stop the run, at this turn boundary, when it spent more than its budget."""
        for what in ("tokens", "cost"):
            limit = self.scope.budget.get(what)
            if limit is not None and self.spent[what] > limit:
                raise BudgetExceededError(what, self.spent[what], limit)

    async def turn_ends(self, agent: Agent[Any], response: ModelResponse) -> None:
        """The model answered: record its usage (and charge the shared token limits); keep
        an answer that calls tools, to replay after a crash."""
        self.record_usage(agent, response)
        # The shared token buckets and the owner's day, in one round trip.
        owner = self.scope.request.get("owner")
        if self.charges or (self.owner_charge is not None and owner):
            pipe = checkpoints.async_client().pipeline(transaction=False)
            while self.charges:
                ratelimits.charge(pipe, *self.charges.pop())
            # Counted whenever a check made the owner's day (the API's settings may differ).
            if self.owner_charge is not None and owner:
                budgets.add_spent(pipe, str(owner), *self.owner_charge)
            await pipe.execute()
        self.owner_charge = None
        if not self.scope.checkpoint or not any(_acts(item) for item in response.output):
            return  # a final answer: the run ends at once, nothing to replay
        output = [_dump(item) for item in response.output]
        turn = self.done + self.calls
        await checkpoints.save_response(
            self.scope, {"turn": turn, "agent": agent.name, "output": output}
        )

    def record_usage(self, agent: Agent[Any], response: ModelResponse) -> None:
        """The call's usage, as a usage event of the run (a replayed response has none)."""
        usage = response.usage
        if not usage.requests and not usage.input_tokens and not usage.output_tokens:
            if self.spans is not None:
                self.spans.model_ends({"replayed": 1})
            return
        model = _model_name(agent, self.run_config)
        cached = usage.input_tokens_details.cached_tokens or 0
        reasoning = usage.output_tokens_details.reasoning_tokens or 0
        table = prices()
        price = table.price(model)
        cost = price.cost(usage.input_tokens, cached, usage.output_tokens) if price else None
        data: dict[str, Any] = {
            "model": model,
            "requests": usage.requests,
            "input": usage.input_tokens,
            "output": usage.output_tokens,
            "cached": cached,
            "reasoning": reasoning,
        }
        if cost is not None:
            data["cost"] = cost
            data["prices"] = table.version
        if self.spans is not None:
            self.spans.model_ends({"input_tokens": usage.input_tokens,
                                   "output_tokens": usage.output_tokens})  # fmt: skip
        self.spent["tokens"] += usage.input_tokens + usage.output_tokens
        self.owner_charge = (usage.input_tokens + usage.output_tokens, cost or 0.0)
        self.spent["cost"] += cost or 0.0
        if ratelimits.limit_for(model) is not None:
            self.charges.append((model, usage.input_tokens + usage.output_tokens))
        spent = f", ${cost:.4f}" if cost is not None else ""
        message = f"{model}: {usage.input_tokens:,} in / {usage.output_tokens:,} out tokens{spent}"
        runtime = get_runtime()
        runtime.appender.submit(
            Event(
                uuid.UUID(self.scope.agent_id),
                Status.RUNNING,
                message,
                kind=EventKind.USAGE,
                worker=runtime.worker,
                data=data,
            )
        )

    async def at_turn_limit(self, exc: MaxTurnsExceeded) -> None:
        """Keep the whole conversation, so `ax.resume` goes on from the last turn."""
        data = exc.run_data
        if data is None or not self.scope.checkpoint:
            return
        history: list[TResponseInputItem] = (
            [{"role": "user", "content": data.input}]
            if isinstance(data.input, str)
            else list(data.input)
        )
        history += [item.to_input_item() for item in data.new_items]
        await self.runner.save_checkpoint(
            {
                "kind": "history",
                "turn": self.done + self.calls,
                "agent": data.last_agent.name,
                "input": history,
                "max_turns": self.max_turns,
                "spent": self.spent,
            }
        )

    async def finished(self, result: Any) -> None:
        """Stop the run for its approvals, if the SDK interrupted it for some."""
        interruptions = list(getattr(result, "interruptions", None) or ())
        if not interruptions:
            return
        said = ItemHelpers.text_message_outputs(result.new_items).strip() or None
        approvals = [
            {
                "call_id": str(getattr(item.raw_item, "call_id", None) or item.raw_item.id),
                "tool": item.tool_name or "",
                "arguments": str(getattr(item.raw_item, "arguments", "") or ""),
                "agent_message": said,
            }
            for item in interruptions
        ]
        state = result.to_state()
        await checkpoints.suspend(
            self.scope,
            {
                "kind": "state",
                "turn": self.done + self.calls,
                "agent": result.last_agent.name,
                "state": state.to_json(),
                "max_turns": self.max_turns,
                "spent": self.spent,
            },
            approvals,
        )
        raise RunSuspended(self.scope.agent_id, approvals)


class _CheckpointHooks(RunHooks[Any]):
    """Checkpoints at each turn boundary; every callback also goes to the user's hooks."""

    def __init__(self, run: DurableRun, inner: Any) -> None:
        self.run = run
        self.inner = inner

    async def on_llm_start(self, context: Any, agent: Any, system_prompt: Any, items: Any) -> None:
        await self.run.turn_starts(agent, items)
        await self.run.wait_for_capacity(agent)
        if self.inner is not None:
            await self.inner.on_llm_start(context, agent, system_prompt, items)

    async def on_llm_end(self, context: Any, agent: Any, response: Any) -> None:
        await self.run.turn_ends(agent, response)
        if self.inner is not None:
            await self.inner.on_llm_end(context, agent, response)

    async def on_agent_start(self, context: Any, agent: Any) -> None:
        if self.inner is not None:
            await self.inner.on_agent_start(context, agent)

    async def on_agent_end(self, context: Any, agent: Any, output: Any) -> None:
        if self.inner is not None:
            await self.inner.on_agent_end(context, agent, output)

    async def on_handoff(self, context: Any, from_agent: Any, to_agent: Any) -> None:
        if self.inner is not None:
            await self.inner.on_handoff(context, from_agent, to_agent)

    async def on_tool_start(self, context: Any, agent: Any, tool: Any) -> None:
        if self.run.spans is not None:
            self.run.spans.tool_starts(_call_id(context, tool), str(tool.name))
        if self.inner is not None:
            await self.inner.on_tool_start(context, agent, tool)

    async def on_tool_end(self, context: Any, agent: Any, tool: Any, result: Any) -> None:
        if self.run.spans is not None:
            self.run.spans.tool_ends(_call_id(context, tool))
        if self.inner is not None:
            await self.inner.on_tool_end(context, agent, tool, result)


_OUTPUT_ITEM: TypeAdapter[Any] = TypeAdapter(ResponseOutputItem)


def _call_id(context: Any, tool: Any) -> str:
    """The id of the tool call a hook is about (the SDK's `ToolContext.tool_call_id`)."""
    return str(getattr(context, "tool_call_id", None) or f"{tool.name}:{id(context)}")


def _is_rate_limit(exc: BaseException) -> bool:
    """Whether `exc` is the provider's 429 (`openai.RateLimitError`)."""
    return any(
        cls.__module__.startswith("openai") and cls.__name__ == "RateLimitError"
        for cls in type(exc).__mro__
    )


def _model_name(agent: Agent[Any], config: RunConfig | None) -> str:
    """The name of the model a call of `agent` went to, as the SDK picks it."""
    for model in (config.model if config is not None else None, agent.model):
        if isinstance(model, str) and model:
            return model
        if isinstance(model, _ReplayModel):
            model = model.inner
        if isinstance(model, Model):
            name = getattr(model, "model", None)
            return name if isinstance(name, str) and name else type(model).__name__
    return get_default_model()


def _acts(item: Any) -> bool:
    """Whether a response item asks for something to be done (a tool call, a handoff)."""
    kind = item.get("type") if isinstance(item, dict) else getattr(item, "type", None)
    return isinstance(kind, str) and kind.endswith("_call")


def _dump(item: Any) -> Any:
    return item if isinstance(item, dict) else item.model_dump(mode="json", exclude_none=True)


def _model_response(stored: dict[str, Any]) -> ModelResponse:
    output = [_OUTPUT_ITEM.validate_python(item) for item in stored.get("output", ())]
    return ModelResponse(output=output, usage=Usage(), response_id=None)


def _replaying(agent: Agent[Any], options: dict[str, Any], response: ModelResponse) -> Agent[Any]:
    """`agent` (and `options["run_config"]`) set to answer its next model call with
    `response`, then to call its model as before. Wraps what the SDK would call: the run
    config's model, the agent's model, or the provider (keeping a model given by name, so
    the SDK picks the same settings for it)."""
    config: RunConfig = options.get("run_config") or RunConfig()
    if isinstance(config.model, Model):
        options["run_config"] = dataclasses.replace(
            config, model=_ReplayModel(config.model, response)
        )
        return agent
    if isinstance(config.model, str) or not isinstance(agent.model, Model):
        provider = _ReplayProvider(config.model_provider, response)
        options["run_config"] = dataclasses.replace(config, model_provider=provider)
        return agent
    return agent.clone(model=_ReplayModel(agent.model, response))


class _ReplayModel(Model):
    """Answers its first call with a stored response (no request, no usage), then delegates."""

    def __init__(self, inner: Model, response: ModelResponse) -> None:
        self.inner = inner
        self.response: ModelResponse | None = response

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        response, self.response = self.response, None
        if response is not None:
            return response
        return await self.inner.get_response(*args, **kwargs)

    async def stream_response(
        self, *args: Any, **kwargs: Any
    ) -> AsyncIterator[TResponseStreamEvent]:
        response, self.response = self.response, None
        if response is None:
            async for event in self.inner.stream_response(*args, **kwargs):
                yield event
            return
        completed = Response(
            id="replayed",
            created_at=0,
            model="replayed",
            object="response",
            output=response.output,
            parallel_tool_calls=True,
            tool_choice="auto",
            tools=[],
        )
        yield ResponseCompletedEvent(
            type="response.completed", response=completed, sequence_number=0
        )

    async def close(self) -> None:
        await self.inner.close()


class _ReplayProvider(ModelProvider):
    """A provider whose first model answers its first call with a stored response."""

    def __init__(self, inner: ModelProvider, response: ModelResponse) -> None:
        self.inner = inner
        self.response: ModelResponse | None = response

    def get_model(self, model_name: str | None) -> Model:
        model = self.inner.get_model(model_name)
        response, self.response = self.response, None
        return _ReplayModel(model, response) if response is not None else model

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()


def _decide(state: RunState[Any, Agent[Any]], decisions: list[dict[str, Any]]) -> None:
    """Apply the people's decisions to the interruptions of a stored RunState."""
    by_call = {str(d.get("call_id")): d for d in decisions}
    for item in state.get_interruptions():
        call_id = str(getattr(item.raw_item, "call_id", None) or getattr(item.raw_item, "id", ""))
        decision = by_call.get(call_id)
        if decision is None:
            continue  # undecided: the SDK stops for it again
        if decision.get("approved"):
            state.approve(item)
        else:
            state.reject(item, rejection_message=decision.get("message") or None)


def _find_agent(start: Agent[Any], name: str) -> Agent[Any] | None:
    """The agent called `name` among `start` and the agents its handoffs reach."""
    for agent in _reachable(start, set()):
        if agent.name == name:
            return agent
    return None


def _reachable(agent: Agent[Any], seen: set[int]) -> Iterator[Agent[Any]]:
    if id(agent) in seen:
        return
    seen.add(id(agent))
    yield agent
    for handoff in agent.handoffs:
        if isinstance(handoff, Agent):
            yield from _reachable(handoff, seen)
