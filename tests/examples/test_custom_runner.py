"""The custom runner example follows the runner contract: reports become log rows."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.eventlog.event import Event
from agentexec.states import EventKind
from agentexec.testing.plugin import agentexec_flush, record_events

sys.path.insert(0, str(Path(__file__).parent.parent.parent / "examples" / "custom_runner"))
from function_runner import FunctionRunner, Report


async def count_words(text: str, report_status: Report) -> dict[str, int]:
    report_status("Splitting the text", 40)
    words = len(text.split())
    told = report_status("Counting", 120)  # out of range: the agent is told, nothing recorded
    assert told.startswith("Error: percentage")
    report_status("Counted", 90)
    return {"words": words}


async def test_function_runner_records_reports(
    agentexec_env: dict[str, str], agentexec_session: Session, sqlite_only: None
) -> None:
    agent_id = uuid.uuid4()
    record_events(
        Event(agent_id, ax.Status.RUNNING, "Task started", 0, kind=EventKind.STARTED, task="s")
    )
    runner = FunctionRunner(agent_id)
    assert await runner.run(count_words, "one two three") == {"words": 3}
    agentexec_flush()
    activity = ax.activity.detail(agentexec_session, agent_id)
    assert activity is not None
    assert [(log.message, log.completion_percentage) for log in activity.logs] == [
        ("Task started", 0),
        ("Splitting the text", 40),
        ("Counted", 90),
    ]


async def test_function_runner_errors_propagate(sqlite_only: None) -> None:
    async def broken(text: str, report_status: Report) -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        await FunctionRunner(uuid.uuid4()).run(broken, "x")
