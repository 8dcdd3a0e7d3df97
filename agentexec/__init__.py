"""agentexec: run OpenAI Agents SDK agents as Celery background tasks for web apps."""

from agentexec import activity, compat
from agentexec.activity.models import Base, Status
from agentexec.application import app, create_app
from agentexec.config import Settings, get_settings
from agentexec.control import cancel
from agentexec.exceptions import (
    AgentExecError,
    InvalidAgentIdError,
    InvalidContextError,
    TaskCanceledError,
    TaskError,
    TaskFailedError,
    UnknownTaskError,
)
from agentexec.pool import WorkerPool
from agentexec.queues import Priority
from agentexec.results import close_redis, get_result
from agentexec.runners import BaseAgentRunner, MaxTurnsError, OpenAIRunner
from agentexec.tasks import AgentResult, AgentTask, enqueue

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
    # Settings
    "Settings",
    "get_settings",
    # Errors
    "AgentExecError",
    "InvalidAgentIdError",
    "InvalidContextError",
    "MaxTurnsError",
    "TaskCanceledError",
    "TaskError",
    "TaskFailedError",
    "UnknownTaskError",
]
