"""`ax.Pipeline`: ordered, typed steps that run on workers, each as a run of its own.

    pipeline = ax.Pipeline(pool)

    class Research(pipeline.Base):
        @pipeline.step(0)
        async def plan(self, topic: Topic) -> Plan: ...

        @pipeline.step(1)
        async def research(self, plan: Plan) -> ax.Group[Finding]:
            return ax.group(*(ax.call("researcher", {"question": q}) for q in plan.questions))

        @pipeline.step(2)
        async def write(self, findings: list[Finding]) -> Report: ...

    run = await pipeline.enqueue(Topic(...))   # returns at once; the workers do the rest
    report = await ax.get_result(run.agent_id)

The API is upstream agentexec's (`Pipeline(pool)`, `pipeline.Base`, `@pipeline.step(order)`,
tuple returns spread over the next step's parameters, type flow checked when the class is
defined), but the pipeline does not run in the caller's process: every step is an agent task
of its own, and the worker that ends one step publishes the next
(`agentexec.tasks.composition`). A step that returns `ax.group(...)` (or a list of
`ax.call(...)`) fans out: each call is a run of its own, and the next step gets their results
as a list, in order, once all are in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import re
import typing
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, create_model

from agentexec.ids import parse_owner
from agentexec.tasks import composition
from agentexec.tasks.checkpoints import current_run
from agentexec.tasks.queues import Priority, parse_priority
from agentexec.tasks.task import AgentResult, get_agent_task
from agentexec.tasks.worker_pool import WorkerPool

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Call:
    """One run a step's fan-out starts: `ax.call(task_name, context, **options)`."""

    task: str
    context: BaseModel | Mapping[str, Any]
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


class Group(Generic[T]):
    """The runs of a step's fan-out (`ax.group(...)`); annotate the step `-> ax.Group[X]` to
    have the next step's `list[X]` parameter checked."""

    def __init__(self, calls: tuple[Call, ...]) -> None:
        self.calls = calls


def call(task: str, context: BaseModel | Mapping[str, Any], **options: Any) -> Call:
    """A run for a step to fan out to: the agent task `task` with `context` (validated when
    the step returns it); `options` as for `ax.enqueue` (`priority`)."""
    return Call(task, context, options)


def group(*calls: Call) -> Group[Any]:
    """The runs a step fans out to; the next step gets their results, in this order."""
    return Group(calls)


@dataclasses.dataclass
class _Step:
    name: str
    order: Any
    handler: Callable[..., Any]
    params: dict[str, Any]
    returns: Any


class Pipeline:
    """Ordered, typed steps that run on workers (see the module's doc).

    Args:
        pool: the worker pool whose app runs the steps.
        name: the pipeline's task name; by default the class's, in snake case.
    """

    def __init__(self, pool: WorkerPool, *, name: str | None = None) -> None:
        self._pool = pool
        self._name = name
        self._steps: dict[str, _Step] = {}
        self._class: type | None = None
        self._spec: composition.PipelineSpec | None = None

    @property
    def name(self) -> str:
        if self._name:
            return self._name
        if self._class is None:
            raise RuntimeError("define the pipeline's class first: class X(pipeline.Base)")
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self._class.__name__).lower()

    @property
    def Base(self) -> type:
        """The base class of the pipeline's class: subclassing it defines the pipeline."""
        pipeline = self

        class PipelineBase:
            _pipeline: ClassVar[Pipeline] = pipeline

            def __init_subclass__(cls, **kwargs: Any) -> None:
                super().__init_subclass__(**kwargs)
                pipeline._define(cls)

            @property
            def agent_id(self) -> uuid.UUID:
                """The id of the step's own run, in a step's body: what its runner needs,
                `ax.OpenAIRunner(agent_id=self.agent_id)`."""
                scope = current_run.get()
                if scope is None:
                    raise RuntimeError("agent_id is known only inside a step's run")
                return uuid.UUID(scope.agent_id)

        return PipelineBase

    def step(
        self, order: Any, description: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Make a method a step; steps run by `order` (any sortable value)."""

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            hints = typing.get_type_hints(fn)
            params = {
                name: hints.get(name, Any)
                for name in inspect.signature(fn).parameters
                if name != "self"
            }
            self._steps[fn.__name__] = _Step(fn.__name__, order, fn, params, hints.get("return"))
            return fn

        return decorator

    def _sorted(self) -> list[_Step]:
        return sorted(self._steps.values(), key=lambda s: s.order)

    def _define(self, cls: type) -> None:
        """The class is defined: check the type flow, register each step as an agent task."""
        self._class = cls
        steps = self._sorted()
        if not steps:
            raise TypeError(f"pipeline {cls.__name__} has no steps (@pipeline.step(order))")
        _check_flow(steps)
        instance = cls()
        specs = []
        for index, step in enumerate(steps):
            task = f"{self.name}.{step.name}"
            model = _input_model(cls, step)
            self._pool.task(task)(_step_body(self.name, index, step, instance, model))
            spreads = typing.get_origin(step.returns) is tuple
            specs.append(composition.StepSpec(step.name, task, tuple(step.params), spreads))
        self._spec = composition.PipelineSpec(self.name, tuple(specs))
        composition.register(self._spec)

    async def enqueue(
        self,
        context: BaseModel | Mapping[str, Any],
        *,
        owner: str | None = None,
        priority: Priority = Priority.LOW,
    ) -> AgentResult:
        """Queue a run of the pipeline and return at once: its handle has the pipeline run's
        own id (`ax.get_result`, `ax.cancel`, `ax.activity.detail` take it)."""
        spec = self._defined()
        first = get_agent_task(spec.steps[0].task)
        param = spec.steps[0].params[0]
        model = first.validate_context({param: context})
        input = model.model_dump(mode="json")
        level = parse_priority(priority)
        pipeline_id = await asyncio.to_thread(
            composition.start, spec, input, parse_owner(owner), level.value
        )
        return AgentResult(pipeline_id, app=first.app, task_name=spec.name)

    async def run(self, context: BaseModel) -> Any:
        """Run the steps here, in this process (upstream's inline mode): a fan-out's runs
        still go to the workers, and are waited for."""
        from agentexec.client.enqueue import enqueue
        from agentexec.tasks.results import gather

        self._defined()
        instance = self._class() if self._class is not None else None
        value: Any = context
        steps = self._sorted()
        for index, step in enumerate(steps):
            kwargs = _bind(step, value, steps[index - 1] if index else None)
            value = await _call(step.handler, instance, kwargs)
            if isinstance(value, Group | list) and _calls(value):
                runs = [await enqueue(c.task, c.context, **c.options) for c in _calls(value)]
                value = await gather(*runs, timeout=3600)
        return value

    def _defined(self) -> composition.PipelineSpec:
        if self._spec is None:
            raise RuntimeError("define the pipeline's class first: class X(pipeline.Base)")
        return self._spec


def _calls(value: Any) -> list[Call]:
    items = list(value.calls) if isinstance(value, Group) else value
    return items if items and all(isinstance(i, Call) for i in items) else []


def _bind(step: _Step, value: Any, previous: _Step | None) -> dict[str, Any]:
    names = list(step.params)
    if previous is not None and typing.get_origin(previous.returns) is tuple:
        return dict(zip(names, value, strict=False))
    return {names[0]: value} if names else {}


async def _call(handler: Callable[..., Any], instance: Any, kwargs: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(handler):
        return await handler(instance, **kwargs)
    return await asyncio.to_thread(handler, instance, **kwargs)


def _input_model(cls: type, step: _Step) -> type[BaseModel]:
    """The context model of a step's task: one field per parameter."""
    fields: dict[str, Any] = {name: (kind, ...) for name, kind in step.params.items()}
    return create_model(f"{cls.__name__}_{step.name}_input", **fields)


def _step_body(
    pipeline: str, index: int, step: _Step, instance: Any, model: type[BaseModel]
) -> Callable[..., Any]:
    """The agent task function of one step."""

    async def body(agent_id: uuid.UUID, context: BaseModel) -> Any:
        scope = current_run.get()
        parent = scope.request.get("parent") if scope is not None else None
        if not isinstance(parent, dict):
            raise RuntimeError(
                f"step {step.name!r} of pipeline {pipeline!r} runs only as part of a "
                "pipeline run (pipeline.enqueue)"
            )
        pipeline_id = str(parent["id"])
        kept = await composition.kept_output(pipeline_id, index)
        if kept is not None:
            return kept  # it finished before its worker was lost: never run twice
        await asyncio.to_thread(composition.step_started, parent)
        kwargs = {name: getattr(context, name) for name in step.params}
        value = await _call(step.handler, instance, kwargs)
        calls = _calls(value) if isinstance(value, Group | list) else []
        if calls:
            await _fan_out(parent, calls, scope.request.get("owner") if scope else None)
            value = {composition.FANOUT: len(calls)}
        await composition.keep_output(pipeline_id, index, value)
        return value

    body.__annotations__ = {"agent_id": uuid.UUID, "context": model, "return": Any}
    body.__name__ = body.__qualname__ = f"{pipeline}_{step.name}"
    return body


async def _fan_out(parent: dict[str, Any], calls: list[Call], owner: str | None) -> None:
    """Publish a step's fan-out: each call a run of its own, carrying the pipeline, owned
    like it."""
    from agentexec.client.enqueue import enqueue

    for c in calls:
        get_agent_task(c.task).validate_context(c.context)  # all valid, or none published
    children = await asyncio.to_thread(composition.fan_out_headers, parent, len(calls))
    await asyncio.gather(
        *(
            enqueue(c.task, c.context, agent_id=child, owner=owner, headers=headers, **c.options)
            for c, (child, headers) in zip(calls, children, strict=True)
        )
    )


def _check_flow(steps: list[_Step]) -> None:
    """Each step's output fits the next step's parameters; raised when the class is defined."""
    for step, following in itertools.pairwise(steps):
        if step.returns is None:
            continue
        origin = typing.get_origin(step.returns)
        if origin is tuple:
            given = list(typing.get_args(step.returns))
        elif origin is Group:
            (item,) = typing.get_args(step.returns) or (Any,)
            given = [list[item]]  # type: ignore[valid-type]
        else:
            given = [step.returns]
        wanted = list(following.params.values())
        if len(given) != len(wanted):
            raise TypeError(
                f"step {step.name!r} returns {len(given)} value(s), but step "
                f"{following.name!r} takes {len(wanted)} parameter(s)"
            )
        for got, want in zip(given, wanted, strict=True):
            if not _fits(got, want):
                raise TypeError(
                    f"step {step.name!r} returns {_name(got)}, but step {following.name!r} "
                    f"takes {_name(want)}"
                )
    last = steps[-1]
    if typing.get_origin(last.returns) is tuple:
        raise TypeError(f"the last step {last.name!r} returns a tuple; return one value")


def _fits(got: Any, want: Any) -> bool:
    if want is Any or got is Any or got == want:
        return True
    if typing.get_origin(got) is list and typing.get_origin(want) is list:
        return _fits(typing.get_args(got)[0], typing.get_args(want)[0])
    return inspect.isclass(got) and inspect.isclass(want) and issubclass(got, want)


def _name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin is not None:
        return f"{_name(origin)}[{', '.join(_name(a) for a in typing.get_args(kind))}]"
    return getattr(kind, "__name__", None) or str(kind)
