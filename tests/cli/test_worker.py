"""The `agentexec` command, run as a user would."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.events import Event, EventKind
from agentexec.runtime import get_runtime
from agentexec.testing import WorkerProcess, wait_for


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
