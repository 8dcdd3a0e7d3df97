"""A scripted, local OpenAI-compatible HTTP server for tests and benchmarks.

The server implements just enough of the OpenAI HTTP API to drive agents built with the
OpenAI Agents SDK without network access or an API key:

* ``POST /v1/responses``: the Responses API, plain JSON or streamed (``"stream": true``) as
  server-sent events in the same order and shape the real API emits them
  (``response.created``, ``response.in_progress``, ``response.output_item.added``,
  ``response.content_part.added``, ``response.output_text.delta``/``.done``,
  ``response.content_part.done``, ``response.function_call_arguments.delta``/``.done``,
  ``response.output_item.done``, ``response.completed``). Used by ``OpenAIResponsesModel``,
  the SDK's default model class.
* ``POST /v1/chat/completions``: Chat Completions, plain or streamed (with the usage chunk when
  ``stream_options.include_usage`` is set). Used by ``OpenAIChatCompletionsModel``.
* ``GET /v1/models`` and ``GET /health``: used for readiness checks.

What the "model" answers is decided by a *responder*, a function from the request JSON to a
:class:`Reply` (final text, function calls, simulated latency or an HTTP error). The default
responder, :func:`default_responder`, is stateless: it decides from the conversation carried in
the request, so any number of concurrent agents can share one server.

Example:
    Point an explicit client at the server (recommended, no global state)::

        from agents import Agent, OpenAIResponsesModel, Runner, function_tool
        from openai import AsyncOpenAI

        from agentexec.testing.openai_server import Reply, ScriptedOpenAIServer

        with ScriptedOpenAIServer() as server:
            client = AsyncOpenAI(base_url=server.base_url, api_key="test")
            agent = Agent(
                name="worker",
                model=OpenAIResponsesModel(model="gpt-4o", openai_client=client),
                tools=[report_status],
            )
            result = await Runner.run(agent, "hello")  # inside a coroutine
            assert result.final_output == "Done: hello"
            assert server.requests[0]["tools"][0]["name"] == "report_status"

    Point the SDK's *default* provider at the server (``Agent(model="gpt-4o")`` or no model at
    all), which is what code under test usually does. Setting the environment variables is
    enough::

        os.environ["OPENAI_BASE_URL"] = server.base_url  # or os.environ.update(server.env())
        os.environ["OPENAI_API_KEY"] = "test"

    This works because ``Runner.run`` builds a fresh ``MultiProvider``/``OpenAIProvider`` for
    every run (``RunConfig.model_provider`` has a ``default_factory``) and that provider creates
    its ``AsyncOpenAI`` client lazily, reading ``OPENAI_BASE_URL``/``OPENAI_API_KEY`` at that
    moment. Two caveats:

    * A client installed with ``agents.set_default_openai_client(...)`` takes precedence over the
      environment variables. Either install one pointing at the server
      (``set_default_openai_client(AsyncOpenAI(base_url=server.base_url, api_key="test"))``) or
      make sure none is installed (``agents.models._openai_shared._default_openai_client =
      None``; there is no public reset function). Likewise ``set_default_openai_key`` beats
      ``OPENAI_API_KEY``.
    * The default provider's HTTP connection pool is process-global
      (``agents.models.openai_provider._http_client``, created on first use) and is bound to the
      event loop that first used it. A later ``asyncio.run(...)`` (another test, another Celery
      task) that goes through the default provider fails with ``RuntimeError: Event loop is
      closed`` once a pooled connection from the old loop is touched. This happens with the
      real API too, the server merely makes it visible. Either run everything on one long-lived
      loop (e.g. one ``asyncio.Runner``), or reset the pool before each new loop with
      ``agents.models.openai_provider._http_client = None`` (private, no public API), or pass a
      per-run client: ``RunConfig(model_provider=OpenAIProvider(openai_client=client))`` with
      ``async with AsyncOpenAI() as client``. The same applies to one ``AsyncOpenAI`` instance
      (including one given to ``set_default_openai_client``) shared across event loops.
    * The SDK exports traces to ``https://api.openai.com/v1/traces/ingest`` (not to
      ``OPENAI_BASE_URL``) using ``OPENAI_API_KEY``. Without network access call
      ``agents.set_tracing_disabled(True)`` or set ``OPENAI_AGENTS_DISABLE_TRACING=1`` before the
      first run, otherwise the exporter logs failures and retries at interpreter exit.

    Environment variables are inherited by subprocesses (e.g. Celery workers started by a test),
    which makes them the simplest way to point out-of-process agents at the server.

Command line:
    ``python -m agentexec.testing.openai_server --port 8399 --delay 0.5`` serves the default
    responder forever, for manual experiments and benchmarks.

Note:
    This module needs ``uvicorn`` and ``starlette`` (via ``fastapi``), which are development
    dependencies of agentexec.

The pieces: what the model answers (`Reply`, responders) is in `openai_script`, the JSON and
event payloads in `openai_wire`, and the HTTP server here, which re-exports the public names.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentexec.testing.openai_script import (
    ModelError,
    Reply,
    Responder,
    ToolCall,
    answered_tool_names,
    default_responder,
    function_tool_names,
    last_user_text,
    make_status_responder,
)
from agentexec.testing.openai_wire import (
    _SSE_HEADERS,
    _chat_chunks,
    _chat_completion,
    _new_id,
    _Plan,
    _response_object,
    _responses_events,
    _responses_output,
    _sse_chat,
    _sse_responses,
)

__all__ = [
    # The server
    "ScriptedOpenAIServer",
    "main",
    # Replies and responders (defined in openai_script)
    "ModelError",
    "Reply",
    "ToolCall",
    "Responder",
    "default_responder",
    "make_status_responder",
    # Request inspection, for writing responders
    "answered_tool_names",
    "function_tool_names",
    "last_user_text",
]

_logger = logging.getLogger(__name__)

_JSONDict = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class ScriptedOpenAIServer:
    """A local OpenAI-compatible server whose answers come from a responder function.

    Use it as a context manager; it serves from a background thread (uvicorn on an
    automatically chosen free port by default) until the block exits::

        with ScriptedOpenAIServer(responder) as server:
            client = AsyncOpenAI(base_url=server.base_url, api_key="test")

    Attributes:
        responder: The function deciding each reply.
        host: Interface to listen on.
        delay: Default simulated latency for replies whose ``delay`` is ``None``.
        app: The Starlette application (usable on its own, e.g. with an ASGI transport).
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        delay: float = 0.0,
        startup_timeout: float = 10.0,
        shutdown_timeout: float = 5.0,
        log_level: str = "warning",
    ) -> None:
        """Create the server (it does not listen until started).

        Args:
            responder: Maps request JSON to a :class:`Reply` (sync or async); defaults to
                :func:`default_responder`.
            host: Interface to listen on.
            port: Port to listen on; ``0`` picks a free port.
            delay: Default simulated latency in seconds.
            startup_timeout: Seconds to wait for the server to answer after starting.
            shutdown_timeout: Seconds to wait for a graceful shutdown before forcing it.
            log_level: uvicorn log level.
        """
        self.responder: Responder = responder or default_responder
        self.host = host
        self.delay = delay
        self._requested_port = port
        self._port: int | None = None
        self._startup_timeout = startup_timeout
        self._shutdown_timeout = shutdown_timeout
        self._log_level = log_level
        self._lock = threading.Lock()
        self._requests: list[_JSONDict] = []
        self._usages: list[tuple[_JSONDict, _JSONDict]] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/responses", self._handle_responses, methods=["POST"]),
                Route("/v1/chat/completions", self._handle_chat, methods=["POST"]),
                Route("/v1/models", self._handle_models, methods=["GET"]),
                Route("/health", self._handle_health, methods=["GET"]),
            ]
        )

    # -- public API ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the server listens on.

        Raises:
            RuntimeError: If the server has not been started.
        """
        if self._port is None:
            raise RuntimeError("ScriptedOpenAIServer is not running")
        return self._port

    @property
    def url(self) -> str:
        """The server root URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL to give clients, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def requests(self) -> list[_JSONDict]:
        """A snapshot of all request bodies received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def usages(self) -> list[tuple[_JSONDict, _JSONDict]]:
        """Each Responses API answer's request body and the `usage` it returned, in order
        (plain and streamed): what a run's recorded usage must add up to."""
        with self._lock:
            return list(self._usages)

    def clear_requests(self) -> None:
        """Forget the recorded requests (and usages)."""
        with self._lock:
            self._requests.clear()
            self._usages.clear()

    def _record_usage(self, body: _JSONDict, response: _JSONDict) -> None:
        usage = response.get("usage")
        if isinstance(usage, dict):
            with self._lock:
                self._usages.append((body, usage))

    def _recorded(self, body: _JSONDict, events: Iterator[_JSONDict]) -> Iterator[_JSONDict]:
        for event in events:
            if event.get("type") == "response.completed":
                self._record_usage(body, event.get("response") or {})
            yield event

    def env(self, api_key: str = "test") -> dict[str, str]:
        """Return environment variables pointing the OpenAI SDK's default client here.

        Args:
            api_key: Value for ``OPENAI_API_KEY`` (the server ignores it).

        Returns:
            ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``.
        """
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": api_key}

    def start(self) -> Self:
        """Start serving in a background thread and wait until the server answers.

        Returns:
            The server itself.

        Raises:
            RuntimeError: If already running, or the server does not answer in time.
        """
        if self._thread is not None:
            raise RuntimeError("ScriptedOpenAIServer is already running")
        sock = self._bind()
        server = self._make_uvicorn()
        self._server = server
        self._thread_error = None

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # reported by _wait_until_ready / stop
                self._thread_error = exc
                _logger.exception("ScriptedOpenAIServer crashed")
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"openai-server-{self._port}", daemon=True)
        self._thread.start()
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Shut the server down and wait for its thread to finish.

        In-flight requests get ``shutdown_timeout`` seconds to complete before the server is
        forced down. Calling ``stop`` on a stopped server does nothing.
        """
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        server.should_exit = True
        thread.join(self._shutdown_timeout + 1.0)
        if thread.is_alive():
            server.force_exit = True
            thread.join(self._shutdown_timeout)
        self._thread = None
        self._server = None
        self._port = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (Ctrl-C / SIGTERM)."""
        sock = self._bind()
        server = self._make_uvicorn()
        self._server = server
        print(f"Scripted OpenAI server listening on {self.base_url}", flush=True)
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            self._server = None
            self._port = None

    def __enter__(self) -> Self:
        """Start the server.

        Returns:
            The running server.
        """
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    # -- lifecycle helpers --------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        # Listening right away queues early connections until uvicorn accepts them.
        sock.listen(4096)
        self._port = int(sock.getsockname()[1])
        return sock

    def _make_uvicorn(self) -> uvicorn.Server:
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            log_level=self._log_level,
            access_log=False,
            timeout_graceful_shutdown=max(1, int(self._shutdown_timeout)),
            backlog=4096,
            # Longer than any client's keep-alive expiry: an idle connection the server closes
            # just as a client reuses it fails that request (httpx ReadError).
            timeout_keep_alive=120,
        )
        return uvicorn.Server(config)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        interval = 0.005
        while True:
            if self._thread_error is not None:
                raise RuntimeError("ScriptedOpenAIServer failed to start") from self._thread_error
            if self._thread is None or not self._thread.is_alive():
                raise RuntimeError("ScriptedOpenAIServer thread exited during startup")
            if self._probe():
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"ScriptedOpenAIServer did not answer within {self._startup_timeout}s"
                )
            time.sleep(interval)
            interval = min(interval * 2, 0.1)

    def _probe(self) -> bool:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=1.0)
        try:
            connection.request("GET", "/health")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    # -- request handling ---------------------------------------------------------------------

    async def _read_request(self, request: Request) -> _JSONDict | Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse(
                ModelError(400, "Request body is not valid JSON.", "invalid_request_error").body(),
                status_code=400,
            )
        if not isinstance(body, dict):
            return JSONResponse(
                ModelError(
                    400, "Request body must be a JSON object.", "invalid_request_error"
                ).body(),
                status_code=400,
            )
        with self._lock:
            self._requests.append(body)
        return body

    async def _reply(self, body: _JSONDict) -> Reply:
        result = self.responder(body)
        if not isinstance(result, Reply | str):
            result = await result
        reply = Reply.message(result) if isinstance(result, str) else result
        delay = self.delay if reply.delay is None else reply.delay
        if delay > 0:
            await asyncio.sleep(delay)
        return reply

    async def _plan_or_error(self, request: Request) -> tuple[_JSONDict, _Plan] | Response:
        body = await self._read_request(request)
        if isinstance(body, Response):
            return body
        try:
            reply = await self._reply(body)
        except Exception as exc:
            _logger.exception("ScriptedOpenAIServer responder failed")
            error = ModelError(500, f"Responder failed: {exc!r}")
            return JSONResponse(error.body(), status_code=error.status_code)
        if reply.error is not None:
            return JSONResponse(reply.error.body(), status_code=reply.error.status_code,
                                headers=reply.error.headers())  # fmt: skip
        return body, _Plan.from_reply(reply)

    async def _handle_responses(self, request: Request) -> Response:
        planned = await self._plan_or_error(request)
        if isinstance(planned, Response):
            return planned
        body, plan = planned
        if body.get("stream"):
            return StreamingResponse(
                _sse_responses(self._recorded(body, _responses_events(body, plan))),
                media_type="text/event-stream",
                headers=_SSE_HEADERS,
            )
        response_id = _new_id("resp_")
        output = _responses_output(plan)
        answer = _response_object(body, response_id, int(time.time()), "completed", output)
        self._record_usage(body, answer)
        return JSONResponse(answer)

    async def _handle_chat(self, request: Request) -> Response:
        planned = await self._plan_or_error(request)
        if isinstance(planned, Response):
            return planned
        body, plan = planned
        if body.get("stream"):
            return StreamingResponse(
                _sse_chat(_chat_chunks(body, plan)),
                media_type="text/event-stream",
                headers=_SSE_HEADERS,
            )
        return JSONResponse(_chat_completion(body, plan))

    async def _handle_models(self, request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": "gpt-4o", "object": "model", "created": 0, "owned_by": "agentexec"}
                ],
            }
        )

    async def _handle_health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the default responder forever (``python -m agentexec.testing.openai_server``).

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when ``None``.
    """
    parser = argparse.ArgumentParser(
        description="Scripted OpenAI-compatible server (Responses + Chat Completions)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8399, help="port (default 8399, 0 = any)")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="simulated model latency per request, seconds"
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    server = ScriptedOpenAIServer(
        host=args.host, port=args.port, delay=args.delay, log_level=args.log_level
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
