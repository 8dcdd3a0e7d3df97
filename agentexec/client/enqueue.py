"""`ax.enqueue`: validate, then publish from a thread, in batches, without blocking the caller.

Enqueues that arrive together are published together: Celery builds and signals every
message as `apply_async` does, kombu's publish batch sends them (with their QUEUED and
`task-sent` events) in one Redis pipeline, and their QUEUED rows share one commit
(`agentexec.tasks.queued`); each caller still gets its own outcome.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any, cast

import redis
from celery import Celery
from kombu import Queue
from kombu.exceptions import BatchPublishError  # type: ignore[attr-defined]
from kombu.exceptions import OperationalError as KombuOperationalError
from pydantic import BaseModel

from agentexec import telemetry
from agentexec.config import get_settings, redact
from agentexec.exceptions import BrokerUnavailableError, describe
from agentexec.ids import parse_agent_id, parse_owner
from agentexec.runtime import get_runtime
from agentexec.tasks.queued import deferred_queued_rows, write_queued
from agentexec.tasks.queues import Priority, parse_priority, queue_name
from agentexec.tasks.task import AgentResult, AgentTask, get_agent_task
from agentexec.tasks.transport import ERROR_HEADER


async def enqueue(
    task_name: str,
    context: BaseModel | Mapping[str, Any],
    *,
    priority: Priority = Priority.LOW,
    agent_id: uuid.UUID | str | None = None,
    owner: str | None = None,
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
        owner: whom the run belongs to (a user, a tenant): a router scoped by owner shows a
            run only to its owner, and `ax.activity.list(..., owner=...)` filters by it.
        options: passed on to `apply_async` (for example `countdown`).

    Raises:
        UnknownTaskError: no agent task has that name in this process.
        InvalidContextError: the context does not validate. Nothing is published or recorded.
        InvalidRequestError: the owner is not a string of 1 to 255 printable characters.
        ActivityStoreError: the activity database is misconfigured. Nothing is published.
        BrokerUnavailableError: the broker did not take the run. Nothing is recorded.
    """
    task = get_agent_task(task_name)
    model = task.validate_context(context)
    task_id = str(parse_agent_id(agent_id) if agent_id is not None else uuid.uuid4())
    if owner is not None:
        options["owner"] = parse_owner(owner)
    publisher = get_runtime().publisher(_publish)
    level = parse_priority(priority)
    with telemetry.enqueue_span(task.name, task_id, level.name):
        item = _Enqueue(task, model, task_id, level, options, telemetry.current_context())
        return cast(AgentResult, await publisher.call(item))


@dataclasses.dataclass
class _Enqueue:
    task: AgentTask
    context: BaseModel
    task_id: str
    priority: Priority
    options: dict[str, Any]
    #: The caller's trace context, for the publish on the publisher's thread.
    trace: Any = None


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
                        with telemetry.attached(item.trace):
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
