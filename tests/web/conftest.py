"""A FastAPI app with agentexec's router, served by uvicorn on a free port in this process."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated

import httpx
import pytest
import userapp.worker  # noqa: F401
import uvicorn
from fastapi import FastAPI, HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

import agentexec as ax
import agentexec.web
from agentexec.testing import wait_for
from agentexec.testing.plugin import StartWorker
from tests.apps import APP_DIR, APP_ENV

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

bearer = HTTPBearer()


def verify_token(credentials: Annotated[HTTPAuthorizationCredentials, Security(bearer)]) -> str:
    if credentials.credentials != TOKEN:
        raise HTTPException(status_code=401, detail="Invalid token")
    return credentials.credentials


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await ax.close_redis()


def make_app() -> FastAPI:
    app = FastAPI(lifespan=lifespan)
    app.include_router(
        agentexec.web.create_router(auth=verify_token, max_timeout=60), prefix="/agentexec"
    )
    return app


@dataclass
class Served:
    url: str
    #: Sends the token with every request.
    http: httpx.Client
    #: Sends no credentials.
    anon: httpx.Client
    start_worker: StartWorker

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    def worker(self) -> None:
        self.start_worker("-I", "userapp.worker", cwd=APP_DIR, env=APP_ENV)


@contextmanager
def serve(app: FastAPI, start_worker: StartWorker) -> Iterator[Served]:
    """`app` under uvicorn on a free port in this process, until the block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, "uvicorn to start")
    base = f"http://127.0.0.1:{port}/agentexec"
    try:
        with (
            httpx.Client(base_url=base, timeout=30, headers=AUTH) as http,
            httpx.Client(base_url=base, timeout=30) as anon,
        ):
            yield Served(base, http, anon, start_worker)
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture
def served(agentexec_env: dict[str, str], agentexec_worker: StartWorker) -> Iterator[Served]:
    with serve(make_app(), agentexec_worker) as running:
        yield running
