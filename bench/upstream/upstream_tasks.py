"""Task definitions for benchmarking upstream agentexec 0.3.0.

Imported by three kinds of process, all running the upstream venv's python:
  * run_upstream.py (the driver: enqueues, polls results),
  * the pool process started with upstream's CLI (`agentexec run upstream_tasks:pool`),
  * the pool's worker processes (multiprocessing "spawn" re-imports this module to
    unpickle the task handlers).
Configuration comes from the environment, set by run_upstream.py before import:
  BENCH_UPSTREAM_DB_URL   async SQLAlchemy URL (sqlite+aiosqlite:///..., postgresql+psycopg://...)
  AGENTEXEC_REDIS_URL     read by upstream's own Config (agentexec/config.py)
"""

from __future__ import annotations

import asyncio
import os
from uuid import UUID

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from agents import Agent, set_tracing_disabled
from pydantic import BaseModel

import agentexec as ax

set_tracing_disabled(True)

try:  # openai-agents >= 0.24 ships a scripted test model
    from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

    HAVE_SCRIPTED_MODEL = True
except ImportError:  # pragma: no cover - older SDKs
    HAVE_SCRIPTED_MODEL = False

REPORT_TOOL = "report_activity"  # name of upstream's runner.tools.report_status function tool


class AgentInput(BaseModel):
    latency: float
    idx: int


class AgentOutput(BaseModel):
    text: str


class NoopInput(BaseModel):
    idx: int


class NoopOutput(BaseModel):
    ok: bool = True


def _make_model(latency: float, idx: int):
    """A fake model: turn 1 sleeps `latency` and calls report_activity, turn 2 sleeps and answers."""
    if HAVE_SCRIPTED_MODEL:

        async def turn1(call):
            await asyncio.sleep(latency)
            return [
                function_call(
                    REPORT_TOOL,
                    {"message": "working", "percentage": 50},
                    call_id=f"call-{idx}",
                )
            ]

        async def turn2(call):
            await asyncio.sleep(latency)
            return [assistant_message(f"done {idx}")]

        return ScriptedModel([ModelStep.respond(turn1), ModelStep.respond(turn2)])
    return _FallbackModel(latency, idx)


if not HAVE_SCRIPTED_MODEL:  # pragma: no cover
    import json

    from agents.items import ModelResponse
    from agents.models.interface import Model
    from agents.usage import Usage
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )

    class _FallbackModel(Model):
        def __init__(self, latency: float, idx: int) -> None:
            self.latency = latency
            self.idx = idx
            self.turn = 0

        async def get_response(self, *args, **kwargs) -> ModelResponse:
            await asyncio.sleep(self.latency)
            self.turn += 1
            if self.turn == 1:
                item = ResponseFunctionToolCall(
                    id=f"call-{self.idx}",
                    call_id=f"call-{self.idx}",
                    type="function_call",
                    name=REPORT_TOOL,
                    arguments=json.dumps({"message": "working", "percentage": 50}),
                )
            else:
                item = ResponseOutputMessage(
                    id="msg",
                    type="message",
                    role="assistant",
                    status="completed",
                    content=[
                        ResponseOutputText(
                            text=f"done {self.idx}", type="output_text", annotations=[]
                        )
                    ],
                )
            return ModelResponse(output=[item], usage=Usage(), response_id=None)

        def stream_response(self, *args, **kwargs):
            raise NotImplementedError


async def run_agent(agent_id: UUID, context: AgentInput) -> AgentOutput:
    """Upstream's documented pattern: OpenAIRunner + runner.tools.report_status."""
    runner = ax.OpenAIRunner(agent_id)
    agent = Agent(
        name="bench-agent",
        instructions="Benchmark agent. " + runner.prompts.report_status,
        tools=[runner.tools.report_status],
        model=_make_model(context.latency, context.idx),
    )
    result = await runner.run(agent, input=f"task {context.idx}", max_turns=5)
    return AgentOutput(text=str(result.final_output))


async def noop(agent_id: UUID, context: NoopInput) -> NoopOutput:
    return NoopOutput()


DB_URL = os.environ.get("BENCH_UPSTREAM_DB_URL")
if not DB_URL:
    raise RuntimeError("BENCH_UPSTREAM_DB_URL must be set (run via run_upstream.py)")

pool = ax.Pool(database_url=DB_URL)
pool.add_task("bench_agent", run_agent)
pool.add_task("bench_noop", noop)
