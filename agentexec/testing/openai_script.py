"""Scripted replies for the local OpenAI-compatible server: what the "model" answers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    # Replies
    "ModelError",
    "Reply",
    "ToolCall",
    # Responders
    "Responder",
    "default_responder",
    "make_status_responder",
    # Request inspection, for writing responders
    "answered_tool_names",
    "function_tool_names",
    "last_user_text",
]

_JSONDict = dict[str, Any]


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
        retry_after: Seconds sent as the ``Retry-After`` header (with a 429, say); none when
            None.
    """

    status_code: int = 500
    message: str = "The scripted model failed."
    error_type: str = "server_error"
    code: str | None = None
    retry_after: float | None = None

    def headers(self) -> dict[str, str]:
        """The response headers: ``Retry-After`` when set."""
        return {} if self.retry_after is None else {"Retry-After": f"{self.retry_after:g}"}

    def body(self) -> _JSONDict:
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
        retry_after: float | None = None,
    ) -> Reply:
        """Build a reply that answers with an HTTP error.

        Args:
            status_code: HTTP status code.
            message: Error message.
            error_type: The ``error.type`` of the body.
            code: The ``error.code`` of the body.
            delay: Simulated latency in seconds.
            retry_after: Seconds sent as the ``Retry-After`` header.

        Returns:
            The reply.
        """
        return cls(
            error=ModelError(status_code, message, error_type, code, retry_after),
            delay=delay,
        )


Responder = Callable[[_JSONDict], Reply | str | Awaitable[Reply | str]]
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
) -> Callable[[_JSONDict], Reply]:
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

    def responder(request: _JSONDict) -> Reply:
        if tool_name in function_tool_names(request) and tool_name not in answered_tool_names(
            request
        ):
            return Reply.call(tool_name, call_arguments, delay=delay)
        return Reply.message(f"{final_prefix}{last_user_text(request)}", delay=delay)

    return responder


default_responder: Callable[[_JSONDict], Reply] = make_status_responder()
"""The default responder: one ``report_status`` call (if offered), then ``"Done: <input>"``."""
