"""The scripted model of the durable-run tests, decided from the conversation alone.

The prompt is `run <agent id> <mode> <steps>`. In `steps` mode the model calls `step(n)`
once per turn until `steps` tool results are in, then answers; in `approval` mode it calls
`send_email` and answers with what the tool said (or the rejection); `plain` answers at once.
Requests are counted per run.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from typing import Any

from agentexec.testing.openai_script import Reply, ToolCall, answered_tool_names
from agentexec.testing.openai_server import ScriptedOpenAIServer


class DurableScript:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: Counter[str] = Counter()
        #: When each request arrived.
        self.times: list[float] = []
        #: When each run's first request arrived, by agent id.
        self.first: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> Reply:
        items = request.get("input") or []
        first = next(i for i in items if isinstance(i, dict) and i.get("role") == "user")
        content = first["content"]
        text = content if isinstance(content, str) else content[0]["text"]
        _, run, mode, steps = text.split()
        with self._lock:
            self.calls[run] += 1
            self.times.append(time.time())
            self.first.setdefault(run, self.times[-1])
        done = [n for n in answered_tool_names(request) if n == "step"]
        if mode == "steps" and len(done) < int(steps):
            call = ToolCall("step", {"n": len(done) + 1})
            return Reply.calls(call, delay=self.delay)
        if mode == "approval":
            outputs = [
                i.get("output") for i in items
                if isinstance(i, dict) and i.get("type") == "function_call_output"
            ]  # fmt: skip
            if not outputs:
                return Reply.calls(ToolCall("send_email", {"to": "boss@example.com"}),
                                   delay=self.delay)  # fmt: skip
            return Reply.message(f"final: {outputs[-1]}", delay=self.delay)
        return Reply.message(f"done after {len(done)} steps", delay=self.delay)


def returned_usage(server: ScriptedOpenAIServer, agent_id: uuid.UUID | str) -> list[dict[str, int]]:
    """The usage the server returned for each call of one run."""
    found = []
    for body, usage in server.usages:
        first = next(i for i in body["input"] if isinstance(i, dict) and i.get("role") == "user")
        if str(agent_id) in json.dumps(first):
            found.append(usage)
    return found
