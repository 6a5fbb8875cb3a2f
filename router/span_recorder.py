"""A lean span recorder for OTLP export: the OpenTelemetry API's spans, without the SDK's costs.

The SDK's spans guard every attribute behind a lock and validate every value through abstract
base class checks (`BoundedAttributes`): with every span exported, that is most of what tracing
costs a request (about 25 attribute writes a routed request). Every attribute the sidecar
sets is already a plain `str`, `int`, `float`, `bool` or a tuple of them, and each span lives
on one task of the event loop, so `RecordedSpan` keeps a plain dict and list. It is the API's
`Span` (so `trace.get_current_span`, `use_span`, log correlation and propagation work as
before); sampling decides as the SDK's sampler does (`router.sampling`), ids are drawn as the
SDK draws them (an unsampled root's only its deciding low 64 bits), exceptions and statuses
are recorded by the SDK's rules, and an ended span is shipped as `span_shipping.compact` would
flatten the SDK's (`tests/test_span_recorder.py` records the same requests both ways and
compares every span).
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable, Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, TraceState
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util.types import Attributes

from router import semconv
from router.sampling import SamplingRule
from router.span_shipping import Compact

_UNSET, _OK = StatusCode.UNSET.value, StatusCode.OK.value
_SAMPLED_ROOT = TraceFlags.RANDOM_TRACE_ID | TraceFlags.SAMPLED


def _cleaned(attributes: Attributes) -> dict[str, Any]:
    """Attribute values as the SDK keeps them: a list becomes a tuple, None stays None."""
    if not attributes:
        return {}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in attributes.items()}


class RecordedSpan(trace.Span):
    """A sampled span: name, ids, kind, times, attributes, events, links and status."""

    __slots__ = (
        "_attributes",
        "_context",
        "_end",
        "_events",
        "_flags",
        "_kind",
        "_links",
        "_name",
        "_on_end",
        "_parent",
        "_span_id",
        "_start",
        "_state",
        "_status_code",
        "_status_description",
        "_trace_id",
    )

    def __init__(
        self,
        name: str,
        ids: tuple[int, int, int, TraceState | None],
        parent: tuple[int, bool, int] | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: Sequence[Link],
        start: int,
        on_end: Callable[[Compact], None],
    ) -> None:
        """`ids`: trace id, span id, trace flags and trace state (None: the empty one);
        `parent`: the parent's span id, whether it is remote, and its trace flags."""
        self._name, self._parent = name, parent
        self._trace_id, self._span_id, self._flags, self._state = ids
        self._context: SpanContext | None = None  # built when first asked for
        self._kind = kind.value
        self._attributes = attributes
        self._links = tuple(links)
        self._events: list[tuple[str, int, tuple[tuple[str, Any], ...]]] = []
        self._status_code: int = _UNSET
        self._status_description: str | None = None
        self._start, self._end = start, 0
        self._on_end = on_end

    def get_span_context(self) -> SpanContext:
        context = self._context
        if context is None:
            context = self._context = SpanContext(
                self._trace_id, self._span_id, False, TraceFlags(self._flags), self._state
            )
        return context

    def child_ids(self) -> tuple[int, int, TraceState | None]:
        """What a child takes from this span: its trace id, the random-trace-id flag (the
        only flag a child inherits; sampled is decided anew) and trace state."""
        return self._trace_id, self._flags & TraceFlags.RANDOM_TRACE_ID, self._state

    def as_parent(self) -> tuple[int, bool, int]:
        """This span as a child's parent (`compact`'s parent field): a local span."""
        return self._span_id, False, self._flags

    def is_recording(self) -> bool:
        return not self._end

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if not self._end:
            self._attributes.update(_cleaned(attributes))

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._end:  # (as `_cleaned` keeps a value)
            self._attributes[key] = tuple(value) if isinstance(value, list) else value

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if not self._end:
            items = tuple(_cleaned(attributes).items())
            self._events.append((name, timestamp if timestamp is not None else time_ns(), items))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if not self._end and context.is_valid:
            self._links += (Link(context, _cleaned(attributes)),)

    def update_name(self, name: str) -> None:
        if not self._end:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """The SDK's rule: OK is final, UNSET is ignored (and `Status` keeps a description
        only with ERROR)."""
        if self._end or self._status_code == _OK:
            return
        if not isinstance(status, Status):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status_code = status.status_code.value
            self._status_description = status.description

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An `exception` event with the SDK's attributes."""
        module, qualname = type(exception).__module__, type(exception).__qualname__
        recorded: dict[str, Any] = {
            semconv.EXCEPTION_TYPE: f"{module}.{qualname}"
            if module and module != "builtins"
            else qualname,
            semconv.EXCEPTION_MESSAGE: str(exception),
            semconv.EXCEPTION_STACKTRACE: "".join(traceback.format_exception(exception)),
            semconv.EXCEPTION_ESCAPED: str(escaped),
        }
        recorded.update(attributes or {})
        self.add_event(semconv.EVENT_EXCEPTION, recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end:
            return
        self._end = end_time if end_time is not None else time_ns()
        self._on_end(self.compact())

    def compact(self) -> Compact:
        """This span as `span_shipping.compact` flattens an SDK span."""
        state = self._state
        return (
            self._name,
            self._trace_id,
            self._span_id,
            self._flags,
            "" if state is None or state is DEFAULT_TRACE_STATE else state.to_header(),
            self._parent,
            self._kind,
            self._start,
            self._end,
            self._status_code,
            self._status_description,
            tuple(self._attributes.items()),
            tuple(self._events),
            tuple(
                (
                    link.context.trace_id,
                    link.context.span_id,
                    int(link.context.trace_flags),
                    tuple((link.attributes or {}).items()),
                )
                for link in self._links
            )
            if self._links
            else (),
        )


def _span_id() -> int:
    span_id = random.getrandbits(64)
    while not span_id:
        span_id = random.getrandbits(64)
    return span_id


def _trace_id() -> int:
    trace_id = random.getrandbits(128)
    while not trace_id:
        trace_id = random.getrandbits(128)
    return trace_id


class SpanRecorder(trace.Tracer):
    """The tracer of `RecordedSpan`s: the sampling rule's decision (`router.sampling`), then a
    plain span (or the API's non-recording one); each ended span to `on_end`."""

    def __init__(self, rule: SamplingRule, on_end: Callable[[Compact], None]) -> None:
        self._sampled, self._on_end = rule.decider().sampled, on_end
        self._root_bound = rule.bound  # a root is sampled when its id's low 64 bits are below

    def sampled_root(self) -> int | None:
        """A new trace id if a root span in it is sampled, else None: the decision
        `start_span` makes for a span without a parent, made before building anything (pass
        the id on as `trace_id`). The low 64 bits, which alone decide, are drawn first and
        the high ones only for a sampled root: an unsampled request costs one small draw."""
        low = random.getrandbits(64)
        if low >= self._root_bound:
            return None
        trace_id = random.getrandbits(64) << 64 | low
        while not trace_id:  # (an all-zero id is invalid: draw the high bits again)
            trace_id = random.getrandbits(64) << 64
        return trace_id

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        trace_id: int | None = None,
    ) -> trace.Span:
        """The API's `start_span`; `trace_id` (from `sampled_root`, so decided already) makes
        a sampled root in that trace, whatever `context` holds."""
        parent: tuple[int, bool, int] | None = None
        ids: tuple[int, int, int, TraceState | None]
        if trace_id is not None:
            ids = (trace_id, _span_id(), _SAMPLED_ROOT, None)
        else:
            current_span = trace.get_current_span(context)
            if isinstance(current_span, RecordedSpan):
                # ours, read directly. Sampled, so its child is too: a parent-based rule
                # follows it, and a ratio alone decides by the trace id it decided by
                trace_id, flags, state = current_span.child_ids()
                sampled = True
                parent = current_span.as_parent()
            else:
                current = current_span.get_span_context()
                if current.is_valid:
                    trace_id, state = current.trace_id, current.trace_state
                    flags = TraceFlags.RANDOM_TRACE_ID if current.trace_flags.random_trace_id else 0
                    sampled = self._sampled(current, trace_id)
                    parent = (current.span_id, current.is_remote, int(current.trace_flags))
                else:
                    trace_id, state, flags = _trace_id(), None, TraceFlags.RANDOM_TRACE_ID
                    sampled = self._sampled(None, trace_id)
            if not sampled:
                return trace.NonRecordingSpan(
                    SpanContext(trace_id, _span_id(), False, TraceFlags(flags), state)
                )
            ids = (trace_id, _span_id(), flags | TraceFlags.SAMPLED, state)
        return RecordedSpan(
            name,
            ids,
            parent,
            kind,
            _cleaned(attributes),
            links or (),
            start_time if start_time is not None else time_ns(),
            self._on_end,
        )

    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
        trace_id: int | None = None,
    ) -> Current:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, trace_id=trace_id
        )
        return Current(span, end_on_exit, record_exception, set_status_on_exception)


class Current:
    """`span` made the current span for a `with` block, as the API's `use_span` does it
    (exceptions recorded and the status set by the same rules), in one object instead of a
    generator under a generator."""

    __slots__ = ("_end", "_record", "_set_status", "_token", "span")

    def __init__(
        self, span: trace.Span, end_on_exit: bool, record_exception: bool, set_status: bool
    ) -> None:
        self.span, self._end = span, end_on_exit
        self._record, self._set_status = record_exception, set_status
        self._token: object = None

    def __enter__(self) -> trace.Span:
        self._token = context_api.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, kind: Any, error: BaseException | None, _tb: Any) -> None:
        context_api.detach(self._token)  # type: ignore[arg-type]
        span = self.span
        if isinstance(error, Exception) and span.is_recording():
            if self._record:
                span.record_exception(error)
            if self._set_status:
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        if self._end:
            span.end()
