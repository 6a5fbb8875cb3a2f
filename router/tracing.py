"""OpenTelemetry setup from the standard `OTEL_*` variables, and the small span helpers we use.

Spans are exported only when an OTLP endpoint is configured. When nothing is
exported, a request makes no span at all unless it arrives with a W3C
`traceparent`: then its SERVER span (unsampled, never recorded) carries the
caller's trace id into the log lines. With OTLP, spans are recorded lean
(`router.span_recorder`), encoded cheaply in small chunks between requests and
sent by a thread, or all of it in a process of its own (`router.span_shipping`),
so neither encoding nor an unreachable collector holds up a request. Prompt and
completion text are never recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from router import __version__, semconv
from router.span_shipping import Dropped, SpanSender, SpanShipper

if TYPE_CHECKING:
    from router.span_recorder import SpanRecorder

_PROPAGATOR = TraceContextTextMapPropagator()

# True in a request's context (each request runs in a task of its own, on a copy of its
# connection's) once `request_span` gave it a span: every span of ours is made under that one,
# so where this is False there is no current span to look up, and code on the path of every
# request (a CLIENT span per upstream attempt) skips asking the OpenTelemetry context.
REQUEST_SPANNED: ContextVar[bool] = ContextVar("fusion_router_request_spanned", default=False)


@dataclass
class Telemetry:
    """The app's tracer and how to shut it down."""

    tracer: trace.Tracer
    provider: TracerProvider | None
    exporting: bool
    shipper: SpanSender | SpanShipper | None = None  # OTLP: where ended spans go
    # whether a request that is not sampled, and came without a traceparent, still gets a
    # (non-recording) span: only when a provider is sent trace context (it must learn the
    # decision) or the SDK's own tracer is in use (tests, the demo)
    unsampled_roots: bool = True
    # the lean recorder, when it is the tracer (OTLP export); the span modules (recorder,
    # sampling rule, encoder) are imported only then, so an untraced sidecar never loads them
    recorder: SpanRecorder | None = None

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
        if self.shipper is not None:
            self.shipper.shutdown()

    def force_flush(self, timeout_ms: int = 5000) -> None:
        if self.provider is not None:
            self.provider.force_flush(timeout_ms)
        if self.shipper is not None:
            self.shipper.force_flush(timeout_ms)


def _wants_export(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def sampler_from(environ: Mapping[str, str]) -> Sampler:
    """The SDK's sampler `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` name
    (`sampling.sampling_rule`: unset or unknown is `parentbased_always_on`)."""
    from router.sampling import sampling_rule

    return sampling_rule(environ).sdk()


def build_telemetry(
    environ: Mapping[str, str],
    exporter: SpanExporter | None = None,
    on_dropped: Dropped | None = None,
    *,
    forwarding: bool = False,
) -> Telemetry:
    """A tracer provider of our own (never the global one); OTLP/HTTP export when configured,
    spans that never reach the collector reported to `on_dropped` (reason, count).
    `forwarding`: some provider is sent trace context (`Telemetry.unsampled_roots`)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Telemetry(trace.NoOpTracer(), None, exporting=False)
    resource = Resource.create(
        {
            "service.name": environ.get("OTEL_SERVICE_NAME", "fusion-router"),
            "service.version": __version__,
        }
    )
    if exporter is None and _wants_export(environ):
        # OTLP: spans recorded lean (`span_recorder`), encoded on the loop and sent by a thread
        # or, with ROUTER_SPAN_EXPORT=process, all in a process of their own (`span_shipping`)
        otel = {k: v for k, v in environ.items() if k.startswith(("OTEL_", "ROUTER_LOG"))}
        process = environ.get("ROUTER_SPAN_EXPORT", "thread").strip().lower() == "process"
        kind = SpanShipper if process else SpanSender
        from router.sampling import sampling_rule
        from router.span_recorder import SpanRecorder

        shipper = kind(otel, resource, ("router", __version__), on_dropped)
        recorder = SpanRecorder(sampling_rule(environ), shipper.ship)
        return Telemetry(
            recorder,
            None,
            exporting=True,
            shipper=shipper,
            unsampled_roots=forwarding,
            recorder=recorder,
        )
    # An exporter given in-process (tests, the demo): the SDK's spans and batch processor.
    # Not exporting: spans still carry ids (and an inbound trace id) into the logs, but are not
    # recorded, which keeps the hot path cheap.
    provider = TracerProvider(
        resource=resource, sampler=sampler_from(environ) if exporter is not None else ALWAYS_OFF
    )
    exporting = False
    if exporter is not None:
        provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=2048, schedule_delay_millis=500)
        )
        exporting = True
    return Telemetry(provider.get_tracer("router", __version__), provider, exporting)


CONTENT_CAPTURE_VALUES = frozenset({"SPAN_ONLY", "SPAN_AND_EVENT"})


def content_capture(config_flag: bool, environ: Mapping[str, str]) -> bool:
    """Prompts and completions are recorded only when the operator opts in twice."""
    value = (
        environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "NO_CONTENT")
        .strip()
        .upper()
    )
    return config_flag and value in CONTENT_CAPTURE_VALUES


def extract_context(headers: Mapping[str, str]) -> Any:
    """The parent context from an inbound `traceparent` (W3C trace context)."""
    return _PROPAGATOR.extract(headers)


def inject_headers() -> tuple[tuple[str, str], ...]:
    """`traceparent`/`tracestate` for the current span, for providers allowed to see them."""
    carrier: MutableMapping[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return tuple(carrier.items())


def add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current span's trace and span ids on every line."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


_NO_PARENT = context_api.Context()  # (contexts are immutable)


def request_span(
    telemetry: Telemetry, headers: Mapping[str, str], method: str, route: str, request_id: str
) -> AbstractContextManager[trace.Span] | None:
    """An inbound request's SERVER span (`{method} {route}`), to be made current: parented on
    its `traceparent` if it has a valid one. None for a request that is not sampled and has no
    valid `traceparent`: it gets no span at all (its log lines no trace id: it would name a
    trace no collector has), unless a provider is sent trace context
    (`Telemetry.unsampled_roots`); the sampling decision is the one a span would make, taken
    before anything is built."""
    if "traceparent" in headers:
        parent = extract_context(headers)
        parented = trace.get_current_span(parent).get_span_context().is_valid
    else:
        parent, parented = _NO_PARENT, False
    recorder = None if telemetry.unsampled_roots or parented else telemetry.recorder
    trace_id = recorder.sampled_root() if recorder is not None else None
    if recorder is not None and trace_id is None:
        return None
    name = f"{method} {route}"
    attributes = {
        semconv.HTTP_REQUEST_METHOD: method,
        semconv.HTTP_ROUTE: route,
        semconv.ROUTER_REQUEST_ID: request_id,
    }
    if recorder is not None:  # a root it has decided to sample, in that trace
        return recorder.start_as_current_span(
            name, _NO_PARENT, trace.SpanKind.SERVER, attributes, trace_id=trace_id
        )
    return telemetry.tracer.start_as_current_span(
        name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
    )


def child_span(
    tracer: trace.Tracer,
    name: str,
    *,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> AbstractContextManager[trace.Span]:
    """A span under the current one, made current; none at all under a span that is not
    recorded (an unsampled request's: every sampler we offer decides a trace's children as its
    root), whose non-recording span is yielded instead. The tree of a sampled request is the
    same either way."""
    parent = trace.get_current_span()
    if not parent.is_recording():
        return nullcontext(parent)
    return tracer.start_as_current_span(name, kind=kind, attributes=attributes)


def current_attributes(attributes: Mapping[str, Any]) -> None:
    """Attributes on whatever span is current (the request's, in a handler)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(dict(attributes))


def current_event(name: str, attributes: Mapping[str, Any]) -> None:
    """An event on whatever span is current (breaker rejections, policy decisions)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(name, dict(attributes))
