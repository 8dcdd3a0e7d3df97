"""The OpenAI wire format the local server speaks: Responses and Chat Completions payloads,
plain and as server-sent events.

Internal to `openai_server`, which is the only user of these helpers: nothing here is public.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from agentexec.testing.openai_script import Reply

__all__: list[str] = []

_JSONDict = dict[str, Any]

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


def _output_text_part(text: str) -> _JSONDict:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message_item(plan: _Plan, text: str, status: str) -> _JSONDict:
    return {
        "id": plan.message_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [_output_text_part(text)] if status == "completed" else [],
    }


def _function_call_item(call: _PlannedCall, arguments: str, status: str) -> _JSONDict:
    return {
        "id": call.item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call.call_id,
        "name": call.name,
    }


def _responses_output(plan: _Plan) -> list[_JSONDict]:
    output: list[_JSONDict] = []
    if plan.text is not None:
        output.append(_message_item(plan, plan.text, "completed"))
    output.extend(_function_call_item(call, call.arguments, "completed") for call in plan.calls)
    return output


def _responses_usage(request: Mapping[str, Any], output: Any) -> _JSONDict:
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
    output: list[_JSONDict],
) -> _JSONDict:
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


def _responses_events(request: Mapping[str, Any], plan: _Plan) -> Iterator[_JSONDict]:
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


def _chat_usage(request: Mapping[str, Any], plan: _Plan) -> _JSONDict:
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


def _chat_completion(request: Mapping[str, Any], plan: _Plan) -> _JSONDict:
    message: _JSONDict = {
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


def _chat_chunks(request: Mapping[str, Any], plan: _Plan) -> Iterator[_JSONDict]:
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    base: _JSONDict = {
        "id": _new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": request.get("model") or "gpt-4o",
        "service_tier": "default",
        "system_fingerprint": None,
    }
    if include_usage:
        base["usage"] = None

    def chunk(delta: _JSONDict, finish_reason: str | None = None) -> _JSONDict:
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


async def _sse_responses(events: Iterator[_JSONDict]) -> AsyncIterator[str]:
    for sequence_number, event in enumerate(events):
        event["sequence_number"] = sequence_number
        yield f"event: {event['type']}\ndata: {_dumps(event)}\n\n"


async def _sse_chat(chunks: Iterator[_JSONDict]) -> AsyncIterator[str]:
    for chunk in chunks:
        yield f"data: {_dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
