"""agentexec: run OpenAI Agents SDK agents as Celery background tasks for web apps."""

import importlib
from typing import TYPE_CHECKING, Any

from agentexec import activity, compat
from agentexec.activity.models import Base, Status
from agentexec.application import app, create_app
from agentexec.config import Settings, get_settings
from agentexec.control import cancel
from agentexec.exceptions import (
    ActivityStoreError,
    AgentExecError,
    BrokerUnavailableError,
    ContextTooLargeError,
    DeliveryLimitError,
    InvalidAgentIdError,
    InvalidContextError,
    InvalidRequestError,
    TaskCanceledError,
    TaskError,
    TaskFailedError,
    UnknownAgentError,
    UnknownTaskError,
)
from agentexec.pool import WorkerPool
from agentexec.queues import Priority
from agentexec.results import close_redis, get_result
from agentexec.tasks import AgentResult, AgentTask, enqueue
from agentexec.watch import watch, watch_all

if TYPE_CHECKING:
    from agentexec.runners import BaseAgentRunner, MaxTurnsError, OpenAIRunner

compat.install()

__version__ = "0.1.0"

__all__ = [
    # Tasks and workers
    "AgentResult",
    "AgentTask",
    "Priority",
    "WorkerPool",
    "app",
    "cancel",
    "create_app",
    "enqueue",
    # Runners
    "BaseAgentRunner",
    "OpenAIRunner",
    # Results
    "close_redis",
    "get_result",
    # Activity
    "Base",
    "Status",
    "activity",
    "watch",
    "watch_all",
    # Settings
    "Settings",
    "get_settings",
    # Errors
    "ActivityStoreError",
    "AgentExecError",
    "BrokerUnavailableError",
    "ContextTooLargeError",
    "DeliveryLimitError",
    "InvalidAgentIdError",
    "InvalidContextError",
    "InvalidRequestError",
    "MaxTurnsError",
    "TaskCanceledError",
    "TaskError",
    "TaskFailedError",
    "UnknownAgentError",
    "UnknownTaskError",
]


# The runners import the Agents SDK (over a second of imports): they load on first access
# (PEP 562), so processes that never run an agent, and the test helpers, stay light.
_LAZY = {"BaseAgentRunner", "MaxTurnsError", "OpenAIRunner"}


def __getattr__(name: str) -> Any:
    """Import a runner on first access.

    Args:
        name: The attribute asked for.

    Returns:
        The runner class or error, also cached in this module's namespace.

    Raises:
        AttributeError: `name` is not an attribute of agentexec.
    """
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("agentexec.runners"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the module's names, including the lazily imported runners."""
    return sorted({*globals(), *__all__})
