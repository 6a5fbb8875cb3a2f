"""The plain sampling rule decides as the SDK's sampler for the same variables (issue 20).

`router.sampling.SamplingRule` replaces a call of the SDK's sampler on every span the recorder
starts; this is the property that makes that safe: for every sampler name offered, any trace
id and any parent (none, remote or local, sampled or not, with or without a trace state), the
rule and the SDK's sampler agree on the decision, and the recorder's span carries the flags and
trace state the SDK's tracer gives it.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanContext, TraceFlags, TraceState

from router.sampling import sampling_rule
from router.span_recorder import SpanRecorder
from router.tracing import sampler_from

NAMES = [
    {},
    {"OTEL_TRACES_SAMPLER": "always_on"},
    {"OTEL_TRACES_SAMPLER": "always_off"},
    {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
    {"OTEL_TRACES_SAMPLER": "parentbased_always_off"},
    *(
        {"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": ratio}
        for name in ("traceidratio", "parentbased_traceidratio")
        for ratio in ("0", "0.1", "0.5", "0.3333", "1", "lots", "-2")
    ),
    {"OTEL_TRACES_SAMPLER": "no_such_sampler"},
]

ids_128 = st.integers(min_value=1, max_value=2**128 - 1)
ids_64 = st.integers(min_value=1, max_value=2**64 - 1)


@st.composite
def parents(draw: Any) -> SpanContext | None:
    """No parent, or a valid one: remote or local, sampled or not, random id flag or not."""
    if draw(st.booleans()):
        return None
    flags = draw(st.sampled_from([0, TraceFlags.SAMPLED, 0x02, TraceFlags.SAMPLED | 0x02]))
    state = draw(st.sampled_from([TraceState(), TraceState([("vendor", "v1")])]))
    return SpanContext(draw(ids_128), draw(ids_64), draw(st.booleans()), TraceFlags(flags), state)


@pytest.mark.parametrize("environ", NAMES, ids=lambda e: "-".join(e.values()) or "unset")
@settings(max_examples=150, deadline=None)
@given(trace_id=ids_128, parent=parents())
def test_the_rule_decides_as_the_sdk_sampler(
    environ: dict[str, str], trace_id: int, parent: SpanContext | None
) -> None:
    sdk = sampler_from(environ)
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
    effective_id = parent.trace_id if parent else trace_id
    result = sdk.should_sample(context, effective_id, "span")
    sampled = result.decision.is_sampled()  # type: ignore[no-untyped-call]
    assert result.decision.is_recording() == sampled  # type: ignore[no-untyped-call]
    assert sampling_rule(environ).decider().sampled(parent, effective_id) == sampled
    assert result.trace_state == (parent.trace_state if parent else None)


def _assert_alike(lean_span: trace.Span, sdk_span: trace.Span) -> None:
    """The same trace id, flags, trace state, remoteness and recording."""
    want, got = sdk_span.get_span_context(), lean_span.get_span_context()
    assert (got.trace_id, got.trace_flags, got.trace_state, got.is_remote) == (
        want.trace_id,
        want.trace_flags,
        want.trace_state,
        want.is_remote,
    )
    assert lean_span.is_recording() == sdk_span.is_recording()


@pytest.mark.parametrize("environ", NAMES, ids=lambda e: "-".join(e.values()) or "unset")
@settings(max_examples=60, deadline=None)
@given(parent=parents().filter(lambda p: p is not None))
def test_the_recorder_gives_a_child_what_the_sdk_tracer_gives(
    environ: dict[str, str], parent: SpanContext
) -> None:
    """Under the same parent: the same trace id, flags, trace state and recording."""
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    sdk_span = (
        TracerProvider(sampler=sampler_from(environ)).get_tracer("t").start_span("x", context)
    )
    lean_span = SpanRecorder(sampling_rule(environ), lambda _s: None).start_span("x", context)
    _assert_alike(lean_span, sdk_span)
    sdk_span.end()
    lean_span.end()


@pytest.mark.parametrize("environ", NAMES, ids=lambda e: "-".join(e.values()) or "unset")
@settings(max_examples=40, deadline=None)
@given(parent=parents().filter(lambda p: p is not None))
def test_a_grandchild_under_a_recorded_span_is_what_the_sdk_gives(
    environ: dict[str, str], parent: SpanContext
) -> None:
    """Under a span the recorder itself recorded (read directly, not through its context):
    the same trace id, flags, trace state, recording and parent as the SDK's tracer gives a
    child of its own recorded span, under the same remote parent."""
    remote = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    ended: list[Any] = []
    sdk = TracerProvider(sampler=sampler_from(environ)).get_tracer("t")
    lean = SpanRecorder(sampling_rule(environ), ended.append)
    sdk_child, lean_child = sdk.start_span("c", remote), lean.start_span("c", remote)
    if not sdk_child.is_recording():  # (the child is then not a recorded span: nothing new)
        assert not lean_child.is_recording()
        return
    sdk_grandchild = sdk.start_span("g", trace.set_span_in_context(sdk_child))
    lean_grandchild = lean.start_span("g", trace.set_span_in_context(lean_child))
    _assert_alike(lean_grandchild, sdk_grandchild)
    for span in (sdk_grandchild, lean_grandchild, sdk_child, lean_child):
        span.end()
    flattened = {item[0]: item for item in ended}  # (what the recorder exports)
    assert flattened["c"][4] == parent.trace_state.to_header()
    if "g" in flattened:
        sdk_flags = int(sdk_child.get_span_context().trace_flags)
        lean_id = lean_child.get_span_context().span_id
        assert flattened["g"][5] == (lean_id, False, sdk_flags)
        assert flattened["g"][4] == flattened["c"][4]


def test_roots_are_sampled_at_the_ratio() -> None:
    """Without a parent, the share of recorded roots follows the ratio (10%: 1000 roots give
    between 6% and 14% unless four standard deviations off)."""
    recorder = SpanRecorder(
        sampling_rule(
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
        ),
        lambda _s: None,
    )
    recorded = 0
    for _ in range(1000):
        span = recorder.start_span("root", context=trace.set_span_in_context(trace.INVALID_SPAN))
        recorded += span.is_recording()
        span.end()
    assert 60 <= recorded <= 140


@pytest.mark.parametrize("ratio", ["0.0", "0.1", "0.5", "1.0"])
def test_a_decided_root_is_one_the_rule_samples_at_the_ratio(ratio: str) -> None:
    """`sampled_root` draws the deciding low 64 bits first: every id it gives is nonzero and
    one the rule (and so the SDK) samples as a root, and it gives one for about `ratio` of
    its calls (10%: 2000 draws give 140-260 unless four standard deviations off), the high
    bits varying."""
    environ = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": ratio}
    rule, sdk = sampling_rule(environ), sampler_from(environ)
    recorder = SpanRecorder(rule, lambda _s: None)
    ids = [recorder.sampled_root() for _ in range(2000)]
    sampled = [trace_id for trace_id in ids if trace_id is not None]
    for trace_id in sampled[:50]:
        assert 0 < trace_id < 1 << 128
        assert rule.decider().sampled(None, trace_id)
        assert sdk.should_sample(None, trace_id, "span").decision.is_sampled()  # type: ignore[no-untyped-call]
    expected = 2000 * float(ratio)
    spread = 4 * (2000 * float(ratio) * (1 - float(ratio))) ** 0.5
    assert expected - spread <= len(sampled) <= expected + spread
    if len(sampled) > 1:
        assert len({trace_id >> 64 for trace_id in sampled}) > 1


@pytest.mark.parametrize("ratio", ["0.1", "0.5", "0.3333"])
def test_the_rule_agrees_at_the_bound(ratio: str) -> None:
    """Trace ids whose low 64 bits sit just below, at and just above the bound."""
    environ = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": ratio}
    rule, sdk = sampling_rule(environ), sampler_from(environ)
    decisions = []
    for low in (rule.bound - 1, rule.bound, rule.bound + 1):
        trace_id = (0xABC << 64) | low
        sampled = sdk.should_sample(None, trace_id, "span").decision.is_sampled()  # type: ignore[no-untyped-call]
        assert rule.decider().sampled(None, trace_id) == sampled
        decisions.append(sampled)
    assert decisions == [True, False, False]
