"""The web router: agentexec's REST API, live event streams and dashboard, for any FastAPI app.

```python
from fastapi import Depends, FastAPI
import agentexec.web

app = FastAPI()
app.include_router(agentexec.web.create_router(auth=verify_token), prefix="/agentexec")
# /agentexec/agents, /agentexec/agents/dashboard, ...
```
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, WebSocket
from fastapi.params import Depends as DependsParam
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from agentexec.client import activity
from agentexec.client.cancel import cancel
from agentexec.client.enqueue import enqueue
from agentexec.client.schemas import ActivityDetail
from agentexec.client.watching import ended, watch, watch_all
from agentexec.exceptions import (
    ActivityStoreError,
    InvalidAgentIdError,
    InvalidContextError,
    TaskCanceledError,
    TaskError,
    UnknownTaskError,
)
from agentexec.ids import parse_agent_id
from agentexec.runtime import freeze_startup_objects, get_runtime
from agentexec.states import Status
from agentexec.tasks.queues import Priority
from agentexec.tasks.results import get_result
from agentexec.tasks.task import get_agent_task
from agentexec.web.dashboard import page as dashboard_page
from agentexec.web.models import (
    AgentDetail,
    AgentEvent,
    AgentPage,
    AgentResultBody,
    Canceled,
    Enqueued,
    ErrorBody,
    RunEndedBody,
    ValidationErrorBody,
)
from agentexec.web.streams import sse, websocket_send

#: Longest `timeout` the result endpoint accepts, in seconds (the default of `max_timeout`).
MAX_RESULT_TIMEOUT = 300.0

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No run has this id"}
}
_SSE: dict[str, Any] = {
    "content": {"text/event-stream": {"schema": AgentEvent.model_json_schema()}},
    "description": (
        "Server-sent events: one `data:` line per change (an AgentEvent as JSON), with its "
        "position as `id:`. Reconnecting with `Last-Event-ID` resumes after that position."
    ),
}

Dependency = Callable[..., Any] | DependsParam


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
    max_timeout: float = MAX_RESULT_TIMEOUT,
    tags: list[str] | None = None,
) -> APIRouter:
    """A router with agentexec's endpoints under `/agents`; mount it with any prefix.

    Args:
        auth: a dependency guarding the endpoints that change something (enqueue, cancel),
            such as a function checking an `HTTPBearer` token. It raises (401, 403) to refuse.
        read_auth: a dependency guarding everything else: reads, event streams, the
            WebSocket and the dashboard. To guard the WebSocket too, it must take an
            `HTTPConnection` (or nothing) rather than a `Request`. Browsers cannot put headers
            on an EventSource or a WebSocket: use a cookie, or leave reads open.
        max_timeout: longest `timeout` of the result endpoint, in seconds.
        tags: OpenAPI tags of the endpoints (default `["agentexec"]`).
    """
    write = [_depends(auth)] if auth is not None else []
    read = [_depends(read_auth)] if read_auth is not None else []
    router = APIRouter(prefix="/agents", tags=list(tags or ["agentexec"]), lifespan=_lifespan)

    @router.get("", response_model=AgentPage, dependencies=read, summary="List runs")
    def list_agents(
        page: Annotated[int, Query(ge=1)] = 1,
        page_size: Annotated[int, Query(ge=1, le=500)] = 20,
        status: Status | None = None,
        task: str | None = None,
    ) -> AgentPage:
        """Runs, newest first, optionally only those with a status or of a task."""
        with Session(get_runtime().engine) as session:
            result = activity.list(
                session, page=page, page_size=page_size, status=status, agent_type=task
            )
        return AgentPage.model_validate(result)

    @router.get(
        "/events",
        dependencies=read,
        response_class=StreamingResponse,
        responses={200: _SSE},
        summary="Events of every run (SSE)",
    )
    async def all_events(
        status: Annotated[list[Status] | None, Query()] = None,
        task: Annotated[list[str] | None, Query()] = None,
        after: int | None = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """The state of each active run (QUEUED or RUNNING, or with `status`), then every change.

        Filter by `status` and `task` (each may repeat). Resume with `Last-Event-ID` (or
        `after`): every change after that position, and no state first.
        """
        position = _position(last_event_id, after)
        events = watch_all(status=status, task=task, after=position)
        return _event_stream(sse(events, ids_for_snapshots=False))

    @router.get("/dashboard", dependencies=read, response_class=HTMLResponse, summary="Dashboard")
    def dashboard() -> HTMLResponse:
        """A live page of the runs: progress bars, logs, results, cancel buttons."""
        return HTMLResponse(dashboard_page())

    @router.post(
        "/tasks/{task_name}",
        response_model=Enqueued,
        status_code=202,
        dependencies=write,
        summary="Enqueue a run",
        responses={
            404: {"model": ErrorBody, "description": "No agent task has this name"},
            422: {"model": ValidationErrorBody, "description": "The context does not validate"},
        },
    )
    async def enqueue_task(
        task_name: str,
        context: Annotated[dict[str, Any], Body(description="The task's context model")],
        priority: Priority = Priority.LOW,
    ) -> Enqueued:
        """Validate the body against the task's context model and queue a run."""
        try:
            task = get_agent_task(task_name)
        except UnknownTaskError as exc:
            raise HTTPException(404, str(exc)) from None
        try:
            model = task.context_type.model_validate(context)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False)
            raise HTTPException(422, [{**e, "loc": ["body", *e["loc"]]} for e in errors]) from None
        try:
            queued = await enqueue(task_name, model, priority=priority)
        except InvalidContextError as exc:
            raise HTTPException(422, [{"loc": ["body"], "msg": exc.detail}]) from None
        return Enqueued(agent_id=queued.agent_id, task=task_name, priority=priority.value)

    @router.get(
        "/{agent_id}",
        response_model=AgentDetail,
        dependencies=read,
        responses=_NOT_FOUND,
        summary="A run with its log",
    )
    def agent_detail(agent_id: str) -> AgentDetail:
        """A run, with its whole log, oldest entry first."""
        return AgentDetail.model_validate(_detail_or_404(agent_id))

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
        agent_id: str, timeout: Annotated[float, Query(gt=0, le=max_timeout)] = 30.0
    ) -> Any:
        """The run's return value, waiting up to `timeout` seconds for it to finish."""
        key = await _known(agent_id)
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
        responses={
            **_NOT_FOUND,
            409: {"model": ErrorBody, "description": "The run has already ended"},
        },
    )
    async def cancel_agent(agent_id: str) -> Canceled:
        """Cancel a queued or running run: it ends CANCELED."""
        try:
            key = parse_agent_id(agent_id)
            canceled = await cancel(key)
        except KeyError:
            raise HTTPException(404, f"no run has the id {agent_id!r}") from None
        if not canceled:
            raise HTTPException(409, f"agent {key} has already ended")
        return Canceled(agent_id=key)

    @router.get(
        "/{agent_id}/events",
        dependencies=read,
        response_class=StreamingResponse,
        responses={200: _SSE, 204: {"description": "It ended at `Last-Event-ID`"}, **_NOT_FOUND},
        summary="Events of one run (SSE)",
    )
    async def agent_events(
        agent_id: str,
        after: int | None = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> Response:
        """The run's state, then each change until it ends.

        Resume with `Last-Event-ID` (or `after`): the changes after that position. When the
        run ended there, the answer is 204, which tells an EventSource to stop reconnecting.
        """
        position = _position(last_event_id, after)
        try:
            key = parse_agent_id(agent_id)
            if position is not None and await ended(key, position):
                return Response(status_code=204)
            events = watch(key, after=position)
            first = await anext(events) if position is None else None
        except KeyError:
            raise HTTPException(404, f"no run has the id {agent_id!r}") from None
        return _event_stream(sse(events, first))

    @router.websocket("/{agent_id}/ws", dependencies=read)
    async def agent_websocket(
        websocket: WebSocket, agent_id: str, after: int | None = None
    ) -> None:
        """The events of `/{agent_id}/events`, one JSON message each; closes after the end.

        An unknown id closes the socket with code 4404.
        """
        await websocket.accept()
        try:
            key = parse_agent_id(agent_id)
            events = watch(key, after=after)
            first = await anext(events) if after is None else None
        except (KeyError, StopAsyncIteration):
            await websocket.close(code=4404, reason="no run has this id")
            return

        async def with_first() -> Any:
            if first is not None:
                yield first
            async for event in events:
                yield event

        await websocket_send(websocket, with_first())

    return router


def _depends(dependency: Dependency) -> Any:
    return dependency if isinstance(dependency, DependsParam) else Depends(dependency)


def _position(last_event_id: str | None, after: int | None) -> int | None:
    if last_event_id is None or not last_event_id.strip():
        return after
    try:
        return int(last_event_id)
    except ValueError:
        detail = f"Last-Event-ID must be an event position, got {last_event_id!r}"
        raise HTTPException(422, detail) from None


def _event_stream(body: Any) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


def _detail_or_404(agent_id: str) -> ActivityDetail:
    with Session(get_runtime().engine) as session:
        detail = activity.detail(session, agent_id)
    if detail is None:
        raise HTTPException(404, f"no run has the id {agent_id!r}")
    return detail


async def _known(agent_id: str) -> uuid.UUID:
    """The id of a run the activity database knows; 404 otherwise.

    While the database cannot answer, the result backend decides (`get_result`).
    """
    try:
        key = parse_agent_id(agent_id)
    except InvalidAgentIdError:
        raise HTTPException(404, f"no run has the id {agent_id!r}") from None
    try:
        await asyncio.to_thread(_detail_or_404, str(key))
    except (SQLAlchemyError, ActivityStoreError):
        pass
    return key
