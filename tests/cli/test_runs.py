"""`list`, `show`, `tail`, `cancel` and `result`, against a live worker."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.eventlog.event import Event, clock_seq
from agentexec.runtime import get_runtime
from agentexec.states import EventKind
from agentexec.testing import wait_for
from agentexec.testing.plugin import StartWorker
from tests.cli.conftest import enqueue

#: The database plays no part here: SQLite alone keeps the suite short.
pytestmark = pytest.mark.usefixtures("sqlite_only")


def _wait_status(session: Session, agent_id: uuid.UUID, status: ax.Status) -> None:
    def reached() -> bool:
        session.expire_all()
        activity = ax.activity.detail(session, agent_id)
        return activity is not None and activity.status is status

    wait_for(reached, 30, f"{agent_id} {status}")


def test_list_show_and_result_of_finished_runs(
    agentexec_worker: StartWorker, agentexec_session: Session, cli: Any
) -> None:
    agentexec_worker()
    first, second = enqueue([1, 2]), enqueue([5])
    assert json.loads(cli("result", str(first), "--timeout", "30").output) == {
        "total": 3.0,
        "count": 2.0,
    }
    assert cli("result", str(second)).exit_code == 0
    _wait_status(agentexec_session, second, ax.Status.COMPLETE)

    listed = cli("list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [row["agent_id"] for row in rows] == [str(second), str(first)]  # newest first
    assert {row["status"] for row in rows} == {"COMPLETE"}
    assert json.loads(cli("list", "--json", "--status", "queued").output) == []
    assert json.loads(cli("list", "--json", "--task", "other").output) == []
    assert len(json.loads(cli("list", "--json", "-n", "1", "-t", "summarize_numbers").output)) == 1
    table = cli("list").output
    assert str(first) in table and "COMPLETE" in table and "summarize_numbers" in table

    shown = cli("show", str(first))
    assert shown.exit_code == 0
    messages = ["Task queued", "Task started", "Added 1 of 2", "Added 2 of 2", "Task completed"]
    positions = [shown.output.index(message) for message in messages]
    assert positions == sorted(positions)  # the timeline, oldest first
    detail = json.loads(cli("show", str(first), "--json").output)
    assert [log["message"] for log in detail["logs"]] == messages


def test_tail_follows_a_running_agent_to_its_end(
    agentexec_worker: StartWorker, agentexec_session: Session, cli: Any
) -> None:
    agentexec_worker()
    agent_id = enqueue([1, 2, 3, 4], step_seconds=0.5)
    _wait_status(agentexec_session, agent_id, ax.Status.RUNNING)
    tailed = cli("tail", str(agent_id), "--json")
    assert tailed.exit_code == 0, tailed.output
    events = [json.loads(line) for line in tailed.output.splitlines()]
    assert [e["message"] for e in events][-5:] == [
        "Added 1 of 4",
        "Added 2 of 4",
        "Added 3 of 4",
        "Added 4 of 4",
        "Task completed",
    ]
    assert [e["percentage"] for e in events][-5:] == [25, 50, 75, 100, 100]
    assert len({e["message"] for e in events}) == len(events)  # no event printed twice
    # Once ended, the log comes from the database, with the progress bar at 100%.
    human = cli("tail", str(agent_id))
    assert human.exit_code == 0
    assert "Added 3 of 4" in human.output and "100%" in human.output


@pytest.mark.parametrize("log", ["absent", "without-the-run"])
def test_tail_reads_the_database_for_events_the_log_does_not_have(
    agentexec_env: dict[str, str],
    agentexec_session: Session,
    cli: Any,
    sqlite_only: None,
    log: str,
) -> None:
    runtime = get_runtime()
    runtime.stop_projector()  # it would create the log
    client = runtime.events.client()
    client.delete(runtime.events.key)
    if log == "without-the-run":
        runtime.events.append([Event(uuid.uuid4(), ax.Status.RUNNING, "someone else", 10)])
    agent_id = uuid.uuid4()

    def written(*events: Event) -> None:
        # Recorded while the log was unreachable: SQL only.
        assert runtime.write([e.appended(clock_seq()) for e in events])

    written(Event(agent_id, ax.Status.QUEUED, "Task queued", kind=EventKind.QUEUED, task="t"))
    written(Event(agent_id, ax.Status.RUNNING, "halfway", 50))
    outcome: dict[str, Any] = {}
    follower = threading.Thread(target=lambda: outcome.update(result=cli("tail", str(agent_id))))
    follower.start()
    written(Event(agent_id, ax.Status.ERROR, "it broke", kind=EventKind.ERROR))
    follower.join(60)
    tailed = outcome["result"]
    assert tailed.exit_code == 1  # the run failed
    assert "halfway" in tailed.output and "it broke" in tailed.output
    assert tailed.output.count("halfway") == 1


def test_tail_gives_up_at_its_timeout(
    agentexec_env: dict[str, str], agentexec_session: Session, cli: Any, sqlite_only: None
) -> None:
    agent_id = enqueue([1])  # no worker: it stays QUEUED
    tailed = cli("tail", str(agent_id), "--timeout", "1")
    assert tailed.exit_code == 1
    assert "Task queued" in tailed.output


def test_cancel_a_running_agent(
    agentexec_worker: StartWorker, agentexec_session: Session, cli: Any
) -> None:
    agentexec_worker()
    agent_id = enqueue([1] * 20, step_seconds=1)
    _wait_status(agentexec_session, agent_id, ax.Status.RUNNING)
    canceled = cli("cancel", str(agent_id), "--reason", "wrong company")
    assert canceled.exit_code == 0 and "canceled" in canceled.output
    waited = cli("result", str(agent_id), "--timeout", "30")
    assert waited.exit_code == 1 and "was canceled: wrong company" in waited.output
    _wait_status(agentexec_session, agent_id, ax.Status.CANCELED)
    shown = cli("show", str(agent_id), "--json")
    assert json.loads(shown.output)["logs"][-1]["message"] == "wrong company"
    again = cli("cancel", str(agent_id))
    assert again.exit_code == 0 and "already ended" in again.output


def test_unknown_and_malformed_ids(agentexec_env: dict[str, str], cli: Any) -> None:
    unknown = str(uuid.uuid4())
    for command in ("show", "tail", "cancel", "result"):
        outcome = cli(command, unknown)
        assert outcome.exit_code == 1, command
        assert f"no run {unknown}" in outcome.output, command
        malformed = cli(command, "nonexistent")
        assert malformed.exit_code == 2 and "is not an agent id" in malformed.output, command


def test_result_times_out(agentexec_env: dict[str, str], cli: Any, sqlite_only: None) -> None:
    agent_id = enqueue([1])  # no worker
    outcome = cli("result", str(agent_id), "--timeout", "1")
    assert outcome.exit_code == 1 and "has not ended within 1.0s" in outcome.output


def test_user_text_is_printed_literally(agentexec_session: Session, cli: Any) -> None:
    """Markup-like text and control characters in messages and task names cannot style,
    break or escape the terminal: `show`, `list` and `tail` print them as plain text."""
    from agentexec.testing.plugin import record_events

    agent_id = uuid.uuid4()
    record_events(
        Event(agent_id, ax.Status.QUEUED, "Task queued", kind=EventKind.QUEUED, task="[bold]t"),
        Event(agent_id, ax.Status.RUNNING, "closing [/x] and [red]red[/red]", 10),
        Event(agent_id, ax.Status.RUNNING, "bell\x07 escape\x1b[2J line\nbreak", 20),
        Event(agent_id, ax.Status.COMPLETE, "Task completed", 100, kind=EventKind.COMPLETE),
    )
    for args in (("show", str(agent_id)), ("list",), ("tail", str(agent_id), "--timeout", "5")):
        out = cli(*args).output
        assert "\x1b" not in out and "\x07" not in out, args
        if args[0] == "list":
            assert "[bold]t" in out
            continue
        assert "closing [/x] and [red]red[/red]" in out, args
        assert "bell escape[2J line break" in out, args
    # Stored already clean: an agent's report loses its control characters at the source.
    ax.activity.update(agent_id, "report\x1b[31m with\tcontrol", 30)
    from agentexec.testing.plugin import agentexec_flush

    agentexec_flush()
    detail = ax.activity.detail(agentexec_session, agent_id)
    assert detail is not None and detail.logs[-1].message == "report[31m with control"
