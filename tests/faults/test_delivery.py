"""Delivery under faults: each test breaks a worker or the broker's Redis (a private one) mid-run.

Each prints `fault=<name> sent=N complete=N error=N lost=0 stuck=0 dup=N`, where `dup` counts
runs whose body completed more than once (the agents count their completions in Redis).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

import agentexec as ax
from agentexec.config import get_settings
from agentexec.db.models import Activity, ActivityLog
from agentexec.eventlog.event import Event
from agentexec.processes import WorkerProcess
from agentexec.runtime import get_runtime
from agentexec.states import EventKind, Status
from agentexec.testing import wait_for
from agentexec.testing.openai_script import Reply, last_user_text
from agentexec.testing.openai_server import ScriptedOpenAIServer
from agentexec.testing.plugin import StartWorker, record_events
from agentexec.worker.reaper import MESSAGE_LOST, MESSAGE_PUT_BACK
from tests.apps import APP_DIR, APP_ENV
from tests.faults.audit import Audit, try_audit
from tests.faults.services import PrivateRedis, app_on, redis_available, require_server

# The tests enqueue the user's tasks by name: register them in this process too.
importlib.import_module("userapp.agent_tasks")
importlib.import_module("userapp.worker")

#: A dead worker's runs come back within seconds, and the reaper sweeps every 2 s.
FAST = {
    **APP_ENV,
    "AGENTEXEC_VISIBILITY_TIMEOUT": "4",
    "AGENTEXEC_RESTORE_INTERVAL": "1",
    "AGENTEXEC_HEARTBEAT_INTERVAL": "1",
    "AGENTEXEC_REAPER_INTERVAL": "2",
}


@pytest.fixture
def fault_redis(request: pytest.FixtureRequest) -> Iterator[PrivateRedis]:
    """The broker of one test: a private Redis, with an append-only file unless the test
    is parametrized with `fault_redis=False`."""
    require_server("Redis", redis_available())
    with PrivateRedis(appendonly=getattr(request, "param", True)) as server:
        yield server


@pytest.fixture
def agentexec_redis_url(fault_redis: PrivateRedis) -> str:
    return fault_redis.url


@pytest.fixture
def agentexec_database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/activity.db"


@pytest.fixture(autouse=True)
def _publish_to_fault_redis(
    agentexec_env: dict[str, str], fault_redis: PrivateRedis
) -> Iterator[None]:
    """This process's Celery app publishes to and reads results from the private Redis."""
    with app_on(fault_redis.url):
        yield


async def _enqueue(n: int, **context: Any) -> list[uuid.UUID]:
    handles = await asyncio.gather(*(ax.enqueue("fault_agent", context) for _ in range(n)))
    return [h.agent_id for h in handles]


def _statuses(ids: list[uuid.UUID]) -> dict[uuid.UUID, Status]:
    with Session(get_runtime().engine) as session:
        rows = session.execute(
            select(Activity.agent_id, Activity.status).where(Activity.agent_id.in_(ids))
        )
        return {row[0]: row[1] for row in rows}


def _running(ids: list[uuid.UUID], at_least: int, timeout: float = 30) -> None:
    def enough() -> bool:
        return sum(s is Status.RUNNING for s in _statuses(ids).values()) >= at_least

    wait_for(enough, timeout, f"{at_least} runs RUNNING", interval=0.1)


def _logs(agent_id: uuid.UUID) -> list[tuple[str, str]]:
    with Session(get_runtime().engine) as session:
        rows = session.execute(
            select(ActivityLog.status, ActivityLog.message)
            .where(ActivityLog.agent_id == agent_id)
            .order_by(ActivityLog.seq, ActivityLog.id)
        )
        return [(status.value, message) for status, message in rows]


def _counters(kind: str, ids: list[uuid.UUID], suffix: str = "") -> list[int]:
    """Each run's counter `<prefix>.<kind>.<id><suffix>` in the broker's Redis."""
    client = redis.Redis.from_url(get_settings().redis_url)
    try:
        prefix = get_settings().queue_prefix
        counts = client.mget([f"{prefix}.{kind}.{i}{suffix}" for i in ids])
        return [int(c or 0) for c in counts]  # type: ignore[union-attr]
    finally:
        client.close()


def _duplicates(ids: list[uuid.UUID]) -> int:
    """Runs whose body completed more than once (the agents count their completions)."""
    return sum(count > 1 for count in _counters("completed", ids))


def _settled(ids: list[uuid.UUID], within: float = 60) -> Audit:
    """Wait until no run is QUEUED or RUNNING and SQL has every logged event."""
    runtime = get_runtime()
    found: dict[str, Audit] = {}

    def done() -> bool:
        audit = try_audit(runtime.engine, runtime.events.url, runtime.events.key, ids)
        if audit is None:
            return False
        found["audit"] = audit
        return audit.stuck == 0 and audit.lost == 0

    try:
        wait_for(done, within, "every run to end", interval=0.25)
    except TimeoutError:
        pass
    return found["audit"]


def _report(fault: str, ids: list[uuid.UUID], within: float = 60) -> Audit:
    audit = _settled(ids, within)
    audit.dup = _duplicates(ids)
    print("\n" + audit.line(fault))
    assert (audit.lost, audit.stuck) == (0, 0), audit
    assert audit.dup <= 1, audit
    return audit


@pytest.mark.timeout(300)
async def test_worker_sigkill_then_new_worker(agentexec_worker: StartWorker) -> None:
    first = agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=FAST)
    ids = await _enqueue(20, seconds=3, reports=3)
    await asyncio.to_thread(_running, ids, 10)
    first.kill()
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=FAST)
    audit = await asyncio.to_thread(_report, "worker-sigkill", ids)
    assert audit.complete == 20


@pytest.mark.timeout(300)
async def test_a_run_longer_than_the_visibility_timeout_is_not_redelivered(
    agentexec_worker: StartWorker,
) -> None:
    """Heartbeats keep a live run's message invisible: 20 s agents under a 4 s visibility
    timeout, with an idle second worker that would restore and take them, each run once."""
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=FAST)
    ids = await _enqueue(3, seconds=20, reports=3)
    await asyncio.to_thread(_running, ids, 3)
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=FAST)
    audit = await asyncio.to_thread(_report, "run-longer-than-visibility-timeout", ids, 60)
    assert (audit.complete, audit.dup) == (3, 0)
    # Delivered once each: not even a redelivery that waited for the first delivery to end.
    assert _counters("deliveries", ids, ".0") == [1, 1, 1]
    for agent_id in ids:
        starts = [m for s, m in _logs(agent_id) if s == "RUNNING" and m.startswith("Task started")]
        assert starts == ["Task started"], _logs(agent_id)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.timeout(300)
async def test_prefork_child_sigkill(agentexec_worker: StartWorker) -> None:
    env = {**FAST, "AGENTEXEC_POOL": "prefork", "AGENTEXEC_NUM_WORKERS": "2"}
    worker = agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=env)
    ids = await _enqueue(6, seconds=2, reports=2)
    await asyncio.to_thread(_running, ids, 2)
    child = _children(worker.pid)[0]
    os.kill(child, signal.SIGKILL)
    audit = await asyncio.to_thread(_report, "prefork-child-sigkill", ids)
    assert audit.complete == 6
    assert worker.process is not None and worker.process.poll() is None  # the worker lives on


def _restarted_after_requeue(agent_id: uuid.UUID) -> bool:
    """The run was requeued at shutdown and has started again since."""
    logs = _logs(agent_id)
    requeued = ("QUEUED", "Requeued at shutdown")
    if requeued not in logs:
        return False
    after = logs[logs.index(requeued) + 1 :]
    return any(status == "RUNNING" and "started again" in m for status, m in after)


@pytest.mark.timeout(300)
async def test_sigterm_requeues_agents_longer_than_the_shutdown_timeout(
    agentexec_worker: StartWorker,
) -> None:
    """SIGTERM with 40 s agents and a 10 s shutdown timeout: the worker exits within 15 s, and
    another worker, already running, takes the requeued agents at once, not after the
    visibility timeout."""
    env = {**FAST, "AGENTEXEC_SHUTDOWN_TIMEOUT": "10", "AGENTEXEC_VISIBILITY_TIMEOUT": "3600"}
    first = agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=env)
    long_ids = await _enqueue(4, seconds=40, reports=4)
    short_ids = await _enqueue(4, seconds=3, reports=3)
    ids = long_ids + short_ids
    await asyncio.to_thread(_running, ids, 8)
    second = agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=env)
    assert first.process is not None
    first.process.terminate()
    signalled = time.monotonic()
    await asyncio.to_thread(first.process.wait, 30)
    exited = time.monotonic() - signalled
    for agent_id in long_ids:  # taken by the second worker at once
        restarted_again = functools.partial(_restarted_after_requeue, agent_id)
        await asyncio.to_thread(wait_for, restarted_again, 20, "a requeued run to restart")
    restarted = time.monotonic() - signalled
    print(f"\nsigterm: worker exited {exited:.1f}s after SIGTERM; every requeued run had started "
          f"again on the other worker {restarted:.1f}s after SIGTERM")  # fmt: skip
    assert exited < 15, f"worker took {exited:.1f}s to exit after SIGTERM (timeout 10 s)"
    audit = await asyncio.to_thread(_report, "sigterm-shutdown-timeout", ids, 90)
    assert (audit.complete, audit.dup) == (8, 0)
    for agent_id in short_ids:
        assert ("QUEUED", "Requeued at shutdown") not in _logs(agent_id)
    assert "requeued at shutdown" in first.log()
    assert "Traceback" not in first.log() + second.log()


@pytest.mark.timeout(300)
async def test_redis_restart_with_aof(
    agentexec_worker: StartWorker, fault_redis: PrivateRedis
) -> None:
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=FAST)
    ids = await _enqueue(20, seconds=4, reports=4)
    await asyncio.to_thread(_running, ids, 10)
    await asyncio.to_thread(fault_redis.restart)
    audit = await asyncio.to_thread(_report, "redis-restart-aof", ids, 90)
    assert audit.complete == 20


@pytest.mark.timeout(120)
async def test_reaper_heals_a_finished_runs_row(agentexec_worker: StartWorker) -> None:
    """A stale event after a run's end (a message put back while the broker restarted, say)
    moves its row off COMPLETE. The result says the run has finished: the reaper brings the
    row back to COMPLETE, and nothing runs again."""
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=FAST)
    [agent_id] = await _enqueue(1, seconds=0.2, reports=1)
    assert await ax.get_result(agent_id, timeout=30) == {"reports": 1, "pid": ANY}
    record_events(
        Event(agent_id, Status.QUEUED, MESSAGE_PUT_BACK, kind=EventKind.RETRY, task="fault_agent")
    )
    assert _statuses([agent_id]) == {agent_id: Status.QUEUED}
    audit = await asyncio.to_thread(_report, "stale-event-after-end", [agent_id], 60)
    assert (audit.complete, audit.dup) == (1, 0)
    assert _logs(agent_id)[-2:] == [("QUEUED", MESSAGE_PUT_BACK), ("COMPLETE", "Task completed")]


@pytest.mark.parametrize("fault_redis", [False], indirect=True)
@pytest.mark.timeout(300)
async def test_redis_restart_without_persistence(
    agentexec_worker: StartWorker, fault_redis: PrivateRedis
) -> None:
    env = {**FAST, "AGENTEXEC_NUM_WORKERS": "5"}
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=env)
    ids = await _enqueue(20, seconds=4, reports=4)
    await asyncio.to_thread(_running, ids, 5)
    await asyncio.to_thread(fault_redis.restart, False)  # queues, results and log are gone
    audit = await asyncio.to_thread(_report, "redis-restart-no-persistence", ids, 90)
    assert audit.complete + audit.error == 20
    assert audit.error >= 10  # the queued runs were lost with the broker's memory
    lost = [i for i in ids if ("ERROR", MESSAGE_LOST) in _logs(i)]
    assert len(lost) == audit.error


class _Supervisor:
    """Restarts a worker whenever it dies, as Kubernetes or systemd would."""

    def __init__(self, start: StartWorker, env: dict[str, str]) -> None:
        self.start, self.env = start, env
        self.restarts = 0
        self._stop = threading.Event()
        self.worker: WorkerProcess = start("-I", "userapp.worker", cwd=APP_DIR, env=env)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            process = self.worker.process
            if process is not None and process.poll() is not None:
                self.restarts += 1
                try:
                    self.worker = self.start("-I", "userapp.worker", cwd=APP_DIR, env=self.env)
                except TimeoutError:  # killed before it said "ready": go round again
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(90)


@pytest.mark.timeout(300)
async def test_poison_agent_ends_after_max_deliveries(agentexec_worker: StartWorker) -> None:
    supervisor = _Supervisor(agentexec_worker, {**FAST, "AGENTEXEC_MAX_DELIVERIES": "3"})
    try:
        [poison] = await _enqueue(1, seconds=2, reports=2, poison=True)
        ids = await _enqueue(9, seconds=2, reports=2)
        audit = await asyncio.to_thread(_report, "poison-agent", [poison, *ids], 150)
    finally:
        supervisor.stop()
    assert (audit.complete, audit.error) == (9, 1)
    assert _statuses([poison])[poison] is Status.ERROR
    assert "worker lost 3 times" in _logs(poison)[-1][1]
    with pytest.raises(ax.TaskFailedError, match="worker lost 3 times"):
        await ax.get_result(poison, timeout=10)
    assert supervisor.restarts >= 3  # the poison killed its worker on each of 3 deliveries


def _flaky_responder() -> Any:
    """429 three times, then 500 three times, for each prompt (the openai client itself
    retries twice), then the normal answer. A prompt starting "bad" gets a 400."""
    failures: dict[str, int] = {}
    lock = threading.Lock()

    def respond(request: dict[str, Any]) -> Reply | str:
        prompt = last_user_text(request)
        if prompt.startswith("bad"):
            return Reply.failure(400, "Invalid parameter", error_type="invalid_request_error")
        with lock:
            seen = failures[prompt] = failures.get(prompt, 0) + 1
        if seen <= 3:
            return Reply.failure(429, "Rate limit reached", error_type="rate_limit_exceeded")
        if seen <= 6:
            return Reply.failure(500, "The server had an error")
        return f"Done: {prompt}"

    return respond


@pytest.mark.timeout(300)
async def test_transient_model_errors_retry_with_backoff(agentexec_worker: StartWorker) -> None:
    with ScriptedOpenAIServer(_flaky_responder()) as server:
        env = {**FAST, **server.env(), "AGENTEXEC_RETRY_BACKOFF": "0.2"}
        agentexec_worker("-I", "userapp.agent_tasks", cwd=APP_DIR, env=env)
        contexts = [{"scenario": "http", "prompt": f"task {i}"} for i in range(4)]
        contexts.append({"scenario": "http", "prompt": "bad request"})
        handles = await asyncio.gather(*(ax.enqueue("scripted_agent", c) for c in contexts))
        once = await ax.enqueue("scripted_agent_once", {"scenario": "http", "prompt": "once"})
        ids = [h.agent_id for h in handles]
        for handle, context in zip(handles[:4], contexts, strict=False):
            result = await ax.get_result(handle.agent_id, timeout=90)
            assert result["final"] == f"Done: {context['prompt']}"
        with pytest.raises(ax.TaskFailedError, match="Error code: 400"):
            await ax.get_result(ids[-1], timeout=30)
        with pytest.raises(ax.TaskFailedError, match="Rate limit"):
            await ax.get_result(once.agent_id, timeout=30)  # retries=0: no retry of its own
        audit = await asyncio.to_thread(_report, "transient-model-errors", [*ids, once.agent_id])
    assert (audit.complete, audit.error) == (4, 2)
    assert not [m for _, m in _logs(once.agent_id) if "retrying" in m]
    for agent_id in ids[:4]:
        retries = [m for s, m in _logs(agent_id) if m.startswith("Attempt failed, retrying in")]
        assert len(retries) == 2, _logs(agent_id)
        assert "RateLimitError" in retries[0] and "InternalServerError" in retries[1]
    bad = _logs(ids[-1])
    assert not [m for _, m in bad if "retrying" in m]
    assert bad[-1][0] == "ERROR" and "BadRequestError" in bad[-1][1]
