"""Pipelines on real workers: plan → a 5-way fan-out → write, advanced by the workers, with
a worker SIGKILLed mid-pipeline, a cancel mid-fan-out and a failing child."""

from __future__ import annotations

import asyncio
import typing
import uuid
from typing import Any

import pytest
import redis
import userapp.pipelines
from click.testing import CliRunner
from pydantic import BaseModel
from sqlalchemy.orm import Session
from userapp.pipelines import ResearchPipeline, Topic, pipeline

import agentexec as ax
from agentexec.cli import main
from agentexec.config import get_settings
from agentexec.testing import wait_for
from agentexec.testing.plugin import StartWorker
from tests.apps import APP_DIR
from tests.faults.test_delivery import FAST

pytestmark = pytest.mark.usefixtures("sqlite_only")
STEPS = ("plan", "research", "write")


def _counts(keys: list[str]) -> list[int]:
    client = redis.Redis.from_url(get_settings().redis_url)
    prefix = get_settings().queue_prefix
    try:
        return [int(c or 0) for c in client.mget([f"{prefix}.{k}" for k in keys])]  # type: ignore[union-attr]
    finally:
        client.close()


def _detail(session: Session, agent_id: uuid.UUID) -> Any:
    session.expire_all()
    return ax.activity.detail(session, agent_id)


async def _researchers_canceled(session: Session, agent_id: uuid.UUID, status: ax.Status) -> Any:
    """Wait until the pipeline run is `status` and every researcher child CANCELED."""

    def ended() -> Any:
        detail = _detail(session, agent_id)
        kids = [c for c in detail.children if c.task == "researcher"]
        return (
            detail.status is status and all(c.status is ax.Status.CANCELED for c in kids) and detail
        )

    return await asyncio.to_thread(
        wait_for, ended, 20, f"{status.value}, every researcher CANCELED"
    )


def _report(topic: str, n: int = 5) -> dict[str, Any]:
    return {"topic": topic, "answers": [f"answer to {topic} q{i}" for i in range(n)]}


async def test_a_pipeline_fans_out_to_five_runs_and_completes(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    agentexec_worker("-I", "userapp.pipelines", cwd=APP_DIR, env=FAST)
    run = await pipeline.enqueue(Topic(topic="tides"), owner="acme")
    assert await ax.get_result(run.agent_id, timeout=60) == _report("tides")
    detail = await asyncio.to_thread(
        wait_for, lambda: (d := _detail(agentexec_session, run.agent_id)) and
        d.status is ax.Status.COMPLETE and len(d.children) == 8 and d, 20, "the rows",
    )  # fmt: skip
    assert detail.agent_type == "research_pipeline" and detail.owner == "acme"
    positions = [c.position for c in detail.children]
    assert positions == ["0", "1", "1.0", "1.1", "1.2", "1.3", "1.4", "2"]
    assert [c.task for c in detail.children] == [
        "research_pipeline.plan", "research_pipeline.research", *["researcher"] * 5,
        "research_pipeline.write",
    ]  # fmt: skip
    assert {c.status for c in detail.children} == {ax.Status.COMPLETE}
    logs = [log.message for log in detail.logs]
    assert logs[0] == "Pipeline queued" and logs[-1] == "Pipeline completed (3 steps)"
    assert "Step 2/3: research, 5/5 done" in logs
    # Every child is a run of its own, owned like the pipeline.
    child = _detail(agentexec_session, detail.children[3].agent_id)
    assert child.status is ax.Status.COMPLETE and child.owner == "acme"
    page = ax.activity.list(agentexec_session, owner="acme", page_size=20)
    assert page.total == 9
    shown = CliRunner().invoke(main, ["show", str(run.agent_id)]).output
    assert "\nruns\n" in shown and "    1.4  research" in shown and "2  write" in shown
    await ax.close_redis()


@pytest.mark.timeout(180)
async def test_a_worker_killed_mid_pipeline_loses_nothing_and_repeats_no_step(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    first = agentexec_worker("-I", "userapp.pipelines", cwd=APP_DIR, env=FAST)
    runs = [await pipeline.enqueue(Topic(topic=f"t{i}", child_seconds=2.0)) for i in range(3)]
    # Killed while the researchers run (the plan and research steps finished).
    await asyncio.to_thread(
        wait_for,
        lambda: all(c == 1 for c in _counts([f"pipeline.research.{r.agent_id}" for r in runs])),
        30, "the fan-outs",
    )  # fmt: skip
    await asyncio.sleep(0.5)
    first.kill()
    agentexec_worker("-I", "userapp.pipelines", cwd=APP_DIR, env=FAST)
    results = await asyncio.gather(*(ax.get_result(r.agent_id, timeout=120) for r in runs))
    assert results == [_report(f"t{i}") for i in range(3)]
    for run in runs:
        # No step's body completed twice, nor any researcher's.
        assert _counts([f"pipeline.{s}.{run.agent_id}" for s in STEPS]) == [1, 1, 1]
        detail = _detail(agentexec_session, run.agent_id)
        researchers = [c.agent_id for c in detail.children if c.task == "researcher"]
        assert len(researchers) == 5
        assert _counts([f"researcher.{i}" for i in researchers]) == [1] * 5
    await ax.close_redis()


async def test_cancel_mid_fan_out_cancels_every_child(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    agentexec_worker("-I", "userapp.pipelines", cwd=APP_DIR, env=FAST)
    run = await pipeline.enqueue(Topic(topic="slow", child_seconds=60))

    def fanned_out() -> Any:
        detail = _detail(agentexec_session, run.agent_id)
        kids = [c for c in detail.children if c.task == "researcher"] if detail else []
        return len(kids) == 5 and all(c.status is ax.Status.RUNNING for c in kids)

    await asyncio.to_thread(wait_for, fanned_out, 30, "the researchers to run")
    assert await ax.cancel(run.agent_id, "no longer needed")
    with pytest.raises(ax.TaskCanceledError):
        await ax.get_result(run.agent_id, timeout=10)

    detail = await _researchers_canceled(agentexec_session, run.agent_id, ax.Status.CANCELED)
    assert [c.position for c in detail.children][-1] == "1.4"  # the write step never ran
    assert not await ax.cancel(run.agent_id)
    await ax.close_redis()


async def test_a_child_canceled_on_its_own_ends_the_pipeline_naming_it(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    """A fan-out child canceled by its own id while it waits in the queue: the pipeline
    cannot complete without it, so it ends ERROR naming the child, and its other children
    are canceled, instead of waiting forever."""
    agentexec_worker("-I", "userapp.pipelines", cwd=APP_DIR,
                     env={**FAST, "AGENTEXEC_NUM_WORKERS": "2"})  # fmt: skip
    run = await pipeline.enqueue(Topic(topic="slow", child_seconds=60))

    def one_queued() -> Any:
        detail = _detail(agentexec_session, run.agent_id)
        kids = [c for c in detail.children if c.task == "researcher"] if detail else []
        running = [c for c in kids if c.status is ax.Status.RUNNING]
        queued = [c for c in kids if c.status is ax.Status.QUEUED]
        return len(kids) == 5 and len(running) == 2 and queued and queued[-1]

    child = await asyncio.to_thread(wait_for, one_queued, 30, "2 researchers running")
    assert await ax.cancel(child.agent_id, "not this one")
    with pytest.raises(ax.TaskFailedError) as failed:
        await ax.get_result(run.agent_id, timeout=20)
    assert f"step 'research', child {child.position.split('.')[1]} (researcher " in (
        failed.value.reason
    )
    assert "was canceled: not this one" in failed.value.reason

    detail = await _researchers_canceled(agentexec_session, run.agent_id, ax.Status.ERROR)
    assert [c.position for c in detail.children][-1] == "1.4"  # the write step never ran
    await ax.close_redis()


async def test_a_failing_child_ends_the_pipeline_in_error_naming_it(
    agentexec_worker: StartWorker, agentexec_session: Session
) -> None:
    agentexec_worker("-I", "userapp.pipelines", cwd=APP_DIR, env=FAST)
    run = await pipeline.enqueue(Topic(topic="hard", fail_child=2))
    with pytest.raises(ax.TaskFailedError) as failed:
        await ax.get_result(run.agent_id, timeout=60)
    reason = failed.value.reason
    assert "step 'research', child 2 (researcher " in reason
    assert "failed: RuntimeError: no answer to 'hard q2'" in reason
    detail = await asyncio.to_thread(
        wait_for, lambda: (d := _detail(agentexec_session, run.agent_id)) and
        d.status is ax.Status.ERROR and d, 20, "the pipeline's ERROR",
    )  # fmt: skip
    assert "step 'research', child 2" in (detail.latest_log or "")
    assert "2" not in [c.position for c in detail.children]  # the write step never ran
    await ax.close_redis()


class A(BaseModel):
    a: int


class B(BaseModel):
    b: int


def test_type_flow_errors_are_raised_when_the_pipeline_is_defined() -> None:
    broken = ax.Pipeline(ax.WorkerPool(), name="broken_pipeline")
    with pytest.raises(TypeError, match="step 'first' returns A, but step 'second' takes B"):

        class Broken(broken.Base):
            @broken.step(0)
            async def first(self, a: A) -> A:
                return a

            @broken.step(1)
            async def second(self, b: B) -> B:
                return b

    counted = ax.Pipeline(ax.WorkerPool(), name="counted_pipeline")
    with pytest.raises(TypeError, match="returns 2 value"):

        class Counted(counted.Base):
            @counted.step(0)
            async def first(self, a: A) -> tuple[A, B]:
                return a, B(b=1)

            @counted.step(1)
            async def second(self, a: A) -> A:
                return a

    fanned = ax.Pipeline(ax.WorkerPool(), name="fanned_pipeline")
    with pytest.raises(TypeError, match=r"returns list\[A\], but step 'second' takes list\[B\]"):

        class Fanned(fanned.Base):
            @fanned.step(0)
            async def first(self, a: A) -> ax.Group[A]:
                return ax.group()

            @fanned.step(1)
            async def second(self, b: list[B]) -> B:
                return b[0]

    # The research pipeline's flow is checked too, and fits.
    assert (
        typing.get_type_hints(ResearchPipeline.write)["findings"] == list[userapp.pipelines.Finding]
    )
