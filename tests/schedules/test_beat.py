"""Schedules on Celery beat, kept in Redis: two beats (one fires, the other waits on the
lock), an every-second schedule, and one that skips while its previous run still goes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.cli import main
from agentexec.db.models import ActivityLog
from agentexec.processes import WorkerProcess
from agentexec.tasks.schedules import remove, stored
from agentexec.testing.plugin import StartWorker
from tests.apps import APP_DIR, APP_ENV

pytestmark = pytest.mark.usefixtures("sqlite_only")


@pytest.fixture
def start_beat(agentexec_env: dict[str, str], tmp_path: Path) -> Iterator[object]:
    beats: list[WorkerProcess] = []

    def start(n: int, ready_mark: str) -> WorkerProcess:
        argv = [sys.executable, "-m", "agentexec", "beat", "-A", "userapp.scheduled"]
        env = {**os.environ, **agentexec_env, **APP_ENV}
        beat = WorkerProcess(argv, env, APP_DIR, tmp_path / f"beat{n}.log")
        beats.append(beat)
        return beat.start(60, lambda: ready_mark in beat.log())

    yield start
    for beat in beats:
        beat.stop(10)


def _fired(session: Session, schedule: str) -> int:
    message = f"Task queued by schedule '{schedule}'"
    return int(session.scalar(select(func.count()).where(ActivityLog.message == message)) or 0)


@pytest.mark.timeout(120)
async def test_one_beat_fires_every_second_while_a_second_one_waits(
    agentexec_worker: StartWorker, agentexec_session: Session, start_beat: object
) -> None:
    agentexec_worker("-I", "userapp.scheduled", "-c", "10", cwd=APP_DIR, env=APP_ENV)
    first = await asyncio.to_thread(start_beat, 1, "beat: Acquired lock")  # type: ignore[operator]
    started = time.monotonic()
    second = await asyncio.to_thread(start_beat, 2, "another beat holds the lock")  # type: ignore[operator]
    await asyncio.sleep(10 - (time.monotonic() - started))
    every_second, skipping = (
        _fired(agentexec_session, "every_second"),
        _fired(agentexec_session, "slow_skip"),
    )
    print(f"schedules: in 10 s every_second fired {every_second} times, slow_skip {skipping}")
    assert 9 <= every_second <= 11
    assert 2 <= skipping <= 4, first.log()[-6000:]  # a 3 s run every second, skipped while one goes
    assert "Sending due task" not in second.log() and "Acquired lock" not in second.log()
    assert "still goes" in first.log()  # the skips are said
    # The first beat stops: the second takes over, and the schedules go on.
    await asyncio.to_thread(first.stop, 10)
    await asyncio.to_thread(lambda: time.sleep(0.1) or None)
    deadline = time.monotonic() + 20
    while "beat: Acquired lock" not in second.log():
        assert time.monotonic() < deadline, second.log()[-2000:]
        await asyncio.sleep(0.2)
    before = _fired(agentexec_session, "every_second")
    await asyncio.sleep(3)
    assert _fired(agentexec_session, "every_second") > before
    await ax.close_redis()


def test_schedules_are_added_listed_and_removed_while_beat_runs(
    agentexec_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = CliRunner()
    monkeypatch.chdir(APP_DIR)  # restored after the test: later workers start from the root
    added = cli.invoke(main, ["schedule", "add", "-A", "userapp.scheduled", "hourly",
                              "tick_agent", "0 * * * *", "--context", '{"seconds": 1}',
                              "--overlap", "skip"])  # fmt: skip
    assert added.exit_code == 0, (added.output, repr(added.exception))
    listed = cli.invoke(main, ["schedule", "list", "-A", "userapp.scheduled", "--json"])
    assert '"name": "hourly"' in listed.output and "overlap=skip" in listed.output
    bad = cli.invoke(main, ["schedule", "add", "-A", "userapp.scheduled", "x", "tick_agent",
                            "every day"])  # fmt: skip
    assert bad.exit_code != 0 and "is not a cron expression" in bad.output
    invalid = cli.invoke(main, ["schedule", "add", "-A", "userapp.scheduled", "x",
                                "tick_agent", "5", "--context", '{"seconds": -1}'])  # fmt: skip
    assert invalid.exit_code != 0 and "seconds" in invalid.output
    removed = cli.invoke(main, ["schedule", "remove", "-A", "userapp.scheduled", "hourly"])
    assert removed.exit_code == 0, removed.output
    again = cli.invoke(main, ["schedule", "remove", "-A", "userapp.scheduled", "hourly"])
    assert again.exit_code != 0 and "no schedule is named 'hourly'" in again.output
    import userapp.scheduled as scheduled

    assert "hourly" not in [e.name for e in stored(scheduled.pool.app)]
    assert not remove(scheduled.pool.app, "hourly")


def test_bad_schedules_are_refused_when_declared() -> None:
    import userapp.scheduled as scheduled

    pool = scheduled.pool
    with pytest.raises(ax.InvalidRequestError, match="not a cron expression"):
        pool.add_schedule("tick_agent", "*/5 * *")
    with pytest.raises(ax.InvalidRequestError, match="overlap must be"):
        pool.add_schedule("tick_agent", 5, overlap="never")  # type: ignore[arg-type]
    with pytest.raises(ax.InvalidContextError):
        pool.add_schedule("tick_agent", 5, {"seconds": "soon"})
    with pytest.raises(ax.UnknownTaskError):
        pool.add_schedule("no_such_task", 5)
