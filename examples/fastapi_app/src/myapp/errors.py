"""The example's answers to bad input: a specific status for each of agentexec's errors, and a
guard that refuses oversized bodies and unknown priorities before any view runs.

The guide's views stay as the guide wrote them; these handlers catch what they let through.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import agentexec as ax

#: The largest request body accepted, in bytes (agentexec refuses larger contexts anyway).
MAX_BODY_BYTES = int(os.environ.get("MAX_BODY_BYTES", 1_048_576))
PRIORITIES = {p.value for p in ax.Priority}

#: Most specific first: a handler is looked up along the exception's class hierarchy.
STATUS: dict[type[Exception], int] = {
    ax.ContextTooLargeError: 413,
    ax.InvalidRequestError: 422,
    ax.InvalidContextError: 422,
    ax.InvalidAgentIdError: 422,
    ax.UnknownAgentError: 404,
    ax.UnknownTaskError: 404,
    ax.TaskFailedError: 409,
    ax.TaskCanceledError: 409,
    ax.BudgetExceededError: 429,
    ax.BrokerUnavailableError: 503,
    ax.ActivityStoreError: 503,
}


async def agentexec_error(request: Request, exc: Exception) -> JSONResponse:
    """A specific status and the error's own message; a failed run adds its reason."""
    status = next(code for cls, code in STATUS.items() if isinstance(exc, cls))
    content: dict[str, Any] = {"error": type(exc).__name__, "detail": str(exc)}
    if isinstance(exc, ax.TaskError):
        content["reason"] = exc.reason
    return JSONResponse(status_code=status, content=content)


def install(app: FastAPI) -> None:
    """Register the handlers and the body guard on `app`."""
    for cls in STATUS:
        app.add_exception_handler(cls, agentexec_error)
    app.add_middleware(BodyGuard)


class BodyGuard:
    """Refuses a body over `MAX_BODY_BYTES` with 413, and a JSON body whose `priority` is not
    "high" or "low" with 422 (the guide's view would queue it at LOW), then replays the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                detail = f"request body over {MAX_BODY_BYTES} bytes"
                await _refuse(send, 413, "BodyTooLarge", detail)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        priority = _priority(body)
        if priority is not None and priority not in PRIORITIES:
            detail = f"unknown priority {priority!r}; expected one of {sorted(PRIORITIES)}"
            await _refuse(send, 422, "InvalidRequestError", detail)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _priority(body: bytes) -> Any:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get("priority") if isinstance(data, dict) else None


async def _refuse(send: Send, status: int, error: str, detail: str) -> None:
    payload = json.dumps({"error": error, "detail": detail}).encode()
    length = str(len(payload)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", length)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
