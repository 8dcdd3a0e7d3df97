"""OpenTelemetry: a web request's trace goes on into the worker, down to each model call.

A web app in a process of its own (`userapp.traced_web`) and a real worker both export over
OTLP/HTTP to a collector in this process; the agents call a scripted OpenAI server over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import userapp.durable_tasks  # noqa: F401  (registers the durable agents here too)

from agentexec import telemetry
from agentexec.testing.openai_server import ScriptedOpenAIServer
from agentexec.testing.plugin import StartWorker
from tests.apps import APP_DIR, APP_ENV
from tests.durable_script import DurableScript, returned_usage
from tests.otlp_collector import OTLPCollector, ReceivedSpan


def _ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[str]:
    """The names of `span`'s parents, nearest first."""
    names = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        names.append(span.name)
    return names


async def test_a_web_requests_trace_goes_on_into_the_worker_down_to_each_call(
    agentexec_worker: StartWorker, agentexec_env: dict[str, str]
) -> None:
    with OTLPCollector() as collector, ScriptedOpenAIServer(DurableScript()) as server:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        env = {**APP_ENV, **server.env(), **otel, "OPENAI_AGENTS_DISABLE_TRACING": "1"}
        agentexec_worker("-I", "userapp.durable_tasks", cwd=APP_DIR, env=env)
        web = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "userapp.traced_web"],
            env={**os.environ, **agentexec_env, **env, "OTEL_SERVICE_NAME": "webapp"},
            cwd=APP_DIR, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert web.returncode == 0, web.stderr[-3000:]
        ids = json.loads(web.stdout.strip().splitlines()[-1])
        trace_id = ids["trace_id"]
        # Two runs: the enqueued one (2 tool turns, 3 calls) and the delayed one (1 call).
        await asyncio.to_thread(collector.wait_for, trace_id, "agentexec.run durable_agent", 2)
        await asyncio.to_thread(collector.wait_for, trace_id, "agentexec.model gpt-4o", 4)
        usage = returned_usage(server, ids["enqueued"])
    spans = collector.trace(trace_id)
    by_id = {s.span_id: s for s in spans}
    request = next(s for s in spans if s.name == "POST /research")
    assert request.service == "webapp" and request.parent_id == ""
    runs = {s.attributes["agentexec.agent_id"]: s for s in spans
            if s.name == "agentexec.run durable_agent"}  # fmt: skip
    assert set(runs) == {ids["enqueued"], ids["delayed"]}
    assert {s.service for s in runs.values()} == {"agentexec-worker"}
    # The enqueued run: request → enqueue → Celery's publish → Celery's run → ours.
    assert _ancestors(runs[ids["enqueued"]], by_id) == [
        "run/durable_agent",
        "apply_async/durable_agent",
        "agentexec.enqueue durable_agent",
        "POST /research",
    ]
    # `.delay()` has no enqueue span of ours, but it carries the request's context too.
    assert _ancestors(runs[ids["delayed"]], by_id)[-2:] == [
        "apply_async/durable_agent",
        "POST /research",
    ]
    run = runs[ids["enqueued"]]
    turns = sorted((s for s in spans if s.parent_id == run.span_id), key=lambda s: s.name)
    assert [t.name for t in turns] == ["agentexec.turn 1", "agentexec.turn 2", "agentexec.turn 3"]
    for number, turn in enumerate(turns, start=1):
        inside = [s for s in spans if s.parent_id == turn.span_id]
        models = [s for s in inside if s.name == "agentexec.model gpt-4o"]
        tools = [s for s in inside if s.name == "agentexec.tool step"]
        assert len(models) == 1, [s.name for s in inside]
        # Its tokens are what the model server returned for that call.
        assert (
            models[0].attributes["gen_ai.usage.input_tokens"] == usage[number - 1]["input_tokens"]
        )
        assert (
            models[0].attributes["gen_ai.usage.output_tokens"] == usage[number - 1]["output_tokens"]
        )
        # Turns 1 and 2 called a tool; the third answered.
        assert len(tools) == (1 if number < 3 else 0)
        assert all(t.attributes["gen_ai.tool.call.id"] for t in tools)
    assert not any(s.error for s in spans)


def test_tracing_is_off_unless_configured() -> None:
    """Without a tracer provider or OTEL_* variables: no spans, no headers, no provider."""
    assert not telemetry.enabled()
    assert telemetry.headers() == {}
    assert telemetry.current_context() is None
    assert telemetry.RunSpans.start() is None
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_TRACES_EXPORTER"):  # fmt: skip
        assert name not in os.environ
    assert telemetry.configure() is False
    assert not telemetry.enabled()
