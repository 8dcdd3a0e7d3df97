"""Everything the guide promises is exported, and nothing in __all__ is missing."""

from __future__ import annotations

import inspect

import agentexec as ax

PROMISED = {
    "Base", "WorkerPool", "OpenAIRunner", "Priority", "enqueue", "get_result", "close_redis",
    "activity", "Status", "cancel", "app", "AgentExecError", "TaskFailedError",
    "TaskCanceledError", "UnknownTaskError", "InvalidContextError", "BaseAgentRunner",
}  # fmt: skip


def test_all_is_complete() -> None:
    assert PROMISED <= set(ax.__all__)
    for name in ax.__all__:
        assert hasattr(ax, name), name


def test_enqueue_is_a_real_coroutine_function() -> None:
    # The guide patches it and awaits the mock, which needs a real `async def`.
    assert inspect.iscoroutinefunction(ax.enqueue)
    assert inspect.iscoroutinefunction(ax.get_result)
    assert inspect.iscoroutinefunction(ax.close_redis)


def test_activity_functions() -> None:
    for name in ("detail", "list", "cancel_pending", "update", "count_active"):
        assert callable(getattr(ax.activity, name))


def test_statuses_are_the_strings_the_guide_compares() -> None:
    # The guide's five, and WAITING: a run stopped for a person's approval.
    assert [s.value for s in ax.Status] == [
        "QUEUED", "RUNNING", "WAITING", "COMPLETE", "ERROR", "CANCELED"
    ]  # fmt: skip


def test_errors_share_one_base() -> None:
    for error in (ax.TaskFailedError, ax.TaskCanceledError, ax.UnknownTaskError):
        assert issubclass(error, ax.AgentExecError)
    assert issubclass(ax.UnknownTaskError, KeyError)
