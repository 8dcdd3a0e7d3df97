"""Agent tasks: Celery tasks whose body is an `async def` agent, validated where they are sent.

An `AgentTask` is the producer's and the worker's shared view of a task: its context model,
its validation, its publish (`apply_async`, `.delay`). Running its body is the worker's
(`agentexec.worker.execution`): the task hands the run to the worker that admitted it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol, cast

import redis
from celery import Celery, Task
from celery.result import AsyncResult
from kombu.exceptions import OperationalError as KombuOperationalError
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from sqlalchemy.exc import SQLAlchemyError

from agentexec import telemetry
from agentexec.config import get_settings, redact
from agentexec.exceptions import (
    BrokerUnavailableError,
    ContextTooLargeError,
    InvalidContextError,
    UnknownTaskError,
    describe,
)
from agentexec.ids import parse_agent_id, parse_owner
from agentexec.runtime import get_runtime
from agentexec.tasks.app import app as default_app
from agentexec.tasks.budgets import check_owner_budget, parse_budget
from agentexec.tasks.queued import BUDGET_HEADER, OWNER_HEADER
from agentexec.tasks.queues import Priority, queue_name
from agentexec.tasks.results import get_result

AgentFunction = Callable[[uuid.UUID, Any], Coroutine[Any, Any, Any]]


class Execute(Protocol):
    """How a worker runs an agent task's body: `execute(task, args, kwargs) -> result`."""

    def __call__(self, task: AgentTask, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...


class AgentResult(AsyncResult[Any]):
    """Celery's AsyncResult, named by the agent id that also names the activity row."""

    @property
    def agent_id(self) -> uuid.UUID:
        """The agent id: the Celery task id as a UUID."""
        return uuid.UUID(str(self.id))

    async def get_result(self, timeout: float = 30.0) -> Any:
        """The task's return value, awaited without blocking the loop. See `ax.get_result`."""
        return await get_result(self.id, timeout=timeout)


class AgentTask(Task[Any, Any]):
    """A Celery task that validates its context in the producer and runs an agent coroutine.

    The message carries one argument: the context, dumped to JSON. The task id is the agent id.
    """

    #: The pydantic model the context validates against, from the function's annotation.
    context_type: type[BaseModel] = BaseModel
    #: The user's `async def f(agent_id, context)`.
    agent_fn: AgentFunction
    #: Marks agentexec's tasks for the activity recorders (`queued.AGENT_MARK`).
    agentexec_agent = True
    typing = False

    def validate_context(self, context: Any) -> BaseModel:
        """The context as an instance of `context_type`, or InvalidContextError."""
        if isinstance(context, BaseModel) and not isinstance(context, self.context_type):
            context = context.model_dump()
        try:
            return self.context_type.model_validate(context)
        except ValidationError as exc:
            raise InvalidContextError(self.name, _short(exc)) from exc

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        *,
        priority: Priority | str | int | None = None,
        owner: str | None = None,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        **options: Any,
    ) -> AgentResult:
        """Validate the context, record the run as QUEUED, pick the queue and publish.

        Args:
            args: `(context,)`, where the context is a model or a dict.
            kwargs: `{"context": context}`, as an alternative to `args`; an `owner` here is
                the run's owner (`task.delay(context, owner="acme")`).
            task_id: the agent id; a new UUID when omitted.
            priority: `Priority.HIGH` or `Priority.LOW` (the default) picks the queue; an int
                is passed on to Celery as a message priority.
            owner: whom the run belongs to: reads through a router scoped by owner see only
                their own runs.
            max_tokens: the run's token budget (input and output), instead of the task's
                `max_tokens`: past it the run stops at the next turn boundary, ERROR.
            max_cost: the run's cost budget (needs `AGENTEXEC_PRICES`), likewise.
            options: anything else `Task.apply_async` takes.

        Raises:
            InvalidContextError: the context does not validate. Nothing is sent.
            InvalidRequestError: the owner is not a string of 1 to 255 printable characters.
            ActivityStoreError: the activity database is misconfigured. Nothing is sent.
            BrokerUnavailableError: the broker did not take the run. Nothing is recorded.
            BudgetExceededError: the owner has spent its daily budget. Nothing is sent.
        """
        kwargs = dict(kwargs or {})
        owner = parse_owner(kwargs.pop("owner", owner))
        budget = parse_budget(
            kwargs.pop("max_tokens", max_tokens), kwargs.pop("max_cost", max_cost)
        )
        # The caller's trace context, so its trace goes on into the worker (when tracing).
        headers = {**telemetry.headers(), **dict(options.get("headers") or {})}
        if owner is not None:
            headers[OWNER_HEADER] = owner
            check_owner_budget(owner)
        if budget:
            headers[BUDGET_HEADER] = budget
        if headers:
            options["headers"] = headers
        context = validate_for(self, args, kwargs)
        payload = context.model_dump(mode="json")
        encoded, limit = to_json(payload), get_settings().max_context_bytes
        if len(encoded) > limit:
            raise ContextTooLargeError(self.name, len(encoded), limit)
        # What Flower and the worker's log show as the arguments. Given here, from the JSON
        # already made for the size check, Celery skips its own `saferepr` of the context
        # (a fifth of the cost of a publish).
        options.setdefault("argsrepr", _args_repr(encoded))
        options.setdefault("kwargsrepr", "{}")
        agent_id = parse_agent_id(task_id) if task_id is not None else uuid.uuid4()
        if priority is None or isinstance(priority, str):
            options.setdefault("queue", queue_name(priority or Priority.LOW, get_settings()))
        else:
            options["priority"] = priority
        try:
            get_runtime().ready_engine()  # a misconfigured database raises before anything is sent
        except SQLAlchemyError:
            pass  # unreachable: the run goes on, its activity waits in the event log
        try:
            result = super().apply_async(
                (payload,),
                {},
                task_id=str(agent_id),
                producer=producer,
                link=link,
                link_error=link_error,
                shadow=shadow,
                **options,
            )
        except (OSError, KombuOperationalError, redis.RedisError) as exc:
            raise BrokerUnavailableError(
                redact(str(self.app.conf.broker_url)), describe(exc)
            ) from exc
        return cast(AgentResult, result)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AgentResult:
        """The result handle for `task_id`."""
        return AgentResult(
            task_id, backend=self.backend, task_name=self.name, app=self.app, **kwargs
        )

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Worker side: the worker that admitted this delivery runs the agent.

        Its `task_prerun` handler hands the request its `execute` (`agentexec.worker`): the
        context is validated and the coroutine runs on the worker's shared loop.

        Raises:
            RuntimeError: not in an agentexec worker (eager mode, or a direct call).
        """
        execute: Execute | None = getattr(self.request, "agentexec_execute", None)
        if execute is None:
            raise RuntimeError(
                f"agent task {self.name!r} runs in an agentexec worker "
                "(`celery -A agentexec worker`, `agentexec worker` or `pool.run()`); "
                "eager mode and direct calls are not supported"
            )
        return execute(self, args, kwargs)


def get_agent_task(name: str, app: Celery | None = None) -> AgentTask:
    """The agent task registered as `name`, or UnknownTaskError."""
    registry = (app or default_app).tasks
    task = registry.get(name)
    if not isinstance(task, AgentTask):
        known = [n for n, t in registry.items() if isinstance(t, AgentTask)]
        raise UnknownTaskError(name, known)
    return task


def validate_for(task: AgentTask, args: Any, kwargs: Mapping[str, Any] | None) -> BaseModel:
    """The context in a message's arguments, validated against `task`'s model."""
    return task.validate_context(_single_context(task.name, args, kwargs))


def _args_repr(encoded: bytes, limit: int = 1024) -> str:
    """`(<context JSON>,)`, shortened to about `limit` characters as Celery's own repr is."""
    text = encoded[:limit].decode(errors="ignore")
    return f"({text},)" if len(encoded) <= limit else f"({text}...,)"


def _single_context(name: str, args: Any, kwargs: Mapping[str, Any] | None) -> Any:
    args = tuple(args or ())
    kwargs = dict(kwargs or {})
    if len(args) == 1 and not kwargs:
        return args[0]
    if not args and set(kwargs) == {"context"}:
        return kwargs["context"]
    raise InvalidContextError(
        name, f"expected exactly one context argument, got args={args!r} kwargs={kwargs!r}"
    )


def _short(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'context'}: {err['msg']}" for err in exc.errors()
    )
