"""A research pipeline: plan → a 5-way fan-out to researcher runs → write.

Each step counts its completed bodies in Redis (`<prefix>.pipeline.<step>.<pipeline id>`),
and each researcher its completed runs (`<prefix>.researcher.<agent id>`), so the tests can
prove that none completed twice.
"""

from __future__ import annotations

import asyncio
import os
from uuid import UUID

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

import agentexec as ax
from agentexec.tasks.checkpoints import current_run

pool = ax.WorkerPool()


class Topic(BaseModel):
    topic: str
    questions: int = Field(default=5, ge=1, le=50)
    #: Which researcher fails (by position), if any.
    fail_child: int | None = None
    #: Seconds each researcher takes.
    child_seconds: float = Field(default=0.0, ge=0)


class Plan(BaseModel):
    topic: Topic
    questions: list[str]


class Finding(BaseModel):
    question: str
    answer: str


class Report(BaseModel):
    topic: str
    answers: list[str]


class Question(BaseModel):
    question: str
    fail: bool = False
    seconds: float = 0.0


async def _count(key: str) -> None:
    client = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        await client.incr(f"{os.environ['AGENTEXEC_QUEUE_PREFIX']}.{key}")
    finally:
        await client.aclose()


def _pipeline_id() -> str:
    scope = current_run.get()
    assert scope is not None
    return str(scope.request["parent"]["id"])


@pool.task("researcher")
async def researcher(agent_id: UUID, context: Question) -> dict[str, str]:
    await asyncio.sleep(context.seconds)
    if context.fail:
        raise RuntimeError(f"no answer to {context.question!r}")
    await _count(f"researcher.{agent_id}")
    return Finding(question=context.question, answer=f"answer to {context.question}").model_dump()


pipeline = ax.Pipeline(pool, name="research_pipeline")


class ResearchPipeline(pipeline.Base):
    @pipeline.step(0)
    async def plan(self, topic: Topic) -> Plan:
        questions = [f"{topic.topic} q{i}" for i in range(topic.questions)]
        await _count(f"pipeline.plan.{_pipeline_id()}")
        return Plan(topic=topic, questions=questions)

    @pipeline.step(1)
    async def research(self, plan: Plan) -> ax.Group[Finding]:
        await _count(f"pipeline.research.{_pipeline_id()}")
        return ax.group(
            *(
                ax.call("researcher", Question(question=q, fail=i == plan.topic.fail_child,
                                               seconds=plan.topic.child_seconds))
                for i, q in enumerate(plan.questions)
            )
        )  # fmt: skip

    @pipeline.step(2)
    async def write(self, findings: list[Finding]) -> Report:
        await _count(f"pipeline.write.{_pipeline_id()}")
        return Report(topic=findings[0].question.split()[0], answers=[f.answer for f in findings])
