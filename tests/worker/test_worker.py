"""Agent tasks on real worker processes, started both ways, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from userapp.worker import SleepContext

import agentexec as ax
from agentexec.testing import wait_for
from agentexec.testing.plugin import StartWorker
from tests.apps import APP_DIR, APP_ENV


def _logs(session: Session, agent_id: uuid.UUID) -> list[tuple[str, str]]:
    session.expire_all()
    activity = ax.activity.detail(session, agent_id)
    assert activity is not None
    return [(log.status.value, log.message) for log in activity.logs]


def _status(session: Session, agent_id: uuid.UUID) -> ax.Status | None:
    session.expire_all()
    activity = ax.activity.detail(session, agent_id)
    return activity.status if activity else None


async def test_celery_worker_dash_I_serves_a_plain_project(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)
    task = await ax.enqueue("sleep_agent", SleepContext(label="a", reports=2))
    result = await ax.get_result(task.agent_id, timeout=30)
    assert result["label"] == "a"
    assert _logs(agentexec_session, task.agent_id) == [
        ("QUEUED", "Task queued"),
        ("RUNNING", "Task started"),
        ("RUNNING", "step 1"),
        ("RUNNING", "step 2"),
        ("COMPLETE", "Task completed"),
    ]
    activity = ax.activity.detail(agentexec_session, task.agent_id)
    assert activity is not None and activity.latest_completion_percentage == 100
    assert activity.agent_type == "sleep_agent"
    await ax.close_redis()


async def test_delay_from_another_process_is_tracked_like_enqueue(
    agentexec_worker: StartWorker, agentexec_session: Session, agentexec_env: dict[str, str]
) -> None:
    agentexec_worker(module="userapp.worker", cwd=APP_DIR, env=APP_ENV)
    code = (
        "from userapp.worker import sleep_agent, SleepContext\n"
        "r = sleep_agent.delay(SleepContext(label='from-delay', reports=1))\n"
        "print(r.id)\n"
    )
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", code],
        env={**os.environ, **agentexec_env, **APP_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    agent_id = uuid.UUID(out.stdout.strip().splitlines()[-1])
    assert (await ax.get_result(agent_id, timeout=30))["label"] == "from-delay"
    assert _logs(agentexec_session, agent_id) == [
        ("QUEUED", "Task queued"),
        ("RUNNING", "Task started"),
        ("RUNNING", "step 1"),
        ("COMPLETE", "Task completed"),
    ]
    await ax.close_redis()


async def test_pool_run_stops_gracefully_on_sigterm(agentexec_worker: StartWorker) -> None:
    worker = agentexec_worker(module="userapp.worker", cwd=APP_DIR, env=APP_ENV)
    task = await ax.enqueue("sleep_agent", {"label": "before-stop"})
    assert (await ax.get_result(task.agent_id, timeout=30))["label"] == "before-stop"
    assert worker.stop() == 0
    assert "Warm shutdown" in worker.log()
    await ax.close_redis()


async def test_high_priority_starts_before_queued_low(
    agentexec_worker: StartWorker, agentexec_session: Session, sqlite_only: None
) -> None:
    agentexec_worker("-I", "userapp.worker", "--concurrency=2", cwd=APP_DIR, env=APP_ENV)
    blockers = [
        await ax.enqueue("sleep_agent", {"seconds": 2, "label": f"block{i}"}) for i in range(2)
    ]
    wait_for(
        lambda: all(_status(agentexec_session, b.agent_id) is ax.Status.RUNNING for b in blockers),
        30,
        "both slots busy",
    )
    lows = [await ax.enqueue("sleep_agent", {"label": f"low{i}"}) for i in range(6)]
    high = await ax.enqueue("sleep_agent", {"label": "high"}, priority=ax.Priority.HIGH)
    high_started = (await ax.get_result(high.agent_id, timeout=60))["started"]
    low_started = [(await ax.get_result(t.agent_id, timeout=60))["started"] for t in lows]
    assert all(high_started < started for started in low_started)
    await ax.close_redis()


async def test_fifty_agents_are_in_flight_at_once_on_one_process(
    agentexec_worker: StartWorker, sqlite_only: None
) -> None:
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)  # default slot count
    group = uuid.uuid4().hex
    tasks = await asyncio.gather(
        *(ax.enqueue("meet_agent", {"group": group, "size": 50}) for _ in range(50))
    )
    results = await asyncio.gather(*(ax.get_result(t.agent_id, timeout=90) for t in tasks))
    assert len({r["pid"] for r in results}) == 1
    # Each run waited until all 50 had arrived: all 50 were in flight at once.
    assert all(r["met"] for r in results), sorted(r["arrived"] for r in results)
    await ax.close_redis()


@pytest.mark.parametrize("tuned", [True, False])
async def test_a_worker_tunes_its_garbage_collector_and_model_connections_for_many_agents(
    agentexec_worker: StartWorker, sqlite_only: None, tuned: bool
) -> None:
    env = {**APP_ENV, "AGENTEXEC_GC_FREEZE": str(tuned).lower()}
    if not tuned:
        env.update(AGENTEXEC_GC_THRESHOLD="0", AGENTEXEC_MODEL_CONNECTIONS="0")
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=env)
    task = await ax.enqueue("sleep_agent", {"label": "gc"})
    found = await ax.get_result(task.agent_id, timeout=60)
    # Celery, SQLAlchemy, pydantic and the tasks: well over 50,000 objects once imported.
    assert found["gc_frozen"] > 50_000 if tuned else found["gc_frozen"] == 0
    # The young generation is collected every 50,000 allocations, or at Python's 700.
    assert found["gc_threshold"] == ([50_000, 10, 10] if tuned else [700, 10, 10])
    # The SDK's shared model client keeps every connection it opens, in 10 pools of 100, and
    # allows 20 s to connect; with `0` it is the SDK's own (1,000 connections, 100 kept, 5 s).
    assert found["model_pool"] == (
        {"pools": 10, "connections": 1000, "keepalive": 1000, "connect_timeout": 20.0}
        if tuned
        else {"pools": 1, "connections": 1000, "keepalive": 100, "connect_timeout": 5.0}
    )
    await ax.close_redis()


async def test_failure_is_recorded_and_the_worker_keeps_serving(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)
    failing = await ax.enqueue("sleep_agent", {"fail": "model unavailable"})
    with pytest.raises(ax.TaskFailedError, match="RuntimeError: model unavailable"):
        await ax.get_result(failing.agent_id, timeout=30)
    assert _logs(agentexec_session, failing.agent_id)[-1] == (
        "ERROR",
        "RuntimeError: model unavailable",
    )
    after = await ax.enqueue("sleep_agent", {"label": "after"})
    assert (await ax.get_result(after.agent_id, timeout=30))["label"] == "after"
    await ax.close_redis()


async def test_invalid_context_that_bypassed_the_producer_ends_error(
    agentexec_worker: StartWorker, agentexec_session: Session, sqlite_only: None
) -> None:
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)
    # send_task skips agentexec's producer-side validation; the worker still checks.
    result = ax.app.send_task(
        "sleep_agent", args=[{"seconds": "soon"}], queue=ax.get_settings().low_queue
    )
    with pytest.raises(ax.TaskFailedError, match="seconds"):
        await ax.get_result(result.id, timeout=30)
    assert _status(agentexec_session, uuid.UUID(result.id)) is ax.Status.ERROR
    await ax.close_redis()


async def test_task_unknown_to_the_worker_ends_error(
    agentexec_worker: StartWorker, agentexec_session: Session, sqlite_only: None
) -> None:
    pool = ax.WorkerPool()

    @pool.task("only_in_the_web_app")
    async def only_here(agent_id: uuid.UUID, context: SleepContext) -> dict[str, str]:
        return {}

    try:
        agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)
        task = await ax.enqueue("only_in_the_web_app", {})
        with pytest.raises(ax.TaskFailedError, match="only_in_the_web_app"):
            await ax.get_result(task.agent_id, timeout=30)
        # Recorded by the worker's main process right after Celery stores the failure.
        wait_for(lambda: _status(agentexec_session, task.agent_id) is ax.Status.ERROR, 10, "err")
        after = await ax.enqueue("sleep_agent", {"label": "still-serving"})
        assert (await ax.get_result(after.agent_id, timeout=30))["label"] == "still-serving"
    finally:
        del ax.app.tasks["only_in_the_web_app"]
        await ax.close_redis()


async def test_pickle_is_refused_and_the_worker_keeps_serving(
    agentexec_worker: StartWorker, agentexec_env: dict[str, str], sqlite_only: None
) -> None:
    worker = agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)
    with ax.app.connection_for_write() as conn:
        conn.default_channel.basic_publish(
            conn.default_channel.prepare_message(
                b"\x80\x04N.",
                content_type="application/x-python-serialize",
                content_encoding="binary",
                headers={"task": "sleep_agent", "id": str(uuid.uuid4())},
            ),
            exchange="",
            routing_key=ax.get_settings().low_queue,
        )
    after = await ax.enqueue("sleep_agent", {"label": "after-pickle"})
    assert (await ax.get_result(after.agent_id, timeout=30))["label"] == "after-pickle"
    assert "pickle" in worker.log().lower() or "untrusted" in worker.log().lower()
    await ax.close_redis()


async def test_unknown_name_or_bad_context_publishes_nothing(
    agentexec_env: dict[str, str], agentexec_session: Session, sqlite_only: None
) -> None:
    client = redis.Redis.from_url(agentexec_env["REDIS_URL"])
    queues = [ax.get_settings().low_queue, ax.get_settings().high_queue]
    with pytest.raises(ax.UnknownTaskError, match="no_such_task"):
        await ax.enqueue("no_such_task", {})
    with pytest.raises(ax.InvalidContextError, match="seconds"):
        await ax.enqueue("sleep_agent", {"seconds": -1})
    with pytest.raises(ax.InvalidContextError, match="seconds"):
        from userapp.worker import sleep_agent

        sleep_agent.delay({"seconds": "later"})
    assert [client.llen(q) for q in queues] == [0, 0]
    assert ax.activity.list(agentexec_session).total == 0
    client.close()


async def test_results_unknown_and_timeout(
    agentexec_env: dict[str, str], sqlite_only: None
) -> None:
    with pytest.raises(KeyError):
        await ax.get_result(uuid.uuid4(), timeout=1)
    with pytest.raises(KeyError):
        await ax.get_result("nonexistent", timeout=1)
    task = await ax.enqueue("sleep_agent", {"label": "nobody-serves-me"})
    with pytest.raises(TimeoutError):
        await ax.get_result(task.agent_id, timeout=0.5)
    await ax.close_redis()


async def test_cancel_running_and_queued(
    agentexec_worker: StartWorker, agentexec_session: Session, sqlite_only: None
) -> None:
    queued = await ax.enqueue("sleep_agent", {"label": "never"})
    assert await ax.cancel(queued.agent_id)
    assert _status(agentexec_session, queued.agent_id) is ax.Status.CANCELED
    with pytest.raises(ax.TaskCanceledError):
        await ax.get_result(queued.agent_id, timeout=5)

    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)
    running = await ax.enqueue("sleep_agent", {"seconds": 60, "label": "long"})
    wait_for(lambda: _status(agentexec_session, running.agent_id) is ax.Status.RUNNING, 30, "run")
    assert await ax.cancel(running.agent_id)
    with pytest.raises(ax.TaskCanceledError):
        await ax.get_result(running.agent_id, timeout=30)
    wait_for(
        lambda: _status(agentexec_session, running.agent_id) is ax.Status.CANCELED, 30, "cancel"
    )
    # The worker is free again, and the run canceled while queued never started.
    after = await ax.enqueue("sleep_agent", {"label": "after-cancel"})
    assert (await ax.get_result(after.agent_id, timeout=30))["label"] == "after-cancel"
    assert ("RUNNING", "Task started") not in _logs(agentexec_session, queued.agent_id)
    assert not await ax.cancel(running.agent_id)
    await ax.close_redis()


async def test_a_canceled_run_keeps_its_reason_while_every_worker_hears_the_revoke(
    agentexec_worker: StartWorker, agentexec_session: Session, sqlite_only: None
) -> None:
    """Every worker on the broker hears a revoke, and Celery's store a pending run's result
    with the reason "revoked" (a running one's, "terminated"). The caller's reason is what
    the result and the log say: first for queued runs, beside a worker of another deployment
    (its own queues, so the runs stay queued), then for a running run."""
    other = {**APP_ENV, "AGENTEXEC_QUEUE_PREFIX": f"other-{uuid.uuid4().hex[:8]}"}
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=other)
    for attempt in range(5):
        queued = await ax.enqueue("sleep_agent", {"label": f"never {attempt}"})
        assert await ax.cancel(queued.agent_id, reason="Not needed")
        await asyncio.sleep(0.5)  # the other worker has heard the revoke
        with pytest.raises(ax.TaskCanceledError, match="Not needed"):
            await ax.get_result(queued.agent_id, timeout=5)
        assert _logs(agentexec_session, queued.agent_id)[-1] == ("CANCELED", "Not needed")

    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)
    running = await ax.enqueue("sleep_agent", {"seconds": 60, "label": "long"})
    wait_for(lambda: _status(agentexec_session, running.agent_id) is ax.Status.RUNNING, 30, "run")
    assert await ax.cancel(running.agent_id, reason="Stop now")
    with pytest.raises(ax.TaskCanceledError, match="Stop now"):
        await ax.get_result(running.agent_id, timeout=30)
    wait_for(
        lambda: _status(agentexec_session, running.agent_id) is ax.Status.CANCELED, 30, "cancel"
    )
    assert _logs(agentexec_session, running.agent_id)[-1] == ("CANCELED", "Stop now")
    await ax.close_redis()


async def test_killed_worker_loses_no_task(
    agentexec_worker: StartWorker, agentexec_session: Session, sqlite_only: None
) -> None:
    env = {**APP_ENV, "AGENTEXEC_VISIBILITY_TIMEOUT": "3", "AGENTEXEC_RESTORE_INTERVAL": "1"}
    first = agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=env)
    task = await ax.enqueue("sleep_agent", {"seconds": 4, "label": "survivor"})
    wait_for(lambda: _status(agentexec_session, task.agent_id) is ax.Status.RUNNING, 30, "run")
    first.kill()
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=env)
    assert (await ax.get_result(task.agent_id, timeout=60))["label"] == "survivor"
    logs = _logs(agentexec_session, task.agent_id)
    assert ("RUNNING", "Task started") in logs
    starts = [message for status, message in logs if status == "RUNNING"]
    assert starts == ["Task started", "Task started again (delivery 2)"]  # no third run
    assert logs[-1] == ("COMPLETE", "Task completed")
    await ax.close_redis()


async def test_prefork_pool_and_a_lost_child(
    agentexec_worker: StartWorker, agentexec_session: Session, sqlite_only: None
) -> None:
    env = {**APP_ENV, "AGENTEXEC_POOL": "prefork"}
    worker = agentexec_worker("-I", "userapp.worker", "-c", "1", cwd=APP_DIR, env=env)
    ok = await ax.enqueue("sleep_agent", {"label": "in-a-child"})
    result = await ax.get_result(ok.agent_id, timeout=30)
    assert result["pid"] != worker.pid  # ran in a forked child, on that child's own loop
    doomed = await ax.enqueue("sleep_agent", {"seconds": 3, "label": "child-killed"})
    wait_for(lambda: _status(agentexec_session, doomed.agent_id) is ax.Status.RUNNING, 30, "run")
    children = _children(worker.pid)
    assert children, "prefork worker has no child"
    os.kill(int(children[0]), 9)
    # task_reject_on_worker_lost: the message goes back on the queue and runs again.
    assert (await ax.get_result(doomed.agent_id, timeout=60))["label"] == "child-killed"
    wait_for(lambda: _status(agentexec_session, doomed.agent_id) is ax.Status.COMPLETE, 10, "done")
    messages = [m for _, m in _logs(agentexec_session, doomed.agent_id)]
    assert messages.count("Task completed") == 1
    assert "Task started again (delivery 2)" in messages


def _children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


async def test_retry_requeues_the_same_run(
    agentexec_worker: StartWorker, agentexec_session: Session, tmp_path: Path
) -> None:
    agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)
    task = await ax.enqueue("flaky_agent", {"marker": str(tmp_path / "marker")})
    assert await ax.get_result(task.agent_id, timeout=30) == {"attempts": 2}
    logs = _logs(agentexec_session, task.agent_id)
    assert logs[0] == ("QUEUED", "Task queued")
    assert ("QUEUED", "Retry 1 queued") in logs
    assert ("QUEUED", "Attempt failed, retrying: RuntimeError: first attempt fails") in logs
    assert [m for _, m in logs].count("Task started") == 2
    assert logs[-1] == ("COMPLETE", "Task completed")
    assert ax.activity.list(agentexec_session).total == 1


async def test_celery_call_on_a_fresh_sqlite_file_records_the_whole_run(
    agentexec_worker: StartWorker, agentexec_env: dict[str, str], tmp_path: Path, sqlite_only: None
) -> None:
    """`celery -A agentexec worker` creates the tables itself; `celery call` is tracked."""
    repo = Path(__file__).parent.parent.parent
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    worker = agentexec_worker(cwd=repo, env={"DATABASE_URL": fresh})
    out = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "agentexec",
            "call",
            "summarize_numbers",
            "--args",
            '[{"numbers": [1, 2, 3]}]',
        ],
        cwd=repo,
        env={**os.environ, **agentexec_env, "DATABASE_URL": fresh},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    agent_id = uuid.UUID(out.stdout.strip().splitlines()[-1])
    engine = create_engine(fresh)
    try:

        def finished() -> list[tuple[str, str]] | None:
            with Session(engine) as session:
                activity = ax.activity.detail(session, agent_id)
            if activity is None or activity.status is not ax.Status.COMPLETE:
                return None
            return [(log.status.value, log.message) for log in activity.logs]

        logs = await asyncio.to_thread(wait_for, finished, 30, "the run recorded")
    finally:
        engine.dispose()
    assert logs == [
        ("RUNNING", "Task started"),
        ("RUNNING", "Added 1 of 3"),
        ("RUNNING", "Added 2 of 3"),
        ("RUNNING", "Added 3 of 3"),
        ("COMPLETE", "Task completed"),
    ]
    assert "Traceback" not in worker.log()


async def test_watchdog_names_the_agent_that_blocks_the_loop(
    agentexec_worker: StartWorker, sqlite_only: None
) -> None:
    env = {**APP_ENV, "AGENTEXEC_LOOP_BLOCK_WARNING": "0.5"}
    worker = agentexec_worker("-I", "userapp.worker", cwd=APP_DIR, env=env)
    beside = await ax.enqueue("sleep_agent", {"seconds": 0.2, "label": "beside"})
    blocker = await ax.enqueue("blocking_agent", {"seconds": 2, "label": "blocker"})
    assert (await ax.get_result(blocker.agent_id, timeout=30))["label"] == "blocker"
    assert (await ax.get_result(beside.agent_id, timeout=30))["label"] == "beside"
    log = wait_for(lambda: "answered again" in worker.log() and worker.log(), 10, "the warning")
    warning = log[log.index("event loop blocked") :]
    assert f"agent {blocker.agent_id} (task blocking_agent)" in warning.splitlines()[0]
    assert "time.sleep(context.seconds)" in warning  # the blocking line, from the stack
    await ax.close_redis()
