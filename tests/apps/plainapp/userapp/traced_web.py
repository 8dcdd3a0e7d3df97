"""A web app's side of a traced run: a request span, and within it the enqueues.

Run as a process of its own (`python -m userapp.traced_web`) with the OTEL_* variables set;
prints the request's trace id and the runs' agent ids as JSON.
"""

from __future__ import annotations

import asyncio
import json

from opentelemetry import trace

import agentexec as ax
from agentexec import telemetry
from userapp.durable_tasks import DurableContext, durable_agent


async def main() -> None:
    tracer = trace.get_tracer("userapp")
    with tracer.start_as_current_span("POST /research", kind=trace.SpanKind.SERVER) as span:
        run = await ax.enqueue("durable_agent", {"steps": 2})
        delayed = durable_agent.delay(DurableContext(steps=0))
    for agent_id in (run.agent_id, delayed.agent_id):
        await ax.get_result(agent_id, timeout=60)
    await ax.close_redis()
    trace_id = format(span.get_span_context().trace_id, "032x")
    ids = {"enqueued": str(run.agent_id), "delayed": str(delayed.agent_id)}
    print(json.dumps({"trace_id": trace_id, **ids}))


if __name__ == "__main__":
    assert telemetry.configure("webapp"), "tracing is not configured"
    try:
        asyncio.run(main())
    finally:
        telemetry.shutdown()
