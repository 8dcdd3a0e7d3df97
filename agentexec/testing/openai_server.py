"""A scripted, local OpenAI-compatible HTTP server for tests and benchmarks.

The server implements just enough of the OpenAI HTTP API to drive agents built with the
OpenAI Agents SDK without network access or an API key:

* ``POST /v1/responses``: the Responses API, plain JSON or streamed (``"stream": true``) as
  server-sent events in the same order and shape the real API emits them
  (``response.created``, ``response.in_progress``, ``response.output_item.added``,
  ``response.content_part.added``, ``response.output_text.delta``/``.done``,
  ``response.content_part.done``, ``response.function_call_arguments.delta``/``.done``,
  ``response.output_item.done``, ``response.completed``). Used by ``OpenAIResponsesModel``,
  the SDK's default model class.
* ``POST /v1/chat/completions``: Chat Completions, plain or streamed (with the usage chunk when
  ``stream_options.include_usage`` is set). Used by ``OpenAIChatCompletionsModel``.
* ``GET /v1/models`` and ``GET /health``: used for readiness checks.

What the "model" answers is decided by a *responder*, a function from the request JSON to a
:class:`Reply` (final text, function calls, simulated latency or an HTTP error). The default
responder, :func:`default_responder`, is stateless: it decides from the conversation carried in
the request, so any number of concurrent agents can share one server.

Example:
    Point an explicit client at the server (recommended, no global state)::

        from agents import Agent, OpenAIResponsesModel, Runner, function_tool
        from openai import AsyncOpenAI

        from agentexec.testing.openai_server import Reply, ScriptedOpenAIServer

        with ScriptedOpenAIServer() as server:
            client = AsyncOpenAI(base_url=server.base_url, api_key="test")
            agent = Agent(
                name="worker",
                model=OpenAIResponsesModel(model="gpt-4o", openai_client=client),
                tools=[report_status],
            )
            result = await Runner.run(agent, "hello")  # inside a coroutine
            assert result.final_output == "Done: hello"
            assert server.requests[0]["tools"][0]["name"] == "report_status"

    Point the SDK's *default* provider at the server (``Agent(model="gpt-4o")`` or no model at
    all), which is what code under test usually does. Setting the environment variables is
    enough::

        os.environ["OPENAI_BASE_URL"] = server.base_url  # or os.environ.update(server.env())
        os.environ["OPENAI_API_KEY"] = "test"

    This works because ``Runner.run`` builds a fresh ``MultiProvider``/``OpenAIProvider`` for
    every run (``RunConfig.model_provider`` has a ``default_factory``) and that provider creates
    its ``AsyncOpenAI`` client lazily, reading ``OPENAI_BASE_URL``/``OPENAI_API_KEY`` at that
    moment. Two caveats:

    * A client installed with ``agents.set_default_openai_client(...)`` takes precedence over the
      environment variables. Either install one pointing at the server
      (``set_default_openai_client(AsyncOpenAI(base_url=server.base_url, api_key="test"))``) or
      make sure none is installed (``agents.models._openai_shared._default_openai_client =
      None``; there is no public reset function). Likewise ``set_default_openai_key`` beats
      ``OPENAI_API_KEY``.
    * The default provider's HTTP connection pool is process-global
      (``agents.models.openai_provider._http_client``, created on first use) and is bound to the
      event loop that first used it. A later ``asyncio.run(...)`` (another test, another Celery
      task) that goes through the default provider fails with ``RuntimeError: Event loop is
      closed`` once a pooled connection from the old loop is touched. This happens with the
      real API too, the server merely makes it visible. Either run everything on one long-lived
      loop (e.g. one ``asyncio.Runner``), or reset the pool before each new loop with
      ``agents.models.openai_provider._http_client = None`` (private, no public API), or pass a
      per-run client: ``RunConfig(model_provider=OpenAIProvider(openai_client=client))`` with
      ``async with AsyncOpenAI() as client``. The same applies to one ``AsyncOpenAI`` instance
      (including one given to ``set_default_openai_client``) shared across event loops.
    * The SDK exports traces to ``https://api.openai.com/v1/traces/ingest`` (not to
      ``OPENAI_BASE_URL``) using ``OPENAI_API_KEY``. Without network access call
      ``agents.set_tracing_disabled(True)`` or set ``OPENAI_AGENTS_DISABLE_TRACING=1`` before the
      first run, otherwise the exporter logs failures and retries at interpreter exit.

    Environment variables are inherited by subprocesses (e.g. Celery workers started by a test),
    which makes them the simplest way to point out-of-process agents at the server.

Command line:
    ``python -m agentexec.testing.openai_server --port 8399 --delay 0.5`` serves the default
    responder forever, for manual experiments and benchmarks.

Note:
    This module needs ``uvicorn`` and ``starlette`` (via ``fastapi``), which are development
    dependencies of agentexec.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = [
    "ModelError",
    "Reply",
    "Responder",
    "ScriptedOpenAIServer",
    "ToolCall",
    "answered_tool_names",
    "default_responder",
    "function_tool_names",
    "last_user_text",
    "main",
    "make_status_responder",
]

logger = logging.getLogger(__name__)

JSONDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the scripted model makes.

    Attributes:
        name: Name of the function tool to call.
        arguments: Arguments as a mapping (serialised to JSON) or as a ready JSON string.
        call_id: The ``call_id`` to use; a random ``call_...`` id when ``None``.
    """

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    call_id: str | None = None

    def arguments_json(self) -> str:
        """Return the arguments as a JSON string.

        Returns:
            The JSON-encoded arguments.
        """
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments))


@dataclass(frozen=True, slots=True)
class ModelError:
    """An HTTP error the scripted model answers with instead of a completion.

    Attributes:
        status_code: HTTP status code, e.g. 500, 429 or 400.
        message: The ``error.message`` of the OpenAI-style error body.
        error_type: The ``error.type`` of the body.
        code: The ``error.code`` of the body.
    """

    status_code: int = 500
    message: str = "The scripted model failed."
    error_type: str = "server_error"
    code: str | None = None

    def body(self) -> JSONDict:
        """Return the OpenAI-style JSON error body.

        Returns:
            A dict ``{"error": {"message", "type", "param", "code"}}``.
        """
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": None,
                "code": self.code,
            }
        }


@dataclass(frozen=True, slots=True)
class Reply:
    """What the scripted model answers to one request.

    A reply carries a final text message, function calls, or both (the text comes first in
    the output), optionally after a simulated latency. If ``error`` is set, the server answers
    with that HTTP error instead.

    Attributes:
        text: Assistant message text, or ``None`` for no message.
        tool_calls: Function calls to make.
        delay: Seconds to wait (``asyncio.sleep``) before answering; ``None`` uses the server's
            default delay.
        error: An HTTP error to answer with instead of a completion.
    """

    text: str | None = None
    tool_calls: Sequence[ToolCall] = ()
    delay: float | None = None
    error: ModelError | None = None

    @classmethod
    def message(cls, text: str, *, delay: float | None = None) -> Reply:
        """Build a final text reply.

        Args:
            text: The assistant message text.
            delay: Simulated latency in seconds.

        Returns:
            The reply.
        """
        return cls(text=text, delay=delay)

    @classmethod
    def call(
        cls,
        name: str,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        delay: float | None = None,
    ) -> Reply:
        """Build a reply that calls one function tool.

        Args:
            name: The function tool name.
            arguments: The call arguments (mapping or JSON string).
            delay: Simulated latency in seconds.

        Returns:
            The reply.
        """
        return cls(
            tool_calls=(ToolCall(name, {} if arguments is None else arguments),), delay=delay
        )

    @classmethod
    def calls(cls, *tool_calls: ToolCall, delay: float | None = None) -> Reply:
        """Build a reply that calls several function tools (parallel tool calls).

        Args:
            *tool_calls: The calls to make, in order.
            delay: Simulated latency in seconds.

        Returns:
            The reply.
        """
        return cls(tool_calls=tuple(tool_calls), delay=delay)

    @classmethod
    def failure(
        cls,
        status_code: int = 500,
        message: str = "The scripted model failed.",
        *,
        error_type: str = "server_error",
        code: str | None = None,
        delay: float | None = None,
    ) -> Reply:
        """Build a reply that answers with an HTTP error.

        Args:
            status_code: HTTP status code.
            message: Error message.
            error_type: The ``error.type`` of the body.
            code: The ``error.code`` of the body.
            delay: Simulated latency in seconds.

        Returns:
            The reply.
        """
        return cls(
            error=ModelError(status_code, message, error_type, code),
            delay=delay,
        )


Responder = Callable[[JSONDict], Reply | str | Awaitable[Reply | str]]
"""Maps a request body (Responses or Chat Completions JSON) to a reply; may be async.

A plain ``str`` is shorthand for ``Reply.message(text)``.
"""


# --------------------------------------------------------------------------------------------
# Request inspection helpers (work for both Responses and Chat Completions requests)
# --------------------------------------------------------------------------------------------


def _is_chat_request(request: Mapping[str, Any]) -> bool:
    return "messages" in request and "input" not in request


def _conversation(request: Mapping[str, Any]) -> list[Any]:
    items = request.get("messages") if _is_chat_request(request) else request.get("input")
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if isinstance(items, list):
        return items
    return []


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return ""


def function_tool_names(request: Mapping[str, Any]) -> list[str]:
    """Return the names of the function tools offered in a request.

    Args:
        request: A Responses or Chat Completions request body.

    Returns:
        The function tool names, in request order.
    """
    names: list[str] = []
    for tool in request.get("tools") or []:
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            continue
        function = tool.get("function")
        name = function.get("name") if isinstance(function, Mapping) else tool.get("name")
        if isinstance(name, str):
            names.append(name)
    return names


def answered_tool_names(request: Mapping[str, Any]) -> list[str]:
    """Return the names of the function calls whose outputs are already in the conversation.

    Call ids are matched with the preceding function calls (Responses ``function_call`` items,
    or Chat Completions assistant ``tool_calls``). An output whose call is not in the
    conversation is reported as ``""``.

    Args:
        request: A Responses or Chat Completions request body.

    Returns:
        One name per tool output, in conversation order.
    """
    call_names: dict[str, str] = {}
    answered: list[str] = []
    for item in _conversation(request):
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "function_call":
            call_names[str(item.get("call_id"))] = str(item.get("name", ""))
        elif item.get("type") == "function_call_output":
            answered.append(call_names.get(str(item.get("call_id")), ""))
        elif item.get("role") == "assistant":
            for tool_call in item.get("tool_calls") or []:
                if isinstance(tool_call, Mapping):
                    function = tool_call.get("function") or {}
                    call_names[str(tool_call.get("id"))] = str(function.get("name", ""))
        elif item.get("role") == "tool":
            answered.append(call_names.get(str(item.get("tool_call_id")), ""))
    return answered


def last_user_text(request: Mapping[str, Any]) -> str:
    """Return the text of the last user message in a request.

    Args:
        request: A Responses or Chat Completions request body.

    Returns:
        The text, or ``""`` if there is no user message.
    """
    for item in reversed(_conversation(request)):
        if (
            isinstance(item, Mapping)
            and item.get("role") == "user"
            and item.get("type", "message") == "message"
        ):
            return _content_text(item.get("content"))
    return ""


def make_status_responder(
    tool_name: str = "report_status",
    arguments: Mapping[str, Any] | None = None,
    final_prefix: str = "Done: ",
    delay: float | None = None,
) -> Callable[[JSONDict], Reply]:
    """Build a stateless responder that calls a status tool once and then finishes.

    If the request offers a function tool named ``tool_name`` and the conversation does not yet
    contain an output for a call to it, the reply calls it with ``arguments``. Otherwise the
    reply is the final text ``final_prefix + <last user message>``.

    Args:
        tool_name: The status tool to call.
        arguments: Arguments for the call; ``{"message": "Working on it", "percentage": 50}``
            by default.
        final_prefix: Prefix of the final text.
        delay: Simulated latency per reply; ``None`` uses the server's default delay.

    Returns:
        The responder.
    """
    call_arguments: Mapping[str, Any] = (
        {"message": "Working on it", "percentage": 50} if arguments is None else arguments
    )

    def responder(request: JSONDict) -> Reply:
        if tool_name in function_tool_names(request) and tool_name not in answered_tool_names(
            request
        ):
            return Reply.call(tool_name, call_arguments, delay=delay)
        return Reply.message(f"{final_prefix}{last_user_text(request)}", delay=delay)

    return responder


default_responder: Callable[[JSONDict], Reply] = make_status_responder()
"""The default responder: one ``report_status`` call (if offered), then ``"Done: <input>"``."""


# --------------------------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"\S+\s*|\s+")
_ARGUMENT_CHUNK = 12


def _text_chunks(text: str) -> list[str]:
    return _WORD_RE.findall(text)


def _argument_chunks(arguments: str) -> list[str]:
    return [arguments[i : i + _ARGUMENT_CHUNK] for i in range(0, len(arguments), _ARGUMENT_CHUNK)]


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def _estimate_tokens(value: Any) -> int:
    return max(1, len(json.dumps(value, default=str)) // 4)


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


@dataclass(slots=True)
class _PlannedCall:
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(slots=True)
class _Plan:
    """A reply with all ids fixed, so streamed and final objects agree."""

    text: str | None
    message_id: str
    calls: list[_PlannedCall]

    @classmethod
    def from_reply(cls, reply: Reply) -> _Plan:
        text = reply.text
        if text is None and not reply.tool_calls:
            text = ""
        calls = [
            _PlannedCall(
                item_id=_new_id("fc_"),
                call_id=call.call_id or _new_id("call_"),
                name=call.name,
                arguments=call.arguments_json(),
            )
            for call in reply.tool_calls
        ]
        return cls(text=text, message_id=_new_id("msg_"), calls=calls)


def _output_text_part(text: str) -> JSONDict:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message_item(plan: _Plan, text: str, status: str) -> JSONDict:
    return {
        "id": plan.message_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [_output_text_part(text)] if status == "completed" else [],
    }


def _function_call_item(call: _PlannedCall, arguments: str, status: str) -> JSONDict:
    return {
        "id": call.item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call.call_id,
        "name": call.name,
    }


def _responses_output(plan: _Plan) -> list[JSONDict]:
    output: list[JSONDict] = []
    if plan.text is not None:
        output.append(_message_item(plan, plan.text, "completed"))
    output.extend(_function_call_item(call, call.arguments, "completed") for call in plan.calls)
    return output


def _responses_usage(request: Mapping[str, Any], output: Any) -> JSONDict:
    input_tokens = _estimate_tokens(request.get("input"))
    output_tokens = _estimate_tokens(output)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _response_object(
    request: Mapping[str, Any],
    response_id: str,
    created_at: int,
    status: str,
    output: list[JSONDict],
) -> JSONDict:
    completed = status == "completed"
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if completed else None,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "model": request.get("model") or "gpt-4o",
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": request.get("store", True),
        "temperature": request.get("temperature", 1.0),
        "text": request.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_logprobs": request.get("top_logprobs", 0),
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation", "disabled"),
        "usage": _responses_usage(request, output) if completed else None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _responses_events(request: Mapping[str, Any], plan: _Plan) -> Iterator[JSONDict]:
    """Yield the Responses streaming events for a plan, without sequence numbers."""
    response_id = _new_id("resp_")
    created_at = int(time.time())
    yield {
        "type": "response.created",
        "response": _response_object(request, response_id, created_at, "in_progress", []),
    }
    yield {
        "type": "response.in_progress",
        "response": _response_object(request, response_id, created_at, "in_progress", []),
    }
    output_index = 0
    if plan.text is not None:
        item_id = plan.message_id
        yield {
            "type": "response.output_item.added",
            "output_index": output_index,
            "item": _message_item(plan, "", "in_progress"),
        }
        common = {"item_id": item_id, "output_index": output_index, "content_index": 0}
        yield {"type": "response.content_part.added", **common, "part": _output_text_part("")}
        for chunk in _text_chunks(plan.text):
            yield {"type": "response.output_text.delta", **common, "delta": chunk, "logprobs": []}
        yield {"type": "response.output_text.done", **common, "text": plan.text, "logprobs": []}
        yield {
            "type": "response.content_part.done",
            **common,
            "part": _output_text_part(plan.text),
        }
        yield {
            "type": "response.output_item.done",
            "output_index": output_index,
            "item": _message_item(plan, plan.text, "completed"),
        }
        output_index += 1
    for call in plan.calls:
        yield {
            "type": "response.output_item.added",
            "output_index": output_index,
            "item": _function_call_item(call, "", "in_progress"),
        }
        for chunk in _argument_chunks(call.arguments):
            yield {
                "type": "response.function_call_arguments.delta",
                "item_id": call.item_id,
                "output_index": output_index,
                "delta": chunk,
            }
        yield {
            "type": "response.function_call_arguments.done",
            "item_id": call.item_id,
            "output_index": output_index,
            "arguments": call.arguments,
        }
        yield {
            "type": "response.output_item.done",
            "output_index": output_index,
            "item": _function_call_item(call, call.arguments, "completed"),
        }
        output_index += 1
    yield {
        "type": "response.completed",
        "response": _response_object(
            request, response_id, created_at, "completed", _responses_output(plan)
        ),
    }


def _chat_usage(request: Mapping[str, Any], plan: _Plan) -> JSONDict:
    prompt_tokens = _estimate_tokens(request.get("messages"))
    completion_tokens = _estimate_tokens([plan.text, [c.arguments for c in plan.calls]])
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat_plan_text(plan: _Plan) -> str | None:
    # Chat Completions has no empty message next to tool calls: content is null then.
    return None if plan.calls and not plan.text else plan.text


def _chat_completion(request: Mapping[str, Any], plan: _Plan) -> JSONDict:
    message: JSONDict = {
        "role": "assistant",
        "content": _chat_plan_text(plan),
        "refusal": None,
        "annotations": [],
    }
    if plan.calls:
        message["tool_calls"] = [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in plan.calls
        ]
    return {
        "id": _new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model") or "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if plan.calls else "stop",
            }
        ],
        "usage": _chat_usage(request, plan),
        "service_tier": "default",
        "system_fingerprint": None,
    }


def _chat_chunks(request: Mapping[str, Any], plan: _Plan) -> Iterator[JSONDict]:
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    base: JSONDict = {
        "id": _new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": request.get("model") or "gpt-4o",
        "service_tier": "default",
        "system_fingerprint": None,
    }
    if include_usage:
        base["usage"] = None

    def chunk(delta: JSONDict, finish_reason: str | None = None) -> JSONDict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    text = _chat_plan_text(plan)
    yield chunk({"role": "assistant", "content": "" if text is not None else None, "refusal": None})
    for piece in _text_chunks(text or ""):
        yield chunk({"content": piece})
    for index, call in enumerate(plan.calls):
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
        )
        for piece in _argument_chunks(call.arguments):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, "tool_calls" if plan.calls else "stop")
    if include_usage:
        yield {**base, "choices": [], "usage": _chat_usage(request, plan)}


async def _sse_responses(events: Iterator[JSONDict]) -> AsyncIterator[str]:
    for sequence_number, event in enumerate(events):
        event["sequence_number"] = sequence_number
        yield f"event: {event['type']}\ndata: {_dumps(event)}\n\n"


async def _sse_chat(chunks: Iterator[JSONDict]) -> AsyncIterator[str]:
    for chunk in chunks:
        yield f"data: {_dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class ScriptedOpenAIServer:
    """A local OpenAI-compatible server whose answers come from a responder function.

    Use it as a context manager; it serves from a background thread (uvicorn on an
    automatically chosen free port by default) until the block exits::

        with ScriptedOpenAIServer(responder) as server:
            client = AsyncOpenAI(base_url=server.base_url, api_key="test")

    Attributes:
        responder: The function deciding each reply.
        host: Interface to listen on.
        delay: Default simulated latency for replies whose ``delay`` is ``None``.
        app: The Starlette application (usable on its own, e.g. with an ASGI transport).
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        delay: float = 0.0,
        startup_timeout: float = 10.0,
        shutdown_timeout: float = 5.0,
        log_level: str = "warning",
    ) -> None:
        """Create the server (it does not listen until started).

        Args:
            responder: Maps request JSON to a :class:`Reply` (sync or async); defaults to
                :func:`default_responder`.
            host: Interface to listen on.
            port: Port to listen on; ``0`` picks a free port.
            delay: Default simulated latency in seconds.
            startup_timeout: Seconds to wait for the server to answer after starting.
            shutdown_timeout: Seconds to wait for a graceful shutdown before forcing it.
            log_level: uvicorn log level.
        """
        self.responder: Responder = responder or default_responder
        self.host = host
        self.delay = delay
        self._requested_port = port
        self._port: int | None = None
        self._startup_timeout = startup_timeout
        self._shutdown_timeout = shutdown_timeout
        self._log_level = log_level
        self._lock = threading.Lock()
        self._requests: list[JSONDict] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/responses", self._handle_responses, methods=["POST"]),
                Route("/v1/chat/completions", self._handle_chat, methods=["POST"]),
                Route("/v1/models", self._handle_models, methods=["GET"]),
                Route("/health", self._handle_health, methods=["GET"]),
            ]
        )

    # -- public API ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the server listens on.

        Raises:
            RuntimeError: If the server has not been started.
        """
        if self._port is None:
            raise RuntimeError("ScriptedOpenAIServer is not running")
        return self._port

    @property
    def url(self) -> str:
        """The server root URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL to give clients, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def requests(self) -> list[JSONDict]:
        """A snapshot of all request bodies received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    def env(self, api_key: str = "test") -> dict[str, str]:
        """Return environment variables pointing the OpenAI SDK's default client here.

        Args:
            api_key: Value for ``OPENAI_API_KEY`` (the server ignores it).

        Returns:
            ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``.
        """
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": api_key}

    def start(self) -> Self:
        """Start serving in a background thread and wait until the server answers.

        Returns:
            The server itself.

        Raises:
            RuntimeError: If already running, or the server does not answer in time.
        """
        if self._thread is not None:
            raise RuntimeError("ScriptedOpenAIServer is already running")
        sock = self._bind()
        server = self._make_uvicorn()
        self._server = server
        self._thread_error = None

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # reported by _wait_until_ready / stop
                self._thread_error = exc
                logger.exception("ScriptedOpenAIServer crashed")
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"openai-server-{self._port}", daemon=True)
        self._thread.start()
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Shut the server down and wait for its thread to finish.

        In-flight requests get ``shutdown_timeout`` seconds to complete before the server is
        forced down. Calling ``stop`` on a stopped server does nothing.
        """
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        server.should_exit = True
        thread.join(self._shutdown_timeout + 1.0)
        if thread.is_alive():
            server.force_exit = True
            thread.join(self._shutdown_timeout)
        self._thread = None
        self._server = None
        self._port = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (Ctrl-C / SIGTERM)."""
        sock = self._bind()
        server = self._make_uvicorn()
        self._server = server
        print(f"Scripted OpenAI server listening on {self.base_url}", flush=True)
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            self._server = None
            self._port = None

    def __enter__(self) -> Self:
        """Start the server.

        Returns:
            The running server.
        """
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    # -- lifecycle helpers --------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        # Listening right away queues early connections until uvicorn accepts them.
        sock.listen(4096)
        self._port = int(sock.getsockname()[1])
        return sock

    def _make_uvicorn(self) -> uvicorn.Server:
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            log_level=self._log_level,
            access_log=False,
            timeout_graceful_shutdown=max(1, int(self._shutdown_timeout)),
            backlog=4096,
        )
        return uvicorn.Server(config)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        interval = 0.005
        while True:
            if self._thread_error is not None:
                raise RuntimeError("ScriptedOpenAIServer failed to start") from self._thread_error
            if self._thread is None or not self._thread.is_alive():
                raise RuntimeError("ScriptedOpenAIServer thread exited during startup")
            if self._probe():
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"ScriptedOpenAIServer did not answer within {self._startup_timeout}s"
                )
            time.sleep(interval)
            interval = min(interval * 2, 0.1)

    def _probe(self) -> bool:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=1.0)
        try:
            connection.request("GET", "/health")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    # -- request handling ---------------------------------------------------------------------

    async def _read_request(self, request: Request) -> JSONDict | Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse(
                ModelError(400, "Request body is not valid JSON.", "invalid_request_error").body(),
                status_code=400,
            )
        if not isinstance(body, dict):
            return JSONResponse(
                ModelError(
                    400, "Request body must be a JSON object.", "invalid_request_error"
                ).body(),
                status_code=400,
            )
        with self._lock:
            self._requests.append(body)
        return body

    async def _reply(self, body: JSONDict) -> Reply:
        result = self.responder(body)
        if not isinstance(result, Reply | str):
            result = await result
        reply = Reply.message(result) if isinstance(result, str) else result
        delay = self.delay if reply.delay is None else reply.delay
        if delay > 0:
            await asyncio.sleep(delay)
        return reply

    async def _plan_or_error(self, request: Request) -> tuple[JSONDict, _Plan] | Response:
        body = await self._read_request(request)
        if isinstance(body, Response):
            return body
        try:
            reply = await self._reply(body)
        except Exception as exc:
            logger.exception("ScriptedOpenAIServer responder failed")
            error = ModelError(500, f"Responder failed: {exc!r}")
            return JSONResponse(error.body(), status_code=error.status_code)
        if reply.error is not None:
            return JSONResponse(reply.error.body(), status_code=reply.error.status_code)
        return body, _Plan.from_reply(reply)

    async def _handle_responses(self, request: Request) -> Response:
        planned = await self._plan_or_error(request)
        if isinstance(planned, Response):
            return planned
        body, plan = planned
        if body.get("stream"):
            return StreamingResponse(
                _sse_responses(_responses_events(body, plan)),
                media_type="text/event-stream",
                headers=_SSE_HEADERS,
            )
        response_id = _new_id("resp_")
        output = _responses_output(plan)
        return JSONResponse(
            _response_object(body, response_id, int(time.time()), "completed", output)
        )

    async def _handle_chat(self, request: Request) -> Response:
        planned = await self._plan_or_error(request)
        if isinstance(planned, Response):
            return planned
        body, plan = planned
        if body.get("stream"):
            return StreamingResponse(
                _sse_chat(_chat_chunks(body, plan)),
                media_type="text/event-stream",
                headers=_SSE_HEADERS,
            )
        return JSONResponse(_chat_completion(body, plan))

    async def _handle_models(self, request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": "gpt-4o", "object": "model", "created": 0, "owned_by": "agentexec"}
                ],
            }
        )

    async def _handle_health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the default responder forever (``python -m agentexec.testing.openai_server``).

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when ``None``.
    """
    parser = argparse.ArgumentParser(
        description="Scripted OpenAI-compatible server (Responses + Chat Completions)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8399, help="port (default 8399, 0 = any)")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="simulated model latency per request, seconds"
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    server = ScriptedOpenAIServer(
        host=args.host, port=args.port, delay=args.delay, log_level=args.log_level
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
