"""OpenTelemetry spans of a run: enqueue → run → turn → model call and tool call.

Off unless configured, and free when off. With the `otel` extra installed
(`opentelemetry-sdk`, the OTLP exporter and `opentelemetry-instrumentation-celery`):

- `configure()` (called by every agentexec worker at start; call it in your web app too, or
  set up a tracer provider of your own) installs a tracer provider exporting over OTLP when
  `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (or
  `OTEL_TRACES_EXPORTER=console`), and instruments Celery with
  `opentelemetry-instrumentation-celery`: its `apply_async/<task>` and `run/<task>` spans,
  and the W3C trace context carried in each task's message headers.
- Our spans sit on top: `agentexec.enqueue` in the caller (so a web request's trace goes on
  into the worker), `agentexec.run` around the agent's coroutine on the worker's event loop,
  and within it one `agentexec.turn` per model call, with its `agentexec.model` call and the
  `agentexec.tool` calls that follow it.

A tracer provider your own code installs is used as it is. Without one, every function here
returns at once: no span is made, no context is copied.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import ProxyTracerProvider, Span, SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - opentelemetry-api comes with the Agents SDK's deps
    trace = None  # type: ignore[assignment]

_TRACER_NAME = "agentexec"
#: The provider `configure` installed, to flush at shutdown.
_installed: Any = None


def enabled() -> bool:
    """Whether spans are recorded: a real tracer provider is installed (ours or the user's)."""
    if trace is None:
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (ProxyTracerProvider, trace.NoOpTracerProvider))


def configure(service_name: str | None = None) -> bool:
    """Install an OTLP-exporting tracer provider when the environment asks for one (see the
    module's doc), and instrument Celery. Returns whether spans are now recorded.

    Keeps a provider that is already installed. Logs a warning, and records nothing, when
    the environment asks for traces but the `otel` extra is not installed.
    """
    global _installed
    exporter = _exporter_wanted()
    if trace is None or (exporter is None and not enabled()):
        return False
    try:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError:
        logger.warning(
            "OpenTelemetry traces are configured, but the exporter is not installed: "
            "install agentexec[otel] (no spans are recorded)"
        )
        return enabled()
    if not enabled() and exporter is not None:
        name = os.environ.get("OTEL_SERVICE_NAME") or service_name or "agentexec"
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
        span_exporter: SpanExporter
        if exporter == "console":
            span_exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            span_exporter = OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
        trace.set_tracer_provider(provider)
        _installed = provider
    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
    return True


def _exporter_wanted() -> str | None:
    """ "otlp" or "console" when the standard OpenTelemetry variables ask for traces."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    chosen = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if chosen in ("none", "console"):
        return None if chosen == "none" else chosen
    if chosen:
        return "otlp"
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return "otlp" if endpoint else None


def shutdown() -> None:
    """Flush and stop the provider `configure` installed (at worker shutdown)."""
    if _installed is not None:
        _installed.shutdown()


def _tracer() -> Any:
    return trace.get_tracer(_TRACER_NAME)


def current_context() -> Any:
    """The caller's trace context, to carry across threads (None when tracing is off)."""
    return otel_context.get_current() if enabled() else None


@contextmanager
def attached(context: Any) -> Iterator[None]:
    """Make `context` (from `current_context`) current in this thread for the block."""
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def enqueue_span(task: str, agent_id: str, priority: str) -> Iterator[None]:
    """The `agentexec.enqueue` span around one enqueue, in the caller's trace."""
    if not enabled():
        yield
        return
    attributes = {"agentexec.task": task, "agentexec.agent_id": agent_id,
                  "agentexec.priority": priority}  # fmt: skip
    with _tracer().start_as_current_span(
        f"agentexec.enqueue {task}", kind=SpanKind.PRODUCER, attributes=attributes
    ):
        yield


def headers() -> dict[str, str]:
    """The current trace context as message headers (W3C `traceparent`), or none when off."""
    carrier: dict[str, str] = {}
    if enabled():
        propagate.inject(carrier)
    return carrier


def worker_context(request: Any) -> Any:
    """The trace context a delivery runs in: the current one (Celery's instrumentation
    attached the task's `run/<task>` span), else the one its message headers carry, else a
    new trace. None when tracing is off."""
    if not enabled():
        return None
    if trace.get_current_span().get_span_context().is_valid:
        return otel_context.get_current()
    carrier = {key: value for key in ("traceparent", "tracestate")
               if isinstance(value := getattr(request, key, None), str)}  # fmt: skip
    return propagate.extract(carrier)


@contextmanager
def run_span(
    context: Any,
    task: str,
    agent_id: str,
    delivery: int,
    *,
    benign: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """The `agentexec.run` span around the agent's coroutine, on the worker's loop; `context`
    is the delivery's (`worker_context`). Inert when `context` is None. An exception of a
    `benign` type (a run stopping to wait for approval) is not an error."""
    if context is None:
        yield
        return
    attributes = {"agentexec.task": task, "agentexec.agent_id": agent_id,
                  "agentexec.delivery": delivery}  # fmt: skip
    with _tracer().start_as_current_span(
        f"agentexec.run {task}",
        context=context,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except benign as exc:
            span.set_attribute("agentexec.stopped", type(exc).__name__)
            raise
        except BaseException as exc:
            _fail(span, exc)
            raise


class RunSpans:
    """The spans of one `runner.run` in a worker: a turn per model call, the model call, and
    the tool calls of that turn. Made only when tracing is on (`RunSpans.start`)."""

    def __init__(self) -> None:
        self.parent = otel_context.get_current()
        self.turn: Span | None = None
        self.model: Span | None = None
        self.tools: dict[str, Span] = {}

    @classmethod
    def start(cls) -> RunSpans | None:
        return cls() if enabled() else None

    def turn_starts(self, number: int, agent: str) -> None:
        self._end_turn()
        self.turn = _tracer().start_span(
            f"agentexec.turn {number}", context=self.parent,
            attributes={"agentexec.turn": number, "gen_ai.agent.name": agent},
        )  # fmt: skip

    def model_starts(self, model: str) -> None:
        self.model = _tracer().start_span(
            f"agentexec.model {model}",
            context=self._in_turn(),
            kind=SpanKind.CLIENT,
            attributes={"gen_ai.request.model": model, "gen_ai.operation.name": "chat"},
        )

    def model_ends(self, usage: Mapping[str, int]) -> None:
        if self.model is None:
            return
        for name, value in usage.items():
            self.model.set_attribute(f"gen_ai.usage.{name}", value)
        self.model.end()
        self.model = None

    def tool_starts(self, call_id: str, tool: str) -> None:
        self.tools[call_id] = _tracer().start_span(
            f"agentexec.tool {tool}", context=self._in_turn(),
            attributes={"gen_ai.tool.name": tool, "gen_ai.tool.call.id": call_id},
        )  # fmt: skip

    def tool_ends(self, call_id: str) -> None:
        span = self.tools.pop(call_id, None)
        if span is not None:
            span.end()

    def close(self, error: BaseException | None = None) -> None:
        """End every span still open; an error marks them failed."""
        for span in (*self.tools.values(), self.model):
            if span is not None:
                _end(span, error)
        self.tools.clear()
        self.model = None
        self._end_turn(error)

    def _in_turn(self) -> Any:
        """The context of a span within the current turn."""
        return trace.set_span_in_context(self.turn, self.parent) if self.turn else self.parent

    def _end_turn(self, error: BaseException | None = None) -> None:
        if self.turn is not None:
            _end(self.turn, error)
            self.turn = None


def _end(span: Span, error: BaseException | None) -> None:
    if error is not None:
        _fail(span, error)
    span.end()


def _fail(span: Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))
