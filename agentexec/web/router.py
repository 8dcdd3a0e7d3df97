"""The web router: agentexec's REST API, live event streams and dashboard, for any FastAPI app.

```python
from fastapi import FastAPI
import agentexec.web

app = FastAPI()
app.include_router(
    agentexec.web.create_router(auth=verify_token, owner=current_user), prefix="/agentexec"
)
# /agentexec/agents, /agentexec/agents/dashboard, ...
```

Secure by default: without `auth` it refuses to be built, `auth` guards every endpoint
(reads, streams and the WebSocket included), and with `owner` every run is seen only by its
owner. See `create_router`.
"""

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, WebSocket
from fastapi.params import Depends as DependsParam
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from agentexec.client.approvals import approve, reject
from agentexec.client.cancel import cancel
from agentexec.client.enqueue import enqueue
from agentexec.client.watching import ended, watch, watch_all
from agentexec.config import get_settings
from agentexec.eventlog.hub import get_hub
from agentexec.exceptions import ApprovalError, InvalidRequestError, TaskCanceledError, TaskError
from agentexec.ids import parse_agent_id, parse_owner
from agentexec.runtime import freeze_startup_objects
from agentexec.states import Status
from agentexec.tasks.queues import Priority
from agentexec.tasks.results import get_result
from agentexec.tasks.task import get_agent_task
from agentexec.web import reads
from agentexec.web.dashboard import DashboardRoute, dashboard_response
from agentexec.web.guard import CountedStream, GuardedRoute, StreamSlots, read_body, same_site
from agentexec.web.models import (
    AgentDetail,
    AgentEvent,
    AgentPage,
    AgentResultBody,
    Canceled,
    Decision,
    DecisionBody,
    Enqueued,
    ErrorBody,
    RunEndedBody,
    ValidationErrorBody,
)
from agentexec.web.streams import sse, websocket_send

logger = logging.getLogger(__name__)

#: Longest `timeout` the result endpoint accepts, in seconds (the default of `max_timeout`).
MAX_RESULT_TIMEOUT = 300.0

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No run has this id (or it is another owner's)"}
}
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "Redis or the database is away (`Retry-After`)"}
}
_SSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": AgentEvent.model_json_schema()}},
        "description": (
            "Server-sent events: one `data:` line per change (an AgentEvent as JSON), with its "
            "position as `id:`. Reconnecting with `Last-Event-ID` resumes after that position."
        ),
    },
    503: {"model": ErrorBody, "description": "Too many event streams (`Retry-After`)"},
}

Dependency = Callable[..., Any] | DependsParam
_warned_anonymous = False


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    """At the app's startup: `freeze_startup_objects()` (FastAPI merges a router's lifespan
    into the app's)."""
    freeze_startup_objects()
    yield


def create_router(
    *,
    auth: Dependency | None = None,
    read_auth: Dependency | None = None,
    owner: Dependency | None = None,
    allow_anonymous: bool = False,
    trusted_origins: list[str] | None = None,
    max_timeout: float = MAX_RESULT_TIMEOUT,
    tags: list[str] | None = None,
) -> APIRouter:
    """A router with agentexec's endpoints under `/agents`; mount it with any prefix.

    Args:
        auth: a FastAPI dependency guarding every endpoint: reads, writes, the event streams,
            the WebSocket and the dashboard's data, such as a function checking an
            `HTTPBearer` token. It raises (401, 403) to refuse.
        read_auth: guards the reads (lists, details, results, streams, the WebSocket, the
            dashboard) instead of `auth`, when given: to relax them, say so here.
        owner: a dependency returning the caller's owner (a user or tenant id): every read,
            stream, result and cancel then sees only that owner's runs (another owner's run
            answers 404, as an unknown one does), and a run enqueued here is the caller's.
        allow_anonymous: build the router without `auth`: every run is open to anyone who
            reaches it. A warning says so once per process.
        trusted_origins: origins (`https://app.example.com`) besides the router's own whose
            pages may send state-changing requests without a bearer token (cookie auth).
        max_timeout: longest `timeout` of the result endpoint, in seconds.
        tags: OpenAPI tags of the endpoints (default `["agentexec"]`).

    Raises:
        ValueError: neither `auth` nor `allow_anonymous=True` was given.
    """
    if auth is None and not allow_anonymous:
        raise ValueError(
            "create_router() serves every run to whoever reaches it without auth: pass "
            "auth=<a FastAPI dependency that refuses unknown callers>, or allow_anonymous=True "
            "to serve it open on purpose"
        )
    if auth is None:
        _warn_anonymous()
    # The origin check first: a cross-site write is refused before any credential is used.
    write = [Depends(same_site(frozenset(trusted_origins or ())))]
    write += [_depends(auth)] if auth is not None else []
    reader = read_auth if read_auth is not None else auth
    read = [_depends(reader)] if reader is not None else []
    caller = _caller(owner)
    scoped = owner is not None
    settings = get_settings()
    slots = StreamSlots(settings.max_streams, settings.max_streams_per_owner)
    Owner = Annotated[str | None, Depends(caller)]
    router = APIRouter(
        prefix="/agents",
        tags=list(tags or ["agentexec"]),
        lifespan=_lifespan,
        route_class=GuardedRoute,
        responses=_UNAVAILABLE,
    )

    @router.get("", response_model=AgentPage, dependencies=read, summary="List runs")
    def list_agents(
        who: Owner,
        page: Annotated[int, Query(ge=1)] = 1,
        page_size: Annotated[int, Query(ge=1, le=settings.max_page_size)] = 20,
        status: Status | None = None,
        task: str | None = None,
    ) -> AgentPage:
        """Runs, newest first, optionally only those with a status or of a task."""
        return AgentPage.model_validate(reads.page(page, page_size, status, task, who))

    @router.get(
        "/events", dependencies=read, response_class=StreamingResponse, responses=_SSE,
        summary="Events of every run (SSE)",
    )  # fmt: skip
    async def all_events(
        who: Owner,
        status: Annotated[list[Status] | None, Query()] = None,
        task: Annotated[list[str] | None, Query()] = None,
        after: Annotated[int | None, Query(ge=1)] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> Response:
        """The state of each active run (QUEUED or RUNNING, or with `status`), then every change.

        Filter by `status` and `task` (each may repeat). Resume with `Last-Event-ID` (or
        `after`): every change after that position, and no state first.
        """
        position = _position(last_event_id, after)
        await get_hub().check()  # an unreachable log is a 503, not a stream that breaks
        release = slots.acquire(who, scoped)
        events = watch_all(status=status, task=task, after=position, owner=who)
        return _event_stream(sse(events, ids_for_snapshots=False), release)

    def dashboard() -> Response:
        """A live page of the runs: progress bars, logs, results, cancel buttons. Without
        credentials the same page answers 401 and asks for a token: it holds no data."""
        return dashboard_response(200)

    router.add_api_route(
        "/dashboard", dashboard, methods=["GET"], dependencies=read, summary="Dashboard",
        response_class=HTMLResponse, route_class_override=DashboardRoute,
    )  # fmt: skip

    @router.post(
        "/tasks/{task_name}",
        response_model=Enqueued,
        status_code=202,
        dependencies=write,
        summary="Enqueue a run",
        responses={
            404: {"model": ErrorBody, "description": "No agent task has this name"},
            413: {"model": ErrorBody, "description": "The body is over the context limit"},
            422: {"model": ValidationErrorBody, "description": "The context does not validate"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
                "description": "The task's context model, as JSON",
            }
        },
    )
    async def enqueue_task(
        task_name: str, request: Request, who: Owner, priority: Priority = Priority.LOW
    ) -> Enqueued:
        """Validate the body against the task's context model and queue a run."""
        task = get_agent_task(task_name)
        body = await read_body(request, settings.max_context_bytes)
        try:
            context = json.loads(body or b"null")
        except ValueError as exc:
            raise HTTPException(422, [{"loc": ["body"], "msg": f"invalid JSON: {exc}"}]) from None
        try:
            model = task.context_type.model_validate(context)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False)
            raise HTTPException(422, [{**e, "loc": ["body", *e["loc"]]} for e in errors]) from None
        queued = await enqueue(task_name, model, priority=priority, owner=who)
        return Enqueued(agent_id=queued.agent_id, task=task_name, priority=priority.value)

    @router.get(
        "/{agent_id}", response_model=AgentDetail, dependencies=read, responses=_NOT_FOUND,
        summary="A run with its log",
    )  # fmt: skip
    def agent_detail(agent_id: str, who: Owner) -> AgentDetail:
        """A run, with its whole log, oldest entry first."""
        return AgentDetail.model_validate(reads.detail_or_404(agent_id, who))

    @router.get(
        "/{agent_id}/result",
        response_model=AgentResultBody,
        dependencies=read,
        summary="Wait for a run's result",
        responses={
            **_NOT_FOUND,
            408: {"model": ErrorBody, "description": "Not finished within `timeout`"},
            409: {"model": RunEndedBody, "description": "The run failed or was canceled"},
            422: {"description": "`timeout` is not above 0 and at most the maximum"},
        },
    )
    async def agent_result(
        agent_id: str, who: Owner, timeout: Annotated[float, Query(gt=0, le=max_timeout)] = 30.0
    ) -> Any:
        """The run's return value, waiting up to `timeout` seconds for it to finish."""
        key = await reads.known(agent_id, who, scoped)
        try:
            result = await get_result(key, timeout=timeout)
        except TimeoutError:
            raise HTTPException(408, f"agent {key} did not finish within {timeout:g}s") from None
        except TaskError as exc:
            status = Status.CANCELED if isinstance(exc, TaskCanceledError) else Status.ERROR
            body = RunEndedBody(detail=str(exc), agent_id=key, status=status, reason=exc.reason)
            return JSONResponse(body.model_dump(mode="json"), status_code=409)
        except KeyError:
            raise HTTPException(404, f"no run has the id {agent_id!r}") from None
        return AgentResultBody(agent_id=key, result=result)

    @router.post(
        "/{agent_id}/cancel",
        response_model=Canceled,
        dependencies=write,
        summary="Cancel a run",
        responses={**_NOT_FOUND, 409: {"model": ErrorBody, "description": "It has ended"}},
    )
    async def cancel_agent(agent_id: str, who: Owner) -> Canceled:
        """Cancel a queued or running run: it ends CANCELED."""
        try:
            key = parse_agent_id(agent_id)
            canceled = await cancel(key, owner=who)
        except KeyError:
            raise HTTPException(404, f"no run has the id {agent_id!r}") from None
        if not canceled:
            raise HTTPException(409, f"agent {key} has already ended")
        return Canceled(agent_id=key)

    @router.post(
        "/{agent_id}/approvals/{call_id}",
        response_model=Decision,
        dependencies=write,
        summary="Approve or reject a tool call a run waits on",
        responses={**_NOT_FOUND, 409: {"model": ErrorBody, "description": "Decided already"}},
    )
    async def decide_approval(
        agent_id: str, call_id: str, body: DecisionBody, who: Owner
    ) -> Decision:
        """Decide one pending tool call of a WAITING run (`approvals` in its detail). Once every
        call is decided, the run is queued again and continues; a rejected tool never runs,
        and the model is told `message`."""
        try:
            key = parse_agent_id(agent_id)
            decide = approve if body.approve else reject
            decided = await decide(key, call_id, message=body.message, owner=who)
        except ApprovalError as exc:
            raise HTTPException(404, str(exc)) from None
        except KeyError:
            raise HTTPException(404, f"no run has the id {agent_id!r}") from None
        if not decided:
            raise HTTPException(409, f"call {call_id!r} of agent {key} is not pending")
        return Decision(agent_id=key, call_id=call_id, approved=body.approve)

    @router.get(
        "/{agent_id}/events", dependencies=read, response_class=StreamingResponse,
        responses={**_SSE, 204: {"description": "It ended at `Last-Event-ID`"}, **_NOT_FOUND},
        summary="Events of one run (SSE)",
    )  # fmt: skip
    async def agent_events(
        agent_id: str,
        who: Owner,
        after: Annotated[int | None, Query(ge=1)] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> Response:
        """The run's state, then each change until it ends.

        Resume with `Last-Event-ID` (or `after`): the changes after that position. When the
        run ended there, the answer is 204, which tells an EventSource to stop reconnecting.
        """
        position = _position(last_event_id, after)
        key = await reads.known(agent_id, who, scoped)
        release = slots.acquire(who, scoped)
        try:
            events = watch(key, after=position, owner=who)
            if position is not None and await ended(key, position):
                release()
                return Response(status_code=204)
            first = await anext(events) if position is None else None
        except KeyError:
            release()
            raise HTTPException(404, f"no run has the id {agent_id!r}") from None
        except BaseException:
            release()
            raise
        return _event_stream(sse(events, first), release)

    @router.websocket("/{agent_id}/ws", dependencies=read)
    async def agent_websocket(
        websocket: WebSocket, agent_id: str, who: Owner, after: str | None = None
    ) -> None:
        """The events of `/{agent_id}/events`, one JSON message each; closes after the end.

        An unknown id closes the socket with code 4404, a bad `after` with 1008, and too many
        streams with 1013 (try again later).
        """
        await websocket.accept()
        try:
            position = _after(after)
        except InvalidRequestError as exc:
            await websocket.close(code=1008, reason=str(exc)[:120])
            return
        try:
            release = slots.acquire(who, scoped)
        except HTTPException:
            await websocket.close(code=1013, reason="too many event streams")
            return
        try:
            key = await reads.known(agent_id, who, scoped)
            events = watch(key, after=position, owner=who)
            first = await anext(events) if position is None else None
        except (KeyError, StopAsyncIteration, HTTPException):
            release()
            await websocket.close(code=4404, reason="no run has this id")
            return

        async def with_first() -> Any:
            if first is not None:
                yield first
            async for event in events:
                yield event

        try:
            await websocket_send(websocket, with_first())
        finally:
            release()

    return router


def _warn_anonymous() -> None:
    global _warned_anonymous
    if not _warned_anonymous:
        _warned_anonymous = True
        logger.warning(
            "agentexec.web.create_router(allow_anonymous=True): every run, its results and its "
            "events are open to anyone who can reach this app"
        )


def _caller(owner: Dependency | None) -> Callable[..., Any]:
    """The dependency giving the caller's owner (None when the router is not scoped)."""
    if owner is None:

        def nobody() -> str | None:
            return None

        return nobody
    dependency = owner.dependency if isinstance(owner, DependsParam) else owner

    def scoped(who: Annotated[Any, Depends(dependency)]) -> str | None:
        if who is None:
            raise HTTPException(403, "this caller has no owner, so it sees no runs")
        try:
            return parse_owner(str(who))
        except InvalidRequestError as exc:
            raise HTTPException(403, str(exc)) from None

    return scoped


def _depends(dependency: Dependency) -> Any:
    return dependency if isinstance(dependency, DependsParam) else Depends(dependency)


def _after(value: str | None) -> int | None:
    """A position from the WebSocket's `after`, or InvalidRequestError."""
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise InvalidRequestError(
            f"after must be an event position (an integer > 0), got {value!r}"
        )
    return int(value)


def _position(last_event_id: str | None, after: int | None) -> int | None:
    if last_event_id is None or not last_event_id.strip():
        return after
    try:
        return _after(last_event_id.strip())
    except InvalidRequestError:
        detail = f"Last-Event-ID must be an event position, got {last_event_id!r}"[:200]
        raise HTTPException(422, detail) from None


def _event_stream(body: Any, release: Callable[[], None]) -> CountedStream:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return CountedStream(body, release, media_type="text/event-stream", headers=headers)
