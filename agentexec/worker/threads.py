"""The Celery pool agentexec workers use: Celery's thread pool, with cooperative terminate.

`revoke(terminate=True)` cannot kill a thread. Celery still announces the revoke (the
`task_revoked` signal, in this process), and the worker (`agentexec.worker.signals`) answers
it by cancelling the agent's coroutine on the shared loop. This pool only has to accept the
terminate call.
"""

from __future__ import annotations

from typing import Any

from celery.concurrency import thread

ApplyResult: Any = thread.ApplyResult  # type: ignore[attr-defined]


class _CancellableResult(ApplyResult):  # type: ignore[misc]
    def terminate(self, signum: int) -> None:
        """The worker cancels the coroutine; the thread then ends on its own."""


class AgentThreadPool(thread.TaskPool):
    """Celery's `threads` pool, where terminating a task cancels its agent coroutine."""

    def on_apply(self, *args: Any, **kwargs: Any) -> Any:
        result = super().on_apply(*args, **kwargs)
        return _CancellableResult(result.f)

    def terminate_job(self, pid: int, signal: int | None = None) -> None:
        """Accept the terminate; see the module docstring."""
