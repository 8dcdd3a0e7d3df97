"""Running an agent task's body on the worker's shared event loop.

Celery runs each task body on a pool thread. The body of an agent task validates its
context, submits the agent's coroutine to the worker's one loop and parks the thread until
the coroutine ends, then records the run's end before Celery stores the result
(`agentexec.worker.recording`).

A transient model error (an `openai` rate limit, a 5xx, a timeout or a connection error)
retries the run with exponential backoff and full jitter, up to the task's `retries` (or
`AGENTEXEC_MODEL_RETRIES`); any other error fails it at once. A run cancelled by the shutdown
timeout puts its message back on its queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import uuid
from collections.abc import Coroutine
from typing import Any

import redis
from celery.exceptions import Ignore, Reject
from pydantic_core import to_jsonable_python

from agentexec import telemetry
from agentexec.client.approvals import requeue
from agentexec.client.cancel import fail_pipeline
from agentexec.config import get_settings
from agentexec.exceptions import DeliveryLimitError, InvalidContextError
from agentexec.states import Status
from agentexec.tasks import checkpoints, composition, concurrency, ratelimits
from agentexec.tasks.budgets import task_budget
from agentexec.tasks.checkpoints import RunScope, RunSuspended, current_run
from agentexec.tasks.queued import (
    BUDGET_HEADER,
    OWNER_HEADER,
    PARENT_HEADER,
    RATE_HEADER,
    RESUME_HEADER,
)
from agentexec.tasks.ratelimits import parse_rate
from agentexec.tasks.task import AgentTask, validate_for
from agentexec.worker import delivery
from agentexec.worker.loop import EventLoopThread
from agentexec.worker.recording import record_end, record_finished
from agentexec.worker.shutdown import REQUEUED_AT_SHUTDOWN

logger = logging.getLogger(__name__)

#: openai's errors worth a retry: the model provider is busy, failing or unreachable.
_TRANSIENT = frozenset(
    {"RateLimitError", "InternalServerError", "APITimeoutError", "APIConnectionError"}
)


class Execution:
    """Runs agent task bodies on `loop`, for the worker that owns it.

    Args:
        loop: the worker process's shared event loop.
        requeue: ids of runs the shutdown timeout cancelled, whose messages go back on
            their queue.
    """

    def __init__(self, loop: EventLoopThread, requeue: set[str]) -> None:
        self.loop = loop
        self.requeue = requeue

    def __call__(self, task: AgentTask, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The body of `task` for the delivery its request describes."""
        request: Any = task.request
        agent_id = str(request.id)
        if getattr(request, "agentexec_skip", False):
            raise Ignore()  # delivered again after it finished: acknowledge it unrun
        if getattr(request, "agentexec_parked", None):
            _parked(task, request.agentexec_parked)  # every slot of its key is taken
        slot: tuple[str, int] | None = getattr(request, "agentexec_slot", None)
        try:
            deliveries = getattr(request, "agentexec_deliveries", 0)
            if deliveries > get_settings().max_deliveries:
                lost = DeliveryLimitError(agent_id, deliveries - 1)
                record_finished(task, lost)
                raise lost
            return self._run(task, args, kwargs, deliveries)
        finally:
            if slot is not None:  # after the end is recorded: the next run starts after it
                _give_back(agent_id, *slot)

    def _run(
        self, task: AgentTask, args: tuple[Any, ...], kwargs: dict[str, Any], deliveries: int
    ) -> Any:
        agent_id = str(task.request.id)
        scope = _scope(task, args, kwargs, deliveries)
        #: How the delivery ends without a result, raised outside the `except` blocks so that
        #: it does not chain (and keep alive) the run's last exception and its frames.
        ending: Ignore | Reject | None = None
        try:
            context = validate_for(task, args, kwargs)
            coroutine = _in_scope(
                scope,
                task.agent_fn(uuid.UUID(agent_id), context),
                telemetry.worker_context(task.request),
            )
            label = f"agent {agent_id} (task {task.name})"
            value = to_jsonable_python(self.loop.run(coroutine, key=agent_id, label=label))
        except (asyncio.CancelledError, concurrent.futures.CancelledError):
            if agent_id in self.requeue:
                self.requeue.discard(agent_id)
                self._requeued(task)
                ending = Reject(REQUEUED_AT_SHUTDOWN, requeue=True)
            else:
                # Revoked with terminate=True: the revoke already stored REVOKED and CANCELED.
                _checkpoint_ends(scope, kept=False)
                ending = Ignore()
        except RunSuspended as suspended:
            _waiting(task, suspended)
            ending = Ignore()  # acknowledged: the approvals queue it again
        except Exception as exc:
            delay = _transient_retry_delay(task, exc)
            if delay is not None:
                record_finished(task, exc, retrying=True, delay=delay)
                raise task.retry(exc=exc, countdown=delay, max_retries=_retries(task)) from exc
            retrying = _will_retry(task, exc)
            record_finished(task, exc, retrying=retrying)
            _checkpoint_ends(scope, kept=True)
            if not retrying:
                fail_pipeline(scope.request.get("parent"), task.name, scope.agent_id, exc)
            raise
        if ending is not None:
            raise ending
        record_finished(task)
        _checkpoint_ends(scope, kept=False)
        if scope.request.get("parent"):
            composition.step_finished(scope.request["parent"], value)
        return value

    def _requeued(self, task: AgentTask) -> None:
        """Record a run cancelled by the shutdown timeout, whose message goes back on its
        queue; its delivery is not counted against it."""
        request: Any = task.request
        journal = getattr(request, "agentexec_journal", None)
        record_end(request.id, Status.QUEUED, "Requeued at shutdown", journal=journal)
        resumes = int(getattr(request, RESUME_HEADER, 0) or 0)
        delivery.uncount_delivery(str(request.id), request.retries or 0, resumes)
        request.agentexec_recorded = True
        logger.warning("agent %s requeued at shutdown", request.id)


def _scope(
    task: AgentTask, args: tuple[Any, ...], kwargs: dict[str, Any], deliveries: int
) -> RunScope:
    """What the agent's runner needs to know of this delivery to checkpoint and suspend it."""
    request: Any = task.request
    info = request.delivery_info or {}
    timeout = getattr(task, "approval_timeout", None)
    resumes = int(getattr(request, RESUME_HEADER, 0) or 0)
    given = getattr(request, BUDGET_HEADER, None)
    budget = {**task_budget(task), **(given if isinstance(given, dict) else {})}
    return RunScope(
        agent_id=str(request.id),
        task=task.name,
        delivery=max(1, deliveries),
        checkpoint=bool(getattr(task, "checkpoint", True)),
        approval_timeout=float(timeout or get_settings().approval_timeout),
        # Never delivered before (a message put back at shutdown is marked redelivered).
        budget=budget,
        fresh=deliveries == 1
        and not resumes
        and not request.retries
        and not info.get("redelivered"),
        request={
            "task": task.name,
            "context": args[0] if args else kwargs.get("context"),
            "queue": info.get("routing_key"),
            "priority": info.get("priority"),
            "owner": getattr(request, OWNER_HEADER, None),
            "retries": request.retries or 0,
            "resumes": resumes,
            "budget": budget,
            "parent": getattr(request, PARENT_HEADER, None),
        },
    )


async def _in_scope(
    scope: RunScope, coroutine: Coroutine[Any, Any, Any], trace_context: Any
) -> Any:
    """Run `coroutine` as the run `scope` describes (`checkpoints.current_run`), in the
    delivery's trace (when tracing)."""
    current_run.set(scope)
    with telemetry.run_span(trace_context, scope.task, scope.agent_id, scope.delivery,
                            benign=(RunSuspended,)):  # fmt: skip
        return await coroutine


def _waiting(task: AgentTask, suspended: RunSuspended) -> None:
    """Record that the run waits for approvals; its delivery then ends."""
    request: Any = task.request
    calls = ", ".join(a["tool"] for a in suspended.approvals)
    record_end(
        request.id,
        Status.WAITING,
        f"Waiting for approval: {calls}",
        journal=getattr(request, "agentexec_journal", None),
        data={"approvals": suspended.approvals},
    )
    request.agentexec_recorded = True


def _checkpoint_ends(scope: RunScope, *, kept: bool) -> None:
    """A run that used checkpoints ended: drop them (or keep a failed run's for resume)."""
    if not scope.stored:
        return
    client = delivery.events_client()
    try:
        if kept:
            checkpoints.remember_request(client, scope.agent_id, scope.request)
            checkpoints.keep(client, scope.agent_id)
        else:
            checkpoints.forget(client, scope.agent_id)
    except redis.RedisError as exc:
        logger.warning("checkpoint of %s not %s: %s", scope.agent_id,
                       "kept" if kept else "removed", exc)  # fmt: skip


def take_slot(task: AgentTask, args: Any, kwargs: Any) -> tuple[str, int] | str | None:
    """Before a delivery starts (`task_prerun`): take a slot of its concurrency key, if its
    task has one. Returns `(key, limit)`; or why the run does not start now (its QUEUED log
    line: parked until a slot frees, or queued again for its rate-limited turn); or None
    without a key or rate limit (or a valid context)."""
    request: Any = task.request
    if not getattr(task, "lock_key", None) and not getattr(task, "rate_limit", None):
        return None
    try:
        context = validate_for(task, args, kwargs)
        key = concurrency.lock_key(task, context)
    except InvalidContextError:
        return None  # the body fails it, with the reason
    rate = getattr(task, "rate_limit", None)
    if rate and not getattr(request, RATE_HEADER, None):
        wait = ratelimits.reserve_start(delivery.events_client(), task.name, parse_rate(rate))
        if wait > 0.05:  # not its turn yet: queued again for its moment, holding nothing
            scope = _scope(task, tuple(args or ()), dict(kwargs or {}), 1)
            why = f"Rate limited ({rate}): starts in {wait:.1f}s"
            requeue(str(request.id), scope.request, why, wait, {RATE_HEADER: 1})
            return why
    if key is None:
        return None
    limit = max(1, int(getattr(task, "max_concurrency", 1) or 1))
    scope = _scope(task, tuple(args or ()), dict(kwargs or {}), 1)
    wanted = {**scope.request, "max_concurrency": limit}
    taken, woken = concurrency.acquire(delivery.events_client(), key, str(request.id), limit,
                                       wanted)  # fmt: skip
    wake(woken, key)
    if not taken:
        return f"Waiting for {key}"
    concurrency.held[str(request.id)] = key
    return key, limit


def _parked(task: AgentTask, why: str) -> None:
    """Record a run parked for a slot of its key, or queued again for its turn under its
    task's rate limit (`why` says which), and end its delivery."""
    current: Any = task.request
    record_end(current.id, Status.QUEUED, why)
    current.agentexec_recorded = True
    raise Ignore()


def _give_back(agent_id: str, key: str, limit: int) -> None:
    """The run ended (or goes back on its queue): its slot goes to the next parked run."""
    concurrency.held.pop(agent_id, None)
    try:
        wake(concurrency.release(delivery.events_client(), key, agent_id, limit), key)
    except redis.RedisError as exc:  # its lease expires; the reaper wakes the next one
        logger.warning("slot of %s on %s not given back: %s", agent_id, key, exc)


def wake(woken: list[dict[str, Any]], key: str) -> None:
    """Publish again the parked runs that got a slot of `key`."""
    for request in woken:
        agent_id = str(request.pop("agent_id"))
        try:
            requeue(agent_id, request, why=f"Queued again: a slot of {key} is free")
        except Exception:  # its reserved slot expires, and the reaper wakes it again
            logger.exception("parked run %s not queued again", agent_id)


def _retries(task: AgentTask) -> int:
    retries = getattr(task, "retries", None)
    return get_settings().model_retries if retries is None else int(retries)


def _transient_retry_delay(task: AgentTask, exc: Exception) -> float | None:
    """The backoff before retrying after `exc`; None when it is not retried this way."""
    if not is_transient(exc) or isinstance(exc, tuple(getattr(task, "autoretry_for", ()))):
        return None
    attempt = task.request.retries or 0
    if attempt >= _retries(task):
        return None
    settings = get_settings()
    ceiling = min(settings.retry_backoff_max, settings.retry_backoff * 2**attempt)
    delay = random.uniform(settings.retry_backoff, max(settings.retry_backoff, ceiling))
    return min(settings.retry_backoff_max, max(delay, _retry_after(exc)))


def _will_retry(task: AgentTask, exc: Exception) -> bool:
    retry_for = getattr(task, "autoretry_for", ())
    retries_left = task.max_retries is None or task.request.retries < task.max_retries
    return bool(retry_for) and isinstance(exc, tuple(retry_for)) and retries_left


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is a transient model error: an `openai` rate limit (429), a 5xx response,
    a timeout or a connection error. A 400, an auth failure or a validation error is not."""
    return any(
        cls.__module__.startswith("openai") and cls.__name__ in _TRANSIENT
        for cls in type(exc).__mro__
    )


def _retry_after(exc: BaseException) -> float:
    """Seconds the provider asked to wait (`Retry-After`), or 0."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return 0.0
    try:
        return max(0.0, float(headers.get("retry-after", 0)))
    except (TypeError, ValueError):
        return 0.0
