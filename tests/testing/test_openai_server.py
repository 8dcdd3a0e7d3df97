"""Tests for the scripted OpenAI-compatible server, driven by the real openai client and SDK."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import openai
import pytest
from agents import (
    Agent,
    FunctionTool,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.models import _openai_shared, openai_provider
from openai import AsyncOpenAI

from agentexec.testing.openai_server import (
    Reply,
    ScriptedOpenAIServer,
    ToolCall,
    answered_tool_names,
    default_responder,
    function_tool_names,
    last_user_text,
)

StatusCalls = list[tuple[str, int]]
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _no_tracing() -> Iterator[None]:
    # Traces would be exported to api.openai.com, which is unreachable here.
    set_tracing_disabled(True)
    yield


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer() as running:
        yield running


def make_report_status(calls: StatusCalls) -> FunctionTool:
    """Build a ``report_status`` tool that records its calls."""

    @function_tool
    def report_status(message: str, percentage: int) -> str:
        """Report progress on the current task.

        Args:
            message: What is happening.
            percentage: Progress from 0 to 100.
        """
        calls.append((message, percentage))
        return f"status recorded: {percentage}%"

    return report_status


def run_with_client(
    server: ScriptedOpenAIServer,
    body: Callable[[AsyncOpenAI], Awaitable[T]],
    **client_kwargs: Any,
) -> T:
    """Run ``body(client)`` in a fresh event loop with a client that is closed afterwards."""

    async def main() -> T:
        async with AsyncOpenAI(base_url=server.base_url, api_key="test", **client_kwargs) as client:
            return await body(client)

    return asyncio.run(main())


def responses_agent(client: AsyncOpenAI, calls: StatusCalls) -> Agent[Any]:
    return Agent(
        name="worker",
        instructions="Do the task and report status.",
        model=OpenAIResponsesModel(model="gpt-4o", openai_client=client),
        tools=[make_report_status(calls)],
    )


def items_of_type(request: dict[str, Any], item_type: str) -> list[dict[str, Any]]:
    return [i for i in request["input"] if isinstance(i, dict) and i.get("type") == item_type]


# -------------------------------------------------------------------------------------------
# Responses API through the Agents SDK
# -------------------------------------------------------------------------------------------


def test_runner_run_calls_tool_then_answers(server: ScriptedOpenAIServer) -> None:
    calls: StatusCalls = []
    result = run_with_client(
        server, lambda client: Runner.run(responses_agent(client, calls), "Summarise the report")
    )

    assert result.final_output == "Done: Summarise the report"
    assert calls == [("Working on it", 50)]
    first, second = server.requests
    assert first["model"] == "gpt-4o"
    assert first["instructions"] == "Do the task and report status."
    assert function_tool_names(first) == ["report_status"]
    assert first["tools"][0]["parameters"]["required"] == ["message", "percentage"]
    assert not first.get("stream")
    [call] = items_of_type(second, "function_call")
    [output] = items_of_type(second, "function_call_output")
    assert call["name"] == "report_status"
    assert json.loads(call["arguments"]) == {"message": "Working on it", "percentage": 50}
    assert output["call_id"] == call["call_id"]
    assert output["output"] == "status recorded: 50%"
    assert answered_tool_names(second) == ["report_status"]
    assert [item.type for item in result.new_items] == [
        "tool_call_item",
        "tool_call_output_item",
        "message_output_item",
    ]


def test_runner_run_streamed(server: ScriptedOpenAIServer) -> None:
    calls: StatusCalls = []

    async def run(client: AsyncOpenAI) -> tuple[Any, list[str], list[str], str]:
        result = Runner.run_streamed(responses_agent(client, calls), "Stream this please")
        raw_types: list[str] = []
        item_names: list[str] = []
        deltas: list[str] = []
        async for event in result.stream_events():
            if event.type == "raw_response_event":
                raw_types.append(event.data.type)
                if event.data.type == "response.output_text.delta":
                    deltas.append(event.data.delta)
            elif event.type == "run_item_stream_event":
                item_names.append(event.name)
        return result, raw_types, item_names, "".join(deltas)

    result, raw_types, item_names, streamed_text = run_with_client(server, run)

    assert result.final_output == "Done: Stream this please"
    assert streamed_text == "Done: Stream this please"
    assert calls == [("Working on it", 50)]
    assert item_names == ["tool_called", "tool_output", "message_output_created"]
    assert raw_types.count("response.completed") == 2
    for event_type in (
        "response.created",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert event_type in raw_types
    assert all(request["stream"] is True for request in server.requests)
    assert len(server.requests) == 2


def test_raw_stream_event_sequence(server: ScriptedOpenAIServer) -> None:
    """The streamed events parse into the client's typed events, in the real API's order."""

    def responder(request: dict[str, Any]) -> Reply:
        return Reply(
            text="Hello there world",
            tool_calls=[ToolCall("lookup", {"q": "x" * 30}, call_id="call_fixed")],
        )

    async def run(client: AsyncOpenAI) -> list[Any]:
        stream = await client.responses.create(model="gpt-4o", input="hi", stream=True)
        return [event async for event in stream]

    server.responder = responder
    events = run_with_client(server, run)

    assert [e.sequence_number for e in events] == list(range(len(events)))
    types = [e.type for e in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert isinstance(events[0], openai.types.responses.ResponseCreatedEvent)
    completed = events[-1]
    assert isinstance(completed, openai.types.responses.ResponseCompletedEvent)
    assert completed.response.id == events[0].response.id
    assert completed.response.output_text == "Hello there world"
    call = completed.response.output[1]
    assert isinstance(call, openai.types.responses.ResponseFunctionToolCall)
    assert (call.name, call.call_id) == ("lookup", "call_fixed")
    assert json.loads(call.arguments) == {"q": "x" * 30}
    assert completed.response.usage is not None
    assert completed.response.usage.total_tokens > 0


def test_plain_create_parses_into_response(server: ScriptedOpenAIServer) -> None:
    response = run_with_client(
        server, lambda client: client.responses.create(model="gpt-4o", input="plain text input")
    )

    assert isinstance(response, openai.types.responses.Response)
    assert response.status == "completed"
    assert response.output_text == "Done: plain text input"
    assert server.requests == [{"model": "gpt-4o", "input": "plain text input"}]


def test_async_scripted_responder_drives_multiple_tools(server: ScriptedOpenAIServer) -> None:
    """A custom (async) responder decides from the conversation, e.g. two parallel calls."""

    async def responder(request: dict[str, Any]) -> Reply | str:
        if not answered_tool_names(request):
            return Reply.calls(
                ToolCall("report_status", {"message": "step 1", "percentage": 10}),
                ToolCall("report_status", {"message": "step 2", "percentage": 90}),
                delay=0.01,
            )
        return f"finished {last_user_text(request)} after {len(answered_tool_names(request))}"

    server.responder = responder
    calls: StatusCalls = []
    result = run_with_client(
        server, lambda client: Runner.run(responses_agent(client, calls), "job-7")
    )

    assert sorted(calls) == [("step 1", 10), ("step 2", 90)]
    assert result.final_output == "finished job-7 after 2"
    assert len(server.requests) == 2


# -------------------------------------------------------------------------------------------
# Chat Completions
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
def test_chat_completions_model(server: ScriptedOpenAIServer, streamed: bool) -> None:
    calls: StatusCalls = []

    async def run(client: AsyncOpenAI) -> Any:
        agent = Agent(
            name="chat-worker",
            instructions="Use the tool.",
            model=OpenAIChatCompletionsModel(model="gpt-4o", openai_client=client),
            tools=[make_report_status(calls)],
        )
        if not streamed:
            return await Runner.run(agent, "chat task")
        result = Runner.run_streamed(agent, "chat task")
        async for _ in result.stream_events():
            pass
        return result

    result = run_with_client(server, run)

    assert result.final_output == "Done: chat task"
    assert calls == [("Working on it", 50)]
    first, second = server.requests
    assert first["messages"][0] == {"role": "system", "content": "Use the tool."}
    assert function_tool_names(first) == ["report_status"]
    assert bool(first.get("stream")) is streamed
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 1
    assert tool_messages[0]["content"] == "status recorded: 50%"
    assert answered_tool_names(second) == ["report_status"]


# -------------------------------------------------------------------------------------------
# Errors, latency, concurrency
# -------------------------------------------------------------------------------------------


def test_http_500_surfaces_from_runner_run() -> None:
    def failing(request: dict[str, Any]) -> Reply:
        return Reply.failure(500, "scripted outage")

    with ScriptedOpenAIServer(failing) as server:
        with pytest.raises(openai.InternalServerError, match="scripted outage") as excinfo:
            run_with_client(
                server,
                lambda client: Runner.run(responses_agent(client, []), "anything"),
                max_retries=0,
            )

        assert excinfo.value.status_code == 500
        assert excinfo.value.body == {
            "message": "scripted outage",
            "type": "server_error",
            "param": None,
            "code": None,
        }
        assert len(server.requests) == 1


def test_http_429_surfaces_from_streamed_run() -> None:
    with ScriptedOpenAIServer(lambda request: Reply.failure(429, "slow down")) as server:

        async def run(client: AsyncOpenAI) -> None:
            result = Runner.run_streamed(responses_agent(client, []), "anything")
            async for _ in result.stream_events():
                pass

        with pytest.raises(openai.RateLimitError, match="slow down"):
            run_with_client(server, run, max_retries=0)


def test_responder_exception_becomes_500() -> None:
    def broken(request: dict[str, Any]) -> Reply:
        raise ValueError("bug in responder")

    with ScriptedOpenAIServer(broken) as server:
        with pytest.raises(openai.InternalServerError, match="bug in responder"):
            run_with_client(
                server,
                lambda client: Runner.run(responses_agent(client, []), "anything"),
                max_retries=0,
            )


def test_fifty_concurrent_agents_share_one_server() -> None:
    calls: StatusCalls = []
    with ScriptedOpenAIServer(delay=0.05) as server:

        async def run_all(client: AsyncOpenAI) -> list[Any]:
            agent = responses_agent(client, calls)
            return await asyncio.gather(*(Runner.run(agent, f"task {i}") for i in range(50)))

        results = run_with_client(server, run_all)

        assert [r.final_output for r in results] == [f"Done: task {i}" for i in range(50)]
        assert calls == [("Working on it", 50)] * 50
        assert len(server.requests) == 100
        assert sorted(last_user_text(r) for r in server.requests) == sorted(
            [f"task {i}" for i in range(50)] * 2
        )


# -------------------------------------------------------------------------------------------
# Default provider (Agent(model="gpt-4o")) configured through the environment
# -------------------------------------------------------------------------------------------


def test_default_provider_via_environment(
    server: ScriptedOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    # An installed default client or key would take precedence over the environment.
    monkeypatch.setattr(_openai_shared, "_default_openai_client", None)
    monkeypatch.setattr(_openai_shared, "_default_openai_key", None)
    # The default provider's shared connection pool is bound to the first loop that used it.
    monkeypatch.setattr(openai_provider, "_http_client", None)
    calls: StatusCalls = []
    agent = Agent(name="env-worker", model="gpt-4o", tools=[make_report_status(calls)])

    async def run(*inputs: str) -> list[Any]:
        try:
            return [await Runner.run(agent, text) for text in inputs]
        finally:
            await openai_provider.shared_http_client().aclose()

    first, second = asyncio.run(run("via env", "via env again"))
    # A new event loop (another test, another Celery task) needs a fresh shared pool.
    monkeypatch.setattr(openai_provider, "_http_client", None)
    [third] = asyncio.run(run("new loop"))

    assert first.final_output == "Done: via env"
    assert second.final_output == "Done: via env again"
    assert third.final_output == "Done: new loop"
    assert calls == [("Working on it", 50)] * 3
    assert len(server.requests) == 6
    assert all(r["model"] == "gpt-4o" for r in server.requests)
    assert [last_user_text(r) for r in server.requests[::2]] == [
        "via env",
        "via env again",
        "new loop",
    ]


def test_default_provider_via_set_default_openai_client(
    server: ScriptedOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_openai_shared, "_default_openai_client", None)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    calls: StatusCalls = []
    agent = Agent(name="client-worker", model="gpt-4o", tools=[make_report_status(calls)])

    async def run(client: AsyncOpenAI) -> Any:
        set_default_openai_client(client, use_for_tracing=False)
        return await Runner.run(agent, "via client")

    result = run_with_client(server, run)

    assert result.final_output == "Done: via client"
    assert calls == [("Working on it", 50)]
    assert len(server.requests) == 2


# -------------------------------------------------------------------------------------------
# Server lifecycle and helpers
# -------------------------------------------------------------------------------------------


def test_lifecycle_ready_on_enter_and_closed_on_exit() -> None:
    server = ScriptedOpenAIServer()
    with server:
        port = server.port
        assert server.base_url == f"http://127.0.0.1:{port}/v1"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/v1/models")
        assert connection.getresponse().status == 200
        connection.close()
    with pytest.raises(OSError):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/health")
    with pytest.raises(RuntimeError):
        _ = server.base_url
    # A stopped server can be started again.
    with server:
        assert server.port > 0


def test_invalid_json_is_a_400(server: ScriptedOpenAIServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    connection.request(
        "POST", "/v1/responses", body=b"{nope", headers={"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    assert response.status == 400
    assert json.loads(response.read())["error"]["type"] == "invalid_request_error"
    connection.close()
    assert server.requests == []


def test_default_responder_is_stateless() -> None:
    tools = [{"type": "function", "name": "report_status", "parameters": {}}]
    fresh = {"input": [{"role": "user", "content": "go"}], "tools": tools}
    assert default_responder(fresh).tool_calls[0].name == "report_status"
    answered = {
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "go"}]},
            {"type": "function_call", "call_id": "c1", "name": "report_status", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        ],
        "tools": tools,
    }
    assert default_responder(answered) == Reply.message("Done: go")
    assert default_responder({"input": "no tools"}) == Reply.message("Done: no tools")


def test_main_serves_until_terminated() -> None:
    command = [sys.executable, "-m", "agentexec.testing.openai_server", "--port", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("Scripted OpenAI server listening on http://127.0.0.1:")
            base_url = line.split()[-1]

            async def ask() -> str:
                async with AsyncOpenAI(base_url=base_url, api_key="test") as client:
                    response = await client.responses.create(model="gpt-4o", input="cli")
                    return response.output_text

            assert asyncio.run(ask()) == "Done: cli"
        finally:
            process.terminate()
            process.wait(timeout=10)
        # uvicorn shuts down gracefully, then re-raises the captured SIGTERM.
        assert process.returncode in (0, -signal.SIGTERM)
