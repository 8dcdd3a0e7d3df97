"""agentexec: run OpenAI Agents SDK agents as Celery background tasks for web apps.

`import agentexec` is light: every public name loads on first access (PEP 562), the way
`celery` itself does it. A web app that only enqueues never loads the Agents SDK (the
runners), and a CLI call loads only what its command needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentexec.client import activity
    from agentexec.client.approvals import approve, reject, resume
    from agentexec.client.cancel import cancel
    from agentexec.client.enqueue import enqueue
    from agentexec.client.pipeline import Group, Pipeline, call, group
    from agentexec.client.watching import watch, watch_all
    from agentexec.config import Settings, get_settings
    from agentexec.db.models import Base
    from agentexec.exceptions import (
        ActivityStoreError,
        AgentExecError,
        ApprovalError,
        ApprovalExpiredError,
        BrokerUnavailableError,
        BudgetExceededError,
        CheckpointTooLargeError,
        ContextTooLargeError,
        DeliveryLimitError,
        InvalidAgentIdError,
        InvalidContextError,
        InvalidRequestError,
        MaxTurnsError,
        NotResumableError,
        TaskCanceledError,
        TaskError,
        TaskFailedError,
        UnknownAgentError,
        UnknownTaskError,
    )
    from agentexec.runners import BaseAgentRunner, OpenAIRunner
    from agentexec.runners.durable import idempotency_key
    from agentexec.states import Status
    from agentexec.tasks.app import app, create_app
    from agentexec.tasks.queues import Priority
    from agentexec.tasks.results import close_redis, gather, get_result
    from agentexec.tasks.task import AgentResult, AgentTask
    from agentexec.tasks.worker_pool import WorkerPool

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
    # Composed runs
    "Group",
    "Pipeline",
    "call",
    "group",
    # Durable runs
    "approve",
    "reject",
    "resume",
    "idempotency_key",
    # Runners
    "BaseAgentRunner",
    "OpenAIRunner",
    # Results
    "close_redis",
    "gather",
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
    "ApprovalError",
    "ApprovalExpiredError",
    "BrokerUnavailableError",
    "BudgetExceededError",
    "CheckpointTooLargeError",
    "ContextTooLargeError",
    "DeliveryLimitError",
    "InvalidAgentIdError",
    "InvalidContextError",
    "InvalidRequestError",
    "MaxTurnsError",
    "NotResumableError",
    "TaskCanceledError",
    "TaskError",
    "TaskFailedError",
    "UnknownAgentError",
    "UnknownTaskError",
]

#: Where each public name lives.
_SOURCES = {
    "AgentResult": "agentexec.tasks.task",
    "AgentTask": "agentexec.tasks.task",
    "enqueue": "agentexec.client.enqueue",
    "Priority": "agentexec.tasks.queues",
    "WorkerPool": "agentexec.tasks.worker_pool",
    "app": "agentexec.tasks.app",
    "create_app": "agentexec.tasks.app",
    "cancel": "agentexec.client.cancel",
    "approve": "agentexec.client.approvals",
    "reject": "agentexec.client.approvals",
    "resume": "agentexec.client.approvals",
    "idempotency_key": "agentexec.runners.durable",
    "BaseAgentRunner": "agentexec.runners",
    "OpenAIRunner": "agentexec.runners",
    "close_redis": "agentexec.tasks.results",
    "gather": "agentexec.tasks.results",
    "Group": "agentexec.client.pipeline",
    "Pipeline": "agentexec.client.pipeline",
    "call": "agentexec.client.pipeline",
    "group": "agentexec.client.pipeline",
    "get_result": "agentexec.tasks.results",
    "watch": "agentexec.client.watching",
    "watch_all": "agentexec.client.watching",
    "Base": "agentexec.db.models",
    "Status": "agentexec.states",
    "Settings": "agentexec.config",
    "get_settings": "agentexec.config",
    **dict.fromkeys(
        (
            "ActivityStoreError",
            "AgentExecError",
            "ApprovalError",
            "ApprovalExpiredError",
            "BrokerUnavailableError",
            "BudgetExceededError",
            "CheckpointTooLargeError",
            "ContextTooLargeError",
            "DeliveryLimitError",
            "InvalidAgentIdError",
            "InvalidContextError",
            "InvalidRequestError",
            "MaxTurnsError",
            "NotResumableError",
            "TaskCanceledError",
            "TaskError",
            "TaskFailedError",
            "UnknownAgentError",
            "UnknownTaskError",
        ),
        "agentexec.exceptions",
    ),
}


def __getattr__(name: str) -> Any:
    """Load a public name on first access, and keep it in this module's namespace.

    Raises:
        AttributeError: `name` is not an attribute of agentexec.
    """
    if name == "activity":
        value: Any = importlib.import_module("agentexec.client.activity")
    elif name in _SOURCES:
        value = getattr(importlib.import_module(_SOURCES[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the module's names, the ones not loaded yet included."""
    return sorted({*globals(), *__all__})
