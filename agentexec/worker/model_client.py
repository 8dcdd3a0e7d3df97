"""The HTTP pool the SDK's default model client gets in a worker.

Unless the app gives it a client of its own, the OpenAI Agents SDK sends every model call
through one shared `openai` HTTP client: at most 1,000 connections, of which it keeps 100
open when idle, and 5 seconds to connect. That fits a process with a few agents. A worker
holds thousands, on one event loop, and two things go wrong there:

- Past 100 calls at once, every call that ends closes its connection, and the next call
  opens a new one: a TCP connect (and TLS, against the real API) per model call.
- The connect timeout is measured on the loop. With thousands of agents in flight, the loop
  can take more than 5 seconds to come back to a connect that finished long ago, so the
  connect "times out", the client retries, the retries add work, and the loop falls further
  behind. At 10,000 agents on one process we saw runs with 8,864 retries and 490 model calls
  failed for good.

So the worker builds that shared client itself, before any agent runs, with the same
settings except two: it keeps up to `AGENTEXEC_MODEL_CONNECTIONS` connections open (as many
as it may open), and allows `AGENTEXEC_MODEL_CONNECT_TIMEOUT` seconds to connect. A client
the app made itself (`set_default_openai_client`, or a model given its own client) is left
alone.
"""

from __future__ import annotations

import logging

from agentexec.config import Settings

logger = logging.getLogger(__name__)


def size_model_pool(settings: Settings) -> bool:
    """Give the SDK's shared model HTTP client the worker's pool, when nothing made that
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
    openai_provider._http_client = DefaultAsyncHttpx2Client(
        limits=httpx2.Limits(
            max_connections=settings.model_connections,
            max_keepalive_connections=settings.model_connections,
        ),
        timeout=httpx2.Timeout(600, connect=settings.model_connect_timeout),
    )
    return True
