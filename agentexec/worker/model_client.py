"""The HTTP pool the SDK's default model client gets in a worker.

Unless the app gives it a client of its own, the OpenAI Agents SDK sends every model call
through one shared `openai` HTTP client: at most 1,000 connections, of which it keeps 100
open when idle, and 5 seconds to connect. That fits a process with a few agents. A worker
holds thousands, on one event loop, and three things go wrong there:

- Past 100 calls at once, every call that ends closes its connection, and the next call
  opens a new one: a TCP connect (and TLS, against the real API) per model call.
- The connect timeout is measured on the loop. With thousands of agents in flight, the loop
  can take more than 5 seconds to come back to a connect that finished long ago, so the
  connect "times out", the client retries, the retries add work, and the loop falls further
  behind. At 10,000 agents on one process we saw runs with 8,864 retries and 490 model calls
  failed for good.
- Every request the pool takes or gives back makes it walk all its requests and connections
  (httpcore's `_assign_requests_to_connections`). With 1,500 calls on 1,000 connections that
  walk took a fifth of a 3,000-agent worker's CPU.

So the worker builds that shared client itself, before any agent runs, with the same
settings except three: it keeps up to `AGENTEXEC_MODEL_CONNECTIONS` connections open (as many
as it may open), allows `AGENTEXEC_MODEL_CONNECT_TIMEOUT` seconds to connect, and splits the
connections into pools of at most 100 that take requests in turn, so each walk is short. A
client the app made itself (`set_default_openai_client`, or a model given its own client) is
left alone.
"""

from __future__ import annotations

import itertools
import logging
import math

from agentexec.config import Settings

logger = logging.getLogger(__name__)

#: Connections in one of the pools the shared client's connections are split into.
POOL_SIZE = 100


def size_model_pool(settings: Settings) -> bool:
    """Give the SDK's shared model HTTP client the worker's pools, when nothing made that
    client yet (`AGENTEXEC_MODEL_CONNECTIONS`, 0 for the SDK's own). True when it was set."""
    if not settings.model_connections:
        return False
    try:
        import httpx2
        from agents.models import openai_provider
        from openai import DefaultAsyncHttpx2Client
    except ImportError:  # another SDK version: it makes its own client
        logger.debug("the SDK has no shared model HTTP client to size")
        return False
    if getattr(openai_provider, "_http_client", False) is not None:
        return False  # made already, or this SDK version keeps it elsewhere

    class Shards(httpx2.AsyncBaseTransport):
        """Transports that take requests in turn, each with a pool of its own."""

        def __init__(self, count: int, each: int) -> None:
            limits = httpx2.Limits(max_connections=each, max_keepalive_connections=each)
            self.transports = [httpx2.AsyncHTTPTransport(limits=limits) for _ in range(count)]
            self._turn = itertools.cycle(self.transports)

        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            return await next(self._turn).handle_async_request(request)

        async def aclose(self) -> None:
            for transport in self.transports:
                await transport.aclose()

    count = math.ceil(settings.model_connections / POOL_SIZE)
    openai_provider._http_client = DefaultAsyncHttpx2Client(
        transport=Shards(count, math.ceil(settings.model_connections / count)),
        timeout=httpx2.Timeout(600, connect=settings.model_connect_timeout),
    )
    return True
