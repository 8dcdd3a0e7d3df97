"""`agentexec purge`: old finished runs go with their logs, results and cancel reasons; recent
and active runs stay, on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentexec.db.models import Activity, ActivityLog
from agentexec.eventlog.event import Event
from agentexec.keys import cancel_reason
from agentexec.states import EventKind, Status, utcnow
from agentexec.tasks.app import app
from agentexec.testing.plugin import agentexec_flush, record_events

ROOT = Path(__file__).parent.parent.parent
#: The module: `agentexec.cli.purge` is the command, which the package re-exports.
purge_module = importlib.import_module("agentexec.cli.purge")

_END_KIND = {
    Status.COMPLETE: EventKind.COMPLETE,
    Status.ERROR: EventKind.ERROR,
    Status.CANCELED: EventKind.CANCELED,
}


def _run(status: Status, age: timedelta) -> uuid.UUID:
    """A run recorded `age` ago, now `status`, with its result and cancel reason in Redis."""
    agent_id = uuid.uuid4()
    at = utcnow() - age
    events = [Event(agent_id, Status.QUEUED, "Task queued", kind=EventKind.QUEUED, task="t", at=at)]
    if status is not Status.QUEUED:
        events.append(Event(agent_id, Status.RUNNING, "halfway", 50, at=at))
    if status in _END_KIND:
        events.append(Event(agent_id, status, "the end", 100, kind=_END_KIND[status], at=at))
    record_events(*events)
    client = _backend().client
    client.set(_result_key(agent_id), "{}", ex=3600)
    client.set(cancel_reason(str(agent_id)), "why", ex=3600)
    return agent_id


def _backend() -> Any:
    """The result backend, whose Redis holds the results and the cancel reasons."""
    return app.backend


def _result_key(agent_id: uuid.UUID) -> bytes:
    key: bytes = _backend().get_key_for_task(str(agent_id))
    return key


def _in_redis(agent_id: uuid.UUID) -> tuple[bool, bool]:
    client = _backend().client
    return bool(client.exists(_result_key(agent_id))), bool(
        client.exists(cancel_reason(str(agent_id)))
    )


def _rows(session: Session, agent_id: uuid.UUID) -> tuple[int, int]:
    session.expire_all()
    runs = session.scalar(select(func.count()).where(Activity.agent_id == agent_id))
    logs = session.scalar(select(func.count()).where(ActivityLog.agent_id == agent_id))
    return runs or 0, logs or 0


@pytest.fixture
def seeded(agentexec_session: Session) -> Iterator[dict[str, uuid.UUID]]:
    """Old finished runs, a recent finished one, and old active ones."""
    old = timedelta(days=40)
    runs = {
        "old_complete": _run(Status.COMPLETE, old),
        "old_error": _run(Status.ERROR, old),
        "old_canceled": _run(Status.CANCELED, old),
        "recent_complete": _run(Status.COMPLETE, timedelta(days=2)),
        "old_queued": _run(Status.QUEUED, old),
        "old_running": _run(Status.RUNNING, old),
    }
    agentexec_flush()  # the projector has applied them too: nothing rewrites a row later
    yield runs
    client = _backend().client
    for agent_id in runs.values():
        client.delete(_result_key(agent_id), cancel_reason(str(agent_id)))


GONE = ("old_complete", "old_error", "old_canceled")
KEPT = ("recent_complete", "old_queued", "old_running")


def test_removes_old_finished_runs_only(
    seeded: dict[str, uuid.UUID], agentexec_session: Session, cli: Any
) -> None:
    for name in (*GONE, *KEPT):
        runs, logs = _rows(agentexec_session, seeded[name])
        assert runs == 1 and logs >= 1, name
    out = cli("purge", "--older-than", "30d")
    assert out.exit_code == 0, out.output
    assert out.output.strip() == "removed 3 finished runs and 3 result keys"
    for name in GONE:
        assert _rows(agentexec_session, seeded[name]) == (0, 0), name
        assert _in_redis(seeded[name]) == (False, False), name
    for name in KEPT:
        runs, logs = _rows(agentexec_session, seeded[name])
        assert runs == 1 and logs >= 1, name
        assert _in_redis(seeded[name]) == (True, True), name
    again = cli("purge", "--older-than", "30d")
    assert again.output.strip() == "removed 0 finished runs and 0 result keys"
    recent = cli("purge", "--older-than", "24h")
    assert recent.output.strip() == "removed 1 finished runs and 1 result keys"
    assert _rows(agentexec_session, seeded["recent_complete"]) == (0, 0)
    for name in ("old_queued", "old_running"):
        assert _rows(agentexec_session, seeded[name])[0] == 1, name


def test_dry_run_counts_and_changes_nothing(
    seeded: dict[str, uuid.UUID], agentexec_session: Session, cli: Any
) -> None:
    before = {name: _rows(agentexec_session, agent_id) for name, agent_id in seeded.items()}
    out = cli("purge", "--older-than", "720h", "--dry-run")
    assert out.exit_code == 0, out.output
    assert out.output.strip() == "would remove 3 finished runs and 3 result keys (dry run)"
    after = {name: _rows(agentexec_session, agent_id) for name, agent_id in seeded.items()}
    assert after == before
    assert all(_in_redis(agent_id) == (True, True) for agent_id in seeded.values())


def test_works_in_batches(
    seeded: dict[str, uuid.UUID],
    agentexec_session: Session,
    cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More runs than one batch: every batch is read once, in dry runs and real ones."""
    monkeypatch.setattr(purge_module, "BATCH", 2)
    counted = cli("purge", "--older-than", "30d", "--dry-run")
    assert counted.output.strip() == "would remove 3 finished runs and 3 result keys (dry run)"
    out = cli("purge", "--older-than", "30d")
    assert out.output.strip() == "removed 3 finished runs and 3 result keys"
    assert all(_rows(agentexec_session, seeded[name]) == (0, 0) for name in GONE)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("3600s", timedelta(seconds=3600)),
        ("7", timedelta(days=7)),
        ("1.5d", timedelta(hours=36)),
    ],
)
def test_durations(given: str, expected: timedelta) -> None:
    assert purge_module.parse_duration(given) == expected


@pytest.mark.parametrize("bad", ["", "d", "3x", "-5d", "0s", "12 hours", "1e3d", "99999999d"])
def test_a_bad_duration_is_refused(
    agentexec_env: dict[str, str], cli: Any, sqlite_only: None, bad: str
) -> None:
    out = cli("purge", "--older-than", bad)
    assert out.exit_code == 2
    assert "Invalid value for '--older-than'" in out.output
    if bad != "99999999d":
        assert "30d, 12h, 90m or 3600s" in out.output


def test_never_creates_the_database(
    tmp_path: Path, agentexec_env: dict[str, str], sqlite_only: None
) -> None:
    """Run as a user runs it: a missing SQLite file is an error, not a new database."""
    env = {**os.environ, **agentexec_env, "PYTHONPATH": str(ROOT)}
    env["DATABASE_URL"] = "sqlite:///agents.db"
    out = subprocess.run(
        [sys.executable, "-m", "agentexec", "purge", "--older-than", "30d"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "no activity database at sqlite:///agents.db" in out.stderr
    assert not (tmp_path / "agents.db").exists()
