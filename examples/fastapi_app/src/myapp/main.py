# main.py
from contextlib import asynccontextmanager
from fastapi import FastAPI
from sqlalchemy.orm import Session
import agentexec as ax
from agentexec import telemetry

from .db import engine
from .views import router
# (not in the guide: every endpoint of this app needs the guide's bearer token, see below)
from fastapi import Depends
from .security import verify_token

@asynccontextmanager
async def lifespan(app: FastAPI):
    # (not in the guide: OpenTelemetry spans when OTEL_EXPORTER_OTLP_ENDPOINT is set)
    telemetry.configure("agent-api")
    # Startup: Clean up stale activities
    with Session(engine) as session:
        canceled = ax.activity.cancel_pending(session)
        if canceled > 0:
            print(f"Cleaned up {canceled} stale activities")

    yield

    # Shutdown: Close Redis connection
    await ax.close_redis()
    telemetry.shutdown()

app = FastAPI(
    title="Agent API",
    description="API for AI agent tasks",
    version="1.0.0",
    lifespan=lifespan
)

# The guide mounts its router with `app.include_router(router, prefix="/api")`; here the
# guide's own `verify_token` guards every endpoint of it, WebSocket included.
app.include_router(router, prefix="/api", dependencies=[Depends(verify_token)])

# main.py
from fastapi import Request
from fastapi.responses import JSONResponse

@app.exception_handler(Exception)
async def global_exception_handler(request: Request, exc: Exception):
    return JSONResponse(
        status_code=500,
        content={
            "error": "Internal server error",
            "detail": str(exc) if app.debug else "An error occurred"
        }
    )

# Not in the guide: a specific answer to each bad input (see errors.py).
from . import errors

errors.install(app)

# The guide's advanced patterns (advanced.py): custom exception handlers, rate limiting.
from slowapi import _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded

from .advanced import router as advanced_router
from .exceptions import TaskNotFoundError, TaskTimeoutError
from .limits import limiter

app.state.limiter = limiter
app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)

@app.exception_handler(TaskNotFoundError)
async def task_not_found_handler(request: Request, exc: TaskNotFoundError):
    return JSONResponse(
        status_code=404,
        content={"error": "Task not found", "agent_id": exc.agent_id}
    )

@app.exception_handler(TaskTimeoutError)
async def task_timeout_handler(request: Request, exc: TaskTimeoutError):
    return JSONResponse(
        status_code=408,
        content={"error": "Task timed out", "agent_id": exc.agent_id, "timeout": exc.timeout}
    )

app.include_router(advanced_router, prefix="/api/secure", dependencies=[Depends(verify_token)])

# agentexec's own router: REST API, live event streams and the dashboard at
# /agentexec/agents/dashboard. Every endpoint needs the bearer token, reads included.
import agentexec.web

app.include_router(agentexec.web.create_router(auth=verify_token), prefix="/agentexec")
