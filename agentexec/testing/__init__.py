"""Helpers for testing agent tasks offline: scripted models, a scripted OpenAI server, workers.

Everything a test needs is importable from here::

    from agentexec.testing import answer, report, scripted_model

    model = scripted_model(report("Looking up Acme", 50), answer("Acme makes anvils."))

* Scripted models (`scripted_model`, `report`, `call`, `answer`, `fail`, ...) play back model
  turns through the Agents SDK's `ScriptedModel`, in the process that runs the agent.
* `ScriptedOpenAIServer` is a local OpenAI-compatible HTTP server whose answers come from a
  responder (`Reply`, `default_responder`, `make_status_responder`, ...), for agents that run
  in a worker process and reach the model over HTTP.
* `WorkerProcess`, `celery_worker_argv` and `wait_for` start real worker processes and wait
  for them.

The pytest fixtures (`agentexec_worker`, `agentexec_env`, `agentexec_session`, ...) come from
the `agentexec.testing.plugin` module, which pytest loads through agentexec's `pytest11`
entry point; they need no import.

Importing this package is light: the helpers that need the Agents SDK (the scripted models)
or the HTTP server's dependencies (`ScriptedOpenAIServer`) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentexec.processes import WorkerProcess, celery_worker_argv, wait_for
from agentexec.testing.openai_script import (
    ModelError,
    Reply,
    Responder,
    ToolCall,
    answered_tool_names,
    default_responder,
    function_tool_names,
    last_user_text,
    make_status_responder,
)

if TYPE_CHECKING:
    from agentexec.runners.offline import (
        ModelStep,
        SlowScriptedModel,
        answer,
        call,
        endless_tool_calls,
        fail,
        report,
        scripted_model,
    )
    from agentexec.testing.openai_server import ScriptedOpenAIServer

__all__ = [
    # Scripted models, played back in-process through the Agents SDK (imported lazily)
    "ModelStep",
    "SlowScriptedModel",
    "answer",
    "call",
    "endless_tool_calls",
    "fail",
    "report",
    "scripted_model",
    # The scripted OpenAI-compatible HTTP server (imported lazily)
    "ScriptedOpenAIServer",
    # Its replies and responders
    "ModelError",
    "Reply",
    "ToolCall",
    "Responder",
    "default_responder",
    "make_status_responder",
    # Request inspection, for writing responders
    "answered_tool_names",
    "function_tool_names",
    "last_user_text",
    # Worker processes
    "WorkerProcess",
    "celery_worker_argv",
    "wait_for",
]

# Names imported on first access (PEP 562), and the module each comes from: the scripted
# models import the Agents SDK, the server imports uvicorn and Starlette.
_LAZY: dict[str, str] = {
    "ModelStep": "agentexec.runners.offline",
    "SlowScriptedModel": "agentexec.runners.offline",
    "answer": "agentexec.runners.offline",
    "call": "agentexec.runners.offline",
    "endless_tool_calls": "agentexec.runners.offline",
    "fail": "agentexec.runners.offline",
    "report": "agentexec.runners.offline",
    "scripted_model": "agentexec.runners.offline",
    "ScriptedOpenAIServer": "agentexec.testing.openai_server",
}


def __getattr__(name: str) -> Any:
    """Import a lazily exported helper on first access.

    Args:
        name: The attribute asked for.

    Returns:
        The helper, which is also cached in this module's namespace.

    Raises:
        AttributeError: `name` is not a helper of this package.
    """
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the module's names, including the lazily imported ones."""
    return sorted({*globals(), *__all__})
