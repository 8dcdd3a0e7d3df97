"""agentexec: run OpenAI Agents SDK agents as Celery background tasks for web apps.

`import agentexec` is light: every public name loads on first access (PEP 562), the way
`celery` itself does it. A web app that only enqueues never loads the Agents SDK (the
runners), and a CLI call loads only what its command needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentexec import activity
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
    from agentexec.runners import BaseAgentRunner, MaxTurnsError, OpenAIRunner
    from agentexec.tasks import AgentResult, AgentTask, enqueue
    from agentexec.watching import watch, watch_all

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
    # Watching live
    "watch",
    "watch_all",
    # Activity
    "Base",
    "Status",
    "activity",
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

#: Where each public name lives.
_SOURCES = {
    "AgentResult": "agentexec.tasks",
    "AgentTask": "agentexec.tasks",
    "enqueue": "agentexec.tasks",
    "Priority": "agentexec.queues",
    "WorkerPool": "agentexec.pool",
    "app": "agentexec.application",
    "create_app": "agentexec.application",
    "cancel": "agentexec.control",
    "BaseAgentRunner": "agentexec.runners",
    "MaxTurnsError": "agentexec.runners",
    "OpenAIRunner": "agentexec.runners",
    "close_redis": "agentexec.results",
    "get_result": "agentexec.results",
    "watch": "agentexec.watching",
    "watch_all": "agentexec.watching",
    "Base": "agentexec.activity.models",
    "Status": "agentexec.activity.models",
    "Settings": "agentexec.config",
    "get_settings": "agentexec.config",
    **dict.fromkeys(
        (
            "ActivityStoreError",
            "AgentExecError",
            "BrokerUnavailableError",
            "ContextTooLargeError",
            "DeliveryLimitError",
            "InvalidAgentIdError",
            "InvalidContextError",
            "InvalidRequestError",
            "TaskCanceledError",
            "TaskError",
            "TaskFailedError",
            "UnknownAgentError",
            "UnknownTaskError",
        ),
        "agentexec.exceptions",
    ),
}
#: Modules that load no SQLAlchemy: everything else does, and brings the guide's
#: `session.execute("...")` compatibility (`agentexec.compat`) with it.
_NO_SQL = {"agentexec.config", "agentexec.exceptions", "agentexec.queues"}


def __getattr__(name: str) -> Any:
    """Load a public name on first access, and keep it in this module's namespace.

    Raises:
        AttributeError: `name` is not an attribute of agentexec.
    """
    if name == "activity":
        value: Any = importlib.import_module("agentexec.activity")
        source = value.__name__
    elif name in _SOURCES:
        source = _SOURCES[name]
        value = getattr(importlib.import_module(source), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if source not in _NO_SQL:
        importlib.import_module("agentexec.compat").install()
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the module's names, the ones not loaded yet included."""
    return sorted({*globals(), *__all__})
