"""Composed runs: pipelines whose steps are runs of their own, advanced by the workers.

A pipeline run P has an activity row of its own but no message: its steps are. Step i is an
agent task run with the id `uuid5(P, "i")`, and carries P in its message headers
(`PARENT_HEADER`). When a step's run ends, the worker that ran it publishes what comes next
(`step_finished`): the next step, with this one's output as its input; or, for the last
step, P's result, stored in the result backend, so `ax.get_result(P)` reads it like any
run's. A step that fans out publishes its children (`uuid5(P, "i.k")`, each also carrying P)
and returns; the worker that ends the last child publishes the next step with every child's
result, in order (a chord, counted in Redis).

Exactly once, as far as a worker crash allows: a step's output is kept in Redis before
anything is published, and a step delivered again after it finished returns the kept output
without running its body; publishing the next step again is harmless, as it has a fixed id
and a run that already finished is never run again (`agentexec.worker.delivery`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from typing import Any

from celery import states
from pydantic_core import to_jsonable_python

from agentexec.config import get_settings
from agentexec.eventlog.event import Event
from agentexec.exceptions import ActivityStoreError
from agentexec.runtime import get_runtime
from agentexec.states import EventKind, Status
from agentexec.tasks.app import app
from agentexec.tasks.checkpoints import async_client
from agentexec.tasks.queued import PARENT_HEADER
from agentexec.tasks.task import get_agent_task

logger = logging.getLogger(__name__)

__all__ = ["PARENT_HEADER", "PipelineSpec", "StepSpec"]
#: What a step that fanned out returns, in place of an output: its children's count.
FANOUT = "__agentexec_fanout__"


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """One step of a pipeline, as the workers need it."""

    name: str
    #: The agent task that runs it.
    task: str
    #: Its parameters, in order: the previous step's output is bound to them.
    params: tuple[str, ...]
    #: Whether it returns a tuple, spread over the next step's parameters.
    spreads: bool = False


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    name: str
    steps: tuple[StepSpec, ...]


#: Every pipeline this process defined, by name.
_pipelines: dict[str, PipelineSpec] = {}


def register(spec: PipelineSpec) -> None:
    _pipelines[spec.name] = spec


def child_id(parent: str, position: str) -> str:
    """The fixed id of a composed run's child at `position` ("2", or "2.3" in a fan-out)."""
    return str(uuid.uuid5(uuid.UUID(parent), position))


def _client() -> Any:
    return get_runtime().events.client()


def _keys() -> Any:
    return get_settings().keys


def _ttl() -> int:
    return int(get_settings().result_expires)


def start(spec: PipelineSpec, input: dict[str, Any], owner: str | None, priority: Any) -> str:
    """Record a pipeline run (QUEUED) and publish its first step; returns its id."""
    pipeline_id = str(uuid.uuid4())
    state = {"pipeline": spec.name, "owner": owner or "", "priority": str(priority)}
    key = _keys().composed(pipeline_id)
    with _client().pipeline() as pipe:
        pipe.hset(key, mapping=state)
        pipe.expire(key, _ttl())
        pipe.execute()
    _record(pipeline_id, Status.QUEUED, "Pipeline queued", task=spec.name, owner=owner,
            kind=EventKind.QUEUED)  # fmt: skip
    _publish_step(spec, pipeline_id, 0, input, state)
    return pipeline_id


def is_composed(agent_id: str) -> bool:
    """Whether `agent_id` is a pipeline run."""
    return bool(_client().exists(_keys().composed(agent_id)))


def children(agent_id: str) -> list[str]:
    """The runs a pipeline run started so far."""
    found = _client().smembers(_keys().composed(agent_id) + ".children")
    return sorted(m.decode() for m in found)


def end(agent_id: str, how: str) -> bool:
    """Mark a pipeline run ended (`"canceled"`, `"error"`, `"complete"`); False when it had
    already ended. Nothing more of it is published once it has."""
    return bool(_client().hsetnx(_keys().composed(agent_id), "ended", how))


def _adopt(parent_id: str, *child_ids: str) -> None:
    key = _keys().composed(parent_id) + ".children"
    with _client().pipeline() as pipe:
        pipe.sadd(key, *child_ids)
        pipe.expire(key, _ttl())
        pipe.execute()


def _publish_step(
    spec: PipelineSpec, pipeline_id: str, index: int, input: dict[str, Any], state: dict[str, Any]
) -> None:
    step = spec.steps[index]
    parent = {"id": pipeline_id, "index": index, "step": step.name, "position": str(index)}
    step_id = child_id(pipeline_id, str(index))
    _adopt(pipeline_id, step_id)
    get_agent_task(step.task).apply_async(
        (input,),
        task_id=step_id,
        owner=state.get("owner") or None,
        priority=state.get("priority") or None,
        headers={PARENT_HEADER: parent},
    )


def fan_out_headers(parent: dict[str, Any], count: int) -> list[tuple[str, dict[str, Any]]]:
    """The ids and headers of the `count` children of a step's fan-out, adopted by the
    pipeline (before they are published, so that a cancel finds them)."""
    pipeline_id, index = str(parent["id"]), int(parent["index"])
    found = []
    for k in range(count):
        position = f"{index}.{k}"
        header = {**parent, "position": position, "join": {"position": k, "of": count}}
        found.append((child_id(pipeline_id, position), {PARENT_HEADER: header}))
    if found:
        _adopt(pipeline_id, *(i for i, _ in found))
    return found


async def kept_output(pipeline_id: str, index: int) -> Any:
    """The output a step kept when it finished (None: it has not)."""
    raw = await async_client().get(_keys().step_output(pipeline_id, index))
    return None if raw is None else json.loads(raw)


async def keep_output(pipeline_id: str, index: int, value: Any) -> None:
    """Keep a step's output before anything is published from it."""
    key = _keys().step_output(pipeline_id, index)
    await async_client().set(key, json.dumps(to_jsonable_python(value)), ex=_ttl())


def step_started(parent: dict[str, Any]) -> None:
    """A step started: the pipeline run is RUNNING at that step."""
    spec = _spec_of(str(parent["id"]))
    if spec is None or "join" in parent:
        return
    index, total = int(parent["index"]), len(spec.steps)
    _record(str(parent["id"]), Status.RUNNING, f"Step {index + 1}/{total}: {parent['step']}",
            percentage=index * 100 // total)  # fmt: skip


def step_finished(parent: dict[str, Any], value: Any) -> None:
    """A child of a pipeline run ended with `value`: publish what comes next."""
    pipeline_id, index = str(parent["id"]), int(parent["index"])
    spec = _spec_of(pipeline_id)
    if spec is None or _client().hget(_keys().composed(pipeline_id), "ended"):
        return  # canceled or failed meanwhile: nothing more runs
    if "join" in parent:
        joined = _join(pipeline_id, index, parent["join"], value)
        if joined is not None:
            _advance(spec, pipeline_id, index, joined)
        return
    if isinstance(value, dict) and FANOUT in value:
        return  # its children go on; the last one to end advances the pipeline
    _advance(spec, pipeline_id, index, value)


#: Keep a child's result; when every child's is in, claim the join once and return them all.
_JOIN = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local count = redis.call('HLEN', KEYS[1])
if count < tonumber(ARGV[3]) then return {count} end
if redis.call('HSETNX', KEYS[2], 'joined.' .. ARGV[5], 1) == 0 then return {count} end
return {count, redis.call('HGETALL', KEYS[1])}
"""


def _join(pipeline_id: str, index: int, join: dict[str, Any], value: Any) -> list[Any] | None:
    keys = _keys()
    count = int(join["of"])
    reply = _client().eval(
        _JOIN, 2, keys.join(pipeline_id, index), keys.composed(pipeline_id),
        str(join["position"]), json.dumps(value), count, _ttl(), index,
    )  # fmt: skip
    spec = _spec_of(pipeline_id)
    if spec is not None:
        total = len(spec.steps)
        done = int(reply[0])
        message = f"Step {index + 1}/{total}: {spec.steps[index].name}, {done}/{count} done"
        percentage = (index * 100 + done * 100 // count) // total
        _record(pipeline_id, Status.RUNNING, message, percentage=percentage)
    if len(reply) < 2:
        return None
    flat = reply[1]
    results = {int(flat[i]): json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
    return [results[k] for k in range(count)]


def _advance(spec: PipelineSpec, pipeline_id: str, index: int, output: Any) -> None:
    if index + 1 >= len(spec.steps):
        _complete(pipeline_id, spec, output)
        return
    step = spec.steps[index + 1]
    if spec.steps[index].spreads and isinstance(output, list | tuple):
        input = dict(zip(step.params, output, strict=False))
    else:
        input = {step.params[0]: output} if step.params else {}
    stored = _client().hgetall(_keys().composed(pipeline_id))
    state = {k.decode(): v.decode() for k, v in stored.items()}
    _publish_step(spec, pipeline_id, index + 1, input, state)


def _complete(pipeline_id: str, spec: PipelineSpec, output: Any) -> None:
    if not end(pipeline_id, "complete"):
        return
    app.backend.store_result(pipeline_id, output, states.SUCCESS)
    _record(pipeline_id, Status.COMPLETE, f"Pipeline completed ({len(spec.steps)} steps)",
            percentage=100, kind=EventKind.COMPLETE)  # fmt: skip


def step_failed(
    parent: dict[str, Any], task: str, agent_id: str, error: BaseException
) -> list[str]:
    """A child of a pipeline run failed for good: the pipeline ends ERROR, naming it.
    Returns its other children, for the caller to cancel."""
    pipeline_id = str(parent["id"])
    if _spec_of(pipeline_id) is None or not end(pipeline_id, "error"):
        return []
    where = f"step '{parent['step']}'"
    if "join" in parent:
        where += f", child {parent['join']['position']} ({task} {agent_id})"
    message = f"{where} failed: {type(error).__name__}: {error}"
    app.backend.mark_as_failure(pipeline_id, RuntimeError(message))
    _record(pipeline_id, Status.ERROR, message, kind=EventKind.ERROR)
    return [c for c in children(pipeline_id) if c != agent_id]


def _spec_of(pipeline_id: str) -> PipelineSpec | None:
    name = _client().hget(_keys().composed(pipeline_id), "pipeline")
    if name is None:
        return None
    spec = _pipelines.get(name.decode())
    if spec is None:
        logger.error("pipeline %s is not defined in this worker; it cannot go on", name.decode())
    return spec


def _record(
    agent_id: str,
    status: Status,
    message: str,
    *,
    percentage: int | None = None,
    kind: EventKind = EventKind.REPORT,
    task: str | None = None,
    owner: str | None = None,
) -> None:
    runtime = get_runtime()
    event = Event(uuid.UUID(agent_id), status, message, percentage, kind=kind, task=task,
                  owner=owner, worker=runtime.worker)  # fmt: skip
    events = runtime.events.record([event])
    try:
        runtime.write(events)
    except ActivityStoreError:
        pass  # the projector writes it when the database is back
