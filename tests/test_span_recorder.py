"""The lean span recorder (issue 20) records what the SDK records: the same operations through
both tracers give the same spans (names, kinds, parents, attributes, events, statuses,
exceptions, sampling), and a whole fusion request gives the same tree through OTLP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import SpanKind, Status, StatusCode

from router.sampling import sampling_rule
from router.span_recorder import SpanRecorder
from router.span_shipping import Compact, compact
from router.state import SERVICES
from router.tracing import extract_context, sampler_from
from tests.fakes.script import Status as Fail
from tests.fusion_setup import fusion_sidecar
from tests.helpers import otlp_receiver, spans_of

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _script(tracer: trace.Tracer) -> None:
    """Everything the sidecar does with spans, and the SDK's edge cases."""
    parent = extract_context({"traceparent": TRACEPARENT})
    with tracer.start_as_current_span(
        "POST /v1/chat/completions",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": "POST", "router.request_id": "r1"},
    ) as server:
        server.set_attribute("http.response.status_code", 200)
        server.set_attribute("unset", None)  # the SDK keeps a None value (encoded empty)
        server.set_attribute("listed", ["a", "b"])  # and keeps a list as a tuple
        server.add_event("router.policy.decision", {"router.policy.rule_id": "r", "n": 3})
        with tracer.start_as_current_span(
            "chat up-a", kind=SpanKind.CLIENT, attributes={"router.attempt": 1}
        ) as client:
            client.set_attributes({"gen_ai.usage.input_tokens": 11, "ratio": 0.5, "ok": True})
            client.set_status(Status(StatusCode.ERROR, "boom"))
            client.set_status(StatusCode.UNSET)  # ignored
        with pytest.raises(ValueError), tracer.start_as_current_span("fails"):
            raise ValueError("bad value")
        with tracer.start_as_current_span("ok then error") as settled:
            settled.set_status(StatusCode.OK)
            settled.set_status(StatusCode.ERROR, "ignored after OK")
        settled.set_attribute("after.end", 1)  # ignored: the span ended
    with tracer.start_as_current_span("root", attributes={"a": "b"}) as root:
        root.update_name("renamed root")


def _comparable(item: Compact) -> tuple[Any, ...]:
    """A flattened span without what differs by run: ids, times and the stack trace's text."""
    (name, _tid, _sid, flags, state, parent, kind, _s, _e, code, desc, attrs, events, links) = item
    events = tuple(
        (n, tuple((k, v) for k, v in a if k != "exception.stacktrace")) for n, _t, a in events
    )
    return (name, flags, state, parent is not None, kind, code, desc, attrs, events, links)


def _sdk_spans(sampler: Sampler) -> list[Compact]:
    ended: list[ReadableSpan] = []

    class Keep(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            ended.append(span)

    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(Keep())
    _script(provider.get_tracer("router"))
    return [compact(s) for s in ended]


def _recorded(environ: dict[str, str]) -> list[Compact]:
    ended: list[Compact] = []
    _script(SpanRecorder(sampling_rule(environ), ended.append))
    return ended


@pytest.mark.parametrize(
    "environ",
    [{}, {"OTEL_TRACES_SAMPLER": "always_off"}, {"OTEL_TRACES_SAMPLER": "parentbased_always_off"}],
)
def test_the_recorder_records_what_the_sdk_records(environ: dict[str, str]) -> None:
    token = context_api.attach(context_api.Context())
    try:
        sdk, lean = _sdk_spans(sampler_from(environ)), _recorded(environ)
    finally:
        context_api.detach(token)
    assert [_comparable(s) for s in lean] == [_comparable(s) for s in sdk]
    if not environ:
        assert len(lean) == 5
        assert any(e[0] == "exception" for s in lean for e in s[12])


def test_a_ratio_sampler_decides_as_the_sdk_does_by_trace_id() -> None:
    """The same trace ids, the same decisions as the SDK's sampler."""
    environ = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    sampler = sampler_from(environ)
    recorder = SpanRecorder(sampling_rule(environ), lambda _s: None)
    decisions = []
    for trace_id in (1, 2**63, 2**64 - 1, 12345 << 70):
        parent = trace.NonRecordingSpan(
            trace.SpanContext(trace_id, 7, True, trace.TraceFlags(trace.TraceFlags.SAMPLED))
        )
        context = trace.set_span_in_context(parent)
        span = recorder.start_span("x", context=context)
        expected = sampler.should_sample(context, trace_id, "x").decision.is_sampled()  # type: ignore[no-untyped-call]
        decisions.append((span.is_recording(), expected))
        span.end()
    assert all(got == want for got, want in decisions)
    assert {got for got, _ in decisions} == {True, False}


def test_a_decided_root_is_a_sampled_root_in_its_trace_whatever_is_current() -> None:
    """`sampled_root`'s trace id makes a root there: sampled, with the SDK's flags (sampled,
    random trace id) and no parent, even under a current span (the request's SERVER span is
    built with no parent); without one, the recorder decides and parents as before."""
    ended: list[Compact] = []
    recorder = SpanRecorder(sampling_rule({}), ended.append)
    trace_id = recorder.sampled_root()
    assert trace_id is not None
    with recorder.start_as_current_span("outer") as outer:
        root = recorder.start_span("root", kind=SpanKind.SERVER, trace_id=trace_id)
        child = recorder.start_span("child")
    context = root.get_span_context()
    assert root.is_recording()
    assert context.trace_id == trace_id
    assert context.trace_flags == trace.TraceFlags.SAMPLED | trace.TraceFlags.RANDOM_TRACE_ID
    assert context.trace_state == trace.TraceState()
    assert child.get_span_context().trace_id == outer.get_span_context().trace_id != trace_id
    root.end()
    child.end()
    by_name = {span[0]: span for span in ended}
    assert by_name["root"][5] is None  # no parent
    assert by_name["child"][5] == (outer.get_span_context().span_id, False, 0x03)


async def _ask_fusion(environ: dict[str, str] | None, exporter: Any = None) -> None:
    """One fusion request with a failed seat, parented on TRACEPARENT, its spans flushed."""
    async with fusion_sidecar(environ=environ, span_exporter=exporter) as s:
        s.wall.script("up-m2", Fail(503))
        await s.openai().chat.completions.create(
            model="fusion/trio",
            messages=[{"role": "user", "content": "When?"}],
            extra_headers={"traceparent": TRACEPARENT, "X-Request-Id": "req-1"},
        )
        await asyncio.to_thread(s.app[SERVICES].telemetry.force_flush)


async def test_a_fusion_request_gives_the_same_tree_through_otlp() -> None:
    """The SDK's in-process spans and the recorder's, exported through OTLP, for the same
    fusion request: the same span names, kinds, attribute keys and event names."""
    memory = InMemorySpanExporter()
    await _ask_fusion(None, memory)
    async with otlp_receiver() as (url, requests):
        await _ask_fusion({"OTEL_EXPORTER_OTLP_ENDPOINT": url})
    received = spans_of(requests)
    kinds = {k: v for v, k in enumerate(("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"))}
    sdk = sorted(
        (
            s.name,
            kinds[s.kind.name],
            tuple(sorted(s.attributes or {})),
            tuple(e.name for e in s.events),
        )
        for s in memory.get_finished_spans()
    )
    lean = sorted(
        (
            s.name,
            s.kind - 1,
            tuple(sorted(kv.key for kv in s.attributes)),
            tuple(e.name for e in s.events),
        )
        for s in received
    )
    assert lean == sdk
    assert len(lean) >= 10
