"""`agentexec worker` and `agentexec project`, run as a user runs them."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.eventlog.event import Event
from agentexec.runtime import get_runtime
from agentexec.states import EventKind
from agentexec.testing import WorkerProcess, wait_for

#: The database plays no part here: SQLite alone keeps the suite short.
pytestmark = pytest.mark.usefixtures("sqlite_only")


def test_project_applies_the_event_log_on_its_own(
    agentexec_env: dict[str, str], agentexec_session: Session, tmp_path: Path, sqlite_only: None
) -> None:
    runtime = get_runtime()
    runtime.stop_projector()  # only the command projects
    agent_id = uuid.uuid4()
    runtime.events.append(
        [
            Event(agent_id, ax.Status.QUEUED, "Task queued", kind=EventKind.QUEUED, task="t"),
            Event(agent_id, ax.Status.RUNNING, "working", 50),
        ]
    )
    argv = [sys.executable, "-m", "agentexec.cli", "project"]
    command = WorkerProcess(argv, {**os.environ, **agentexec_env}, Path.cwd(), tmp_path / "p.log")
    command.start(ready=lambda: "projecting" in command.log())
    try:

        def projected() -> bool:
            agentexec_session.expire_all()
            activity = ax.activity.detail(agentexec_session, agent_id)
            return activity is not None and activity.latest_completion_percentage == 50

        wait_for(projected, 15, "the events applied", on_timeout=command.log)
    finally:
        assert command.process is not None
        command.process.send_signal(signal.SIGTERM)
        assert command.process.wait(15) == 0
        command.kill()
    assert "stopped after applying 2 events" in command.log()


def _worker(env: dict[str, str], tmp_path: Path, *args: str) -> WorkerProcess:
    argv = [sys.executable, "-m", "agentexec", "worker", "--without-mingle", *args]
    log = tmp_path / f"worker-{uuid.uuid4().hex[:6]}.log"
    return WorkerProcess(argv, {**os.environ, **env}, Path.cwd(), log)


def test_worker_logs_ready_its_queues_tasks_and_each_report_at_info(
    agentexec_env: dict[str, str], agentexec_session: Session, tmp_path: Path, sqlite_only: None
) -> None:
    import asyncio

    import tasks  # noqa: F401  (the example tasks, which the worker loads from celeryconfig)

    env = {**agentexec_env, "AGENTEXEC_LOG_LEVEL": "INFO"}
    worker = _worker(env, tmp_path).start()  # waits for "ready."
    try:
        prefix = agentexec_env["AGENTEXEC_QUEUE_PREFIX"]
        banner = worker.log()
        assert f".> {prefix}.high" in banner and f".> {prefix}.low" in banner
        assert ". summarize_numbers" in banner and ". research_company" in banner

        async def run() -> uuid.UUID:
            task = await ax.enqueue("summarize_numbers", {"numbers": [1, 2]})
            await ax.get_result(task.agent_id, timeout=30)
            return task.agent_id

        agent_id = asyncio.run(run())
        log = worker.log()
        assert f"Agent {agent_id} RUNNING 50%: Added 1 of 2" in log
        assert f"Agent {agent_id} RUNNING 100%: Added 2 of 2" in log
    finally:
        worker.stop()


def test_worker_honours_the_log_level_setting(
    agentexec_env: dict[str, str], tmp_path: Path, sqlite_only: None
) -> None:
    env = {**agentexec_env, "AGENTEXEC_LOG_LEVEL": "WARNING"}
    worker = _worker(env, tmp_path, "-n", "quiet@%h")
    # At WARNING nothing says "ready": wait for the banner, then for the worker to answer.
    worker.start(ready=lambda: "[queues]" in worker.log())
    try:
        wait_for(
            lambda: "quiet@" in str(ax.app.control.ping(timeout=0.5)), 60, "the worker answering"
        )
        assert " ready." not in worker.log()
        assert "[tasks]" not in worker.log()  # Celery lists tasks at INFO and below
    finally:
        worker.stop()
    # Celery's own flag still wins.
    loud = _worker(env, tmp_path, "--loglevel=INFO").start()
    loud.stop()
