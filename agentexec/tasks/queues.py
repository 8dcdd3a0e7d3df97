"""Priority queues: the two queues every agent task goes through."""

from __future__ import annotations

from enum import StrEnum

from kombu import Exchange, Queue

from agentexec.config import Settings
from agentexec.exceptions import InvalidRequestError


class Priority(StrEnum):
    """Which queue a task goes to. A worker always takes HIGH before LOW."""

    #: Runs before any LOW task that has not started yet.
    HIGH = "high"
    #: The default.
    LOW = "low"


def parse_priority(value: Priority | str) -> Priority:
    """`value` as a Priority, or InvalidRequestError naming the valid ones."""
    try:
        return Priority(value)
    except ValueError:
        choices = ", ".join(repr(p.value) for p in Priority)
        raise InvalidRequestError(
            f"unknown priority {value!r}; expected one of {choices}"
        ) from None


def queue_name(priority: Priority | str, settings: Settings) -> str:
    """The broker queue that carries tasks of `priority`."""
    return settings.high_queue if parse_priority(priority) is Priority.HIGH else settings.low_queue


def declare_queues(settings: Settings) -> tuple[Queue, Queue]:
    """HIGH first: with `queue_order_strategy="priority"` Redis drains queues in this order."""
    return (
        Queue(settings.high_queue, Exchange(settings.high_queue), settings.high_queue),
        Queue(settings.low_queue, Exchange(settings.low_queue), settings.low_queue),
    )
