"""A first end-to-end check: the example task through `celery -A agentexec worker`."""

from __future__ import annotations

from sqlalchemy.orm import Session

import agentexec as ax
import tasks  # noqa: F401  (registers the example task in this process)
from agentexec.testing.plugin import StartWorker


async def test_example_task_runs_on_celery_worker(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    agentexec_worker()
    task = await ax.enqueue("summarize_numbers", {"numbers": [1, 2, 3]})
    assert await ax.get_result(task.agent_id, timeout=30) == {"total": 6.0, "count": 3.0}
    activity = ax.activity.detail(agentexec_session, task.agent_id)
    assert activity is not None
    assert activity.status is ax.Status.COMPLETE
    assert [log.message for log in activity.logs] == [
        "Task queued",
        "Task started",
        "Added 1 of 3",
        "Added 2 of 3",
        "Added 3 of 3",
        "Task completed",
    ]
    await ax.close_redis()
