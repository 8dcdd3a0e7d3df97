"""What stands between a request and the router's endpoints: errors people can act on, a
bounded body, bounded streams, and no cross-site writes.

- `GuardedRoute` answers agentexec's errors with their own status (413 for a context over
  the limit, 404 for an unknown run or task, 503 with `Retry-After` when Redis or the
  database is away) and any other error with a generic 500 that carries an error id; the
  detail goes to the server's log under that id, never to the client.
- `read_body` reads a request body while it streams in and stops at the limit (413), so an
  oversized body is never buffered.
- `StreamSlots` caps the event streams one process serves, in all and per owner (503).
- `same_site` refuses a state-changing request that a browser sent from another site,
  unless it carries a bearer token (which a browser never adds on its own).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import redis
from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import Receive, Scope, Send

from agentexec.exceptions import (
    ActivityStoreError,
    BrokerUnavailableError,
    BudgetExceededError,
    ContextTooLargeError,
    InvalidContextError,
    InvalidRequestError,
    UnknownAgentError,
    UnknownTaskError,
)

logger = logging.getLogger(__name__)

#: Seconds a client is told to wait when a service is away or the streams are full.
RETRY_AFTER = "5"

_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (ContextTooLargeError, 413),
    (BudgetExceededError, 429),
    (UnknownTaskError, 404),
    (UnknownAgentError, 404),
    (InvalidContextError, 422),
    (InvalidRequestError, 422),
    (BrokerUnavailableError, 503),
    (ActivityStoreError, 503),
    (redis.RedisError, 503),
    (SQLAlchemyError, 503),
)


def error_response(exc: Exception) -> Response:
    """The answer to an error an endpoint raised: its own status, or 500 with an error id."""
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
    if status == 503:
        logger.warning("agentexec router: service unavailable: %s", exc)
        detail = f"{_service(exc)} is unavailable; try again shortly"
        return JSONResponse({"detail": detail}, 503, headers={"Retry-After": RETRY_AFTER})
    if status != 500:
        return JSONResponse({"detail": str(exc)}, status)
    error_id = uuid.uuid4().hex[:16]
    logger.error("agentexec router: internal error %s", error_id, exc_info=exc)
    body = {"detail": f"internal error (error id {error_id})", "error_id": error_id}
    return JSONResponse(body, 500)


def _service(exc: Exception) -> str:
    if isinstance(exc, BrokerUnavailableError | redis.RedisError):
        return "the broker (Redis)"
    return "the activity database"


class GuardedRoute(APIRoute):
    """A route whose endpoint's errors become `error_response`s; HTTP errors (the auth's
    401/403, validation's 422) pass through to the app as usual."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException:
                raise
            except Exception as exc:
                if type(exc).__module__.startswith(("fastapi", "starlette", "pydantic")):
                    raise
                return error_response(exc)

        return guarded


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, read as it streams in; 413 as soon as it passes `limit` bytes (or
    its declared length does), before the rest is read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body over {limit} bytes")
    size = 0
    chunks: list[bytes] = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class StreamSlots:
    """How many event streams this process serves, in all and per owner."""

    def __init__(self, limit: int, per_owner: int) -> None:
        self.limit = limit
        self.per_owner = per_owner
        self._lock = threading.Lock()
        self._open = 0
        self._by_owner: dict[str | None, int] = {}

    def acquire(self, owner: str | None, scoped: bool) -> Callable[[], None]:
        """Take a slot for a stream; returns its release. 503 when none is free.

        Args:
            owner: whose stream.
            scoped: whether streams are counted per owner (the router is scoped by owner).
        """
        with self._lock:
            if self._open >= self.limit:
                raise _busy(f"this server serves {self.limit} event streams at most")
            if scoped and self._by_owner.get(owner, 0) >= self.per_owner:
                raise _busy(f"{self.per_owner} event streams at most per owner")
            self._open += 1
            self._by_owner[owner] = self._by_owner.get(owner, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                self._open -= 1
                left = self._by_owner[owner] - 1
                if left:
                    self._by_owner[owner] = left
                else:
                    del self._by_owner[owner]

        return release


def _busy(detail: str) -> HTTPException:
    return HTTPException(503, f"too many event streams: {detail}", {"Retry-After": RETRY_AFTER})


class CountedStream(StreamingResponse):
    """A streaming response that gives its stream slot back however it ends."""

    def __init__(self, content: Any, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def same_site(trusted_origins: frozenset[str]) -> Callable[[Request], None]:
    """A dependency refusing (403) a state-changing request a browser sent from another site.

    A bearer token in `Authorization` passes: browsers never attach one by themselves.
    Otherwise (cookies, or credentials the browser remembers) the request's `Origin` (or
    `Referer`) must be this site or one of `trusted_origins`, and `Sec-Fetch-Site` must not
    say `cross-site`; a request with a cookie and neither header is refused.
    """

    def check(request: Request) -> None:
        headers = request.headers
        if headers.get("authorization", "").lower().startswith("bearer "):
            return
        here = f"{request.url.scheme}://{headers.get('host', '')}"
        allowed = trusted_origins | {here}
        if headers.get("sec-fetch-site") == "cross-site":
            raise HTTPException(403, "cross-site request refused")
        origin = headers.get("origin") or _origin_of(headers.get("referer"))
        if origin is not None and origin not in allowed:
            raise HTTPException(403, f"cross-site request refused (origin {origin})")
        if origin is None and "cookie" in headers:
            raise HTTPException(403, "cross-site request refused (no Origin header)")

    return check


def _origin_of(url: str | None) -> str | None:
    if not url or "://" not in url:
        return None
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
