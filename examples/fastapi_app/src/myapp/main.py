# main.py
from contextlib import asynccontextmanager
from fastapi import FastAPI
from sqlalchemy.orm import Session
import agentexec as ax

from .db import engine
from .views import router

@asynccontextmanager
async def lifespan(app: FastAPI):
    # Startup: Clean up stale activities
    with Session(engine) as session:
        canceled = ax.activity.cancel_pending(session)
        if canceled > 0:
            print(f"Cleaned up {canceled} stale activities")

    yield

    # Shutdown: Close Redis connection
    await ax.close_redis()

app = FastAPI(
    title="Agent API",
    description="API for AI agent tasks",
    version="1.0.0",
    lifespan=lifespan
)

app.include_router(router, prefix="/api")

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
