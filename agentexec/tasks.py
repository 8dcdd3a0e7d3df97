"""Agent tasks: Celery tasks whose body is an `async def` run on the worker's shared loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import random
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, cast

import redis
from celery import Celery, Task
from celery.exceptions import Ignore, Reject
from celery.result import AsyncResult
from kombu import Queue
from kombu.exceptions import BatchPublishError  # type: ignore[attr-defined]
from kombu.exceptions import OperationalError as KombuOperationalError
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json, to_jsonable_python
from sqlalchemy.exc import SQLAlchemyError

from agentexec.activity.recorder import ActivityRecorder, deferred_queued_rows, write_queued
from agentexec.application import app as default_app
from agentexec.broker import ERROR_HEADER
from agentexec.config import get_settings, redact
from agentexec.delivery import REQUEUED_AT_SHUTDOWN
from agentexec.exceptions import (
    BrokerUnavailableError,
    ContextTooLargeError,
    DeliveryLimitError,
    InvalidContextError,
    UnknownTaskError,
    describe,
)
from agentexec.ids import parse_agent_id
from agentexec.queues import Priority, parse_priority, queue_name
from agentexec.results import get_result
from agentexec.runtime import get_runtime

AgentFunction = Callable[[uuid.UUID, Any], Coroutine[Any, Any, Any]]


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
    #: Marks agentexec's tasks for the activity recorder.
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
        **options: Any,
    ) -> AgentResult:
        """Validate the context, record the run as QUEUED, pick the queue and publish.

        Args:
            args: `(context,)`, where the context is a model or a dict.
            kwargs: `{"context": context}`, as an alternative to `args`.
            task_id: the agent id; a new UUID when omitted.
            priority: `Priority.HIGH` or `Priority.LOW` (the default) picks the queue; an int
                is passed on to Celery as a message priority.
            options: anything else `Task.apply_async` takes.

        Raises:
            InvalidContextError: the context does not validate. Nothing is sent.
            ActivityStoreError: the activity database is misconfigured. Nothing is sent.
            BrokerUnavailableError: the broker did not take the run. Nothing is recorded.
        """
        context = self.validate_context(_single_context(self.name, args, kwargs))
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
        """Worker side: validate the context and run the agent on the shared loop.

        A transient model error (see `is_transient`) retries the run with exponential backoff
        and jitter, up to `retries` times; any other error fails it at once.
        """
        request = self.request
        agent_id = str(request.id)
        recorder = ActivityRecorder.of(self.app)
        if getattr(request, "agentexec_skip", False):
            raise Ignore()  # delivered again after it finished: acknowledge it unrun
        deliveries = getattr(request, "agentexec_deliveries", 0)
        max_deliveries = get_settings().max_deliveries
        if deliveries > max_deliveries:
            lost = DeliveryLimitError(agent_id, deliveries - 1)
            recorder.finished(self, lost)
            raise lost
        runtime = get_runtime()
        try:
            context = self.validate_context(_single_context(self.name, args, kwargs))
            coroutine = self.agent_fn(uuid.UUID(agent_id), context)
            label = f"agent {agent_id} (task {self.name})"
            value = to_jsonable_python(runtime.loop.run(coroutine, key=agent_id, label=label))
        except (asyncio.CancelledError, concurrent.futures.CancelledError):
            if agent_id in runtime.requeue_at_shutdown:
                runtime.requeue_at_shutdown.discard(agent_id)
                recorder.requeued(self)
                raise Reject(REQUEUED_AT_SHUTDOWN, requeue=True) from None
            # Revoked with terminate=True: the revoke already stored REVOKED and CANCELED.
            raise Ignore() from None
        except Exception as exc:
            delay = self._transient_retry_delay(exc)
            if delay is not None:
                recorder.finished(self, exc, retrying=True, delay=delay)
                raise self.retry(exc=exc, countdown=delay, max_retries=self._retries()) from exc
            recorder.finished(self, exc, retrying=self._will_retry(exc))
            raise
        recorder.finished(self)
        return value

    def _retries(self) -> int:
        retries = getattr(self, "retries", None)
        return get_settings().model_retries if retries is None else int(retries)

    def _transient_retry_delay(self, exc: Exception) -> float | None:
        """The backoff before retrying after `exc`; None when it is not retried this way."""
        if not is_transient(exc) or isinstance(exc, tuple(getattr(self, "autoretry_for", ()))):
            return None
        attempt = self.request.retries or 0
        if attempt >= self._retries():
            return None
        settings = get_settings()
        ceiling = min(settings.retry_backoff_max, settings.retry_backoff * 2**attempt)
        delay = random.uniform(settings.retry_backoff, max(settings.retry_backoff, ceiling))
        return min(settings.retry_backoff_max, max(delay, _retry_after(exc)))

    def _will_retry(self, exc: Exception) -> bool:
        retry_for = getattr(self, "autoretry_for", ())
        retries_left = self.max_retries is None or self.request.retries < self.max_retries
        return bool(retry_for) and isinstance(exc, tuple(retry_for)) and retries_left


#: openai's errors worth a retry: the model provider is busy, failing or unreachable.
_TRANSIENT = frozenset(
    {"RateLimitError", "InternalServerError", "APITimeoutError", "APIConnectionError"}
)


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


def get_agent_task(name: str, app: Any = None) -> AgentTask:
    """The agent task registered as `name`, or UnknownTaskError."""
    registry = (app or default_app).tasks
    task = registry.get(name)
    if not isinstance(task, AgentTask):
        known = [n for n, t in registry.items() if isinstance(t, AgentTask)]
        raise UnknownTaskError(name, known)
    return task


async def enqueue(
    task_name: str,
    context: BaseModel | Mapping[str, Any],
    *,
    priority: Priority = Priority.LOW,
    agent_id: uuid.UUID | str | None = None,
    **options: Any,
) -> AgentResult:
    """Validate `context`, record the run as QUEUED and publish it to the `priority` queue.

    The publish runs on a thread, so the caller's event loop never waits on Redis or the
    database. Enqueues that arrive together are published together: their messages in one
    Redis round trip, their QUEUED rows in one commit.

    Args:
        task_name: the name given to `@pool.task`.
        context: a model or dict that validates against the task's context model.
        priority: HIGH runs before any LOW task that has not started yet.
        agent_id: choose the agent id yourself; a new UUID otherwise.
        options: passed on to `apply_async` (for example `countdown`).

    Raises:
        UnknownTaskError: no agent task has that name in this process.
        InvalidContextError: the context does not validate. Nothing is published or recorded.
        ActivityStoreError: the activity database is misconfigured. Nothing is published.
        BrokerUnavailableError: the broker did not take the run. Nothing is recorded.
    """
    task = get_agent_task(task_name)
    model = task.validate_context(context)
    task_id = str(parse_agent_id(agent_id)) if agent_id is not None else None
    publisher = get_runtime().publisher(_publish)
    item = _Enqueue(task, model, task_id, parse_priority(priority), options)
    return cast(AgentResult, await publisher.call(item))


@dataclasses.dataclass
class _Enqueue:
    task: AgentTask
    context: BaseModel
    task_id: str | None
    priority: Priority
    options: dict[str, Any]


def _publish(items: list[_Enqueue]) -> list[AgentResult | BaseException]:
    """Publish a batch of enqueues, app by app (there is one app, as a rule)."""
    outcomes: dict[int, AgentResult | BaseException] = {}
    for app in dict.fromkeys(item.task.app for item in items):
        indexes = [i for i, item in enumerate(items) if item.task.app is app]
        batch = _publish_batch(app, [items[i] for i in indexes])
        outcomes.update(zip(indexes, batch, strict=True))
    return [outcomes[i] for i in range(len(items))]


def _publish_batch(app: Celery, items: list[_Enqueue]) -> list[AgentResult | BaseException]:
    """Publish `items` through Celery in one kombu publish batch: one Redis pipeline with
    every message, its QUEUED event and its `task-sent` event, flushed once; then write
    the QUEUED rows of the messages Redis took in one commit.

    Celery builds and signals every message as `apply_async` does (`before_task_publish`
    and `after_task_publish` fire for each, the latter as it joins the batch).
    """
    outcomes: list[AgentResult | BaseException] = []
    messages: list[list[dict[str, Any]]] = []  # the headers of each item's messages
    settings = get_settings()
    url = redact(str(app.conf.broker_url))
    try:
        with app.producer_or_acquire() as producer, deferred_queued_rows() as rows:
            # Each queue is declared once per batch rather than once per message (kombu's
            # check for an entity already declared costs more than the rest of a publish),
            # and nothing is retried per message: the messages only reach Redis at the flush.
            # A queue the broker refuses fails its own messages only.
            queues = [
                item.options.get("queue") or queue_name(item.priority, settings) for item in items
            ]
            refused: dict[Any, BaseException] = {}
            for queue in dict.fromkeys(queues):
                try:
                    producer.maybe_declare(
                        queue if isinstance(queue, Queue) else app.amqp.queues[queue]
                    )
                except (OSError, KombuOperationalError, redis.RedisError) as exc:
                    refused[queue] = BrokerUnavailableError(url, describe(exc))
            # Large enough that kombu never flushes in the middle of the batch.
            with producer.batch(max_size=4 * len(items) + 16):
                for item, queue in zip(items, queues, strict=True):
                    start = len(rows)
                    outcome: AgentResult | BaseException
                    try:
                        outcome = refused.get(queue) or item.task.apply_async(
                            (item.context,),
                            task_id=item.task_id,
                            priority=item.priority,
                            producer=producer,
                            **{"declare": [], "retry": False, **item.options},
                        )
                    except Exception as exc:
                        outcome = exc
                    outcomes.append(outcome)
                    messages.append(rows[start:])
    except (OSError, BatchPublishError, KombuOperationalError, redis.RedisError) as exc:
        cause = exc.__cause__ if isinstance(exc, BatchPublishError) and exc.__cause__ else exc
        error = BrokerUnavailableError(url, describe(cause))
        failed: list[AgentResult | BaseException] = [
            o if isinstance(o, BaseException) else error for o in outcomes
        ]
        return failed + [error] * (len(items) - len(outcomes))
    taken: list[dict[str, Any]] = []
    for index, headers in enumerate(messages):
        error_of = next((h[ERROR_HEADER] for h in headers if ERROR_HEADER in h), None)
        if error_of is not None and not isinstance(outcomes[index], BaseException):
            outcomes[index] = BrokerUnavailableError(url, describe(error_of))
        elif not isinstance(outcomes[index], BaseException):
            taken += headers
    if taken:
        write_queued(taken)
    return outcomes


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
