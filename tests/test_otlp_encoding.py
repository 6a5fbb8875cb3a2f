"""The hand-written OTLP encoder (issue 20) writes the SDK encoder's bytes exactly, for the
spans of real requests and for every attribute value type."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._internal import _encode_value
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from router.otlp_encoding import Encoder, any_value
from router.span_shipping import compact, rebuild
from router.state import SERVICES
from tests.fakes.script import Status
from tests.fusion_setup import fusion_sidecar

QUESTION: Any = [{"role": "user", "content": "When was the bridge built?"}]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

scalars = (
    st.none()
    | st.booleans()
    | st.text(max_size=20)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=10)
)
values = scalars | st.tuples(scalars, scalars)


@settings(max_examples=300, deadline=None)
@given(values)
def test_any_value_is_the_sdk_encoding(value: Any) -> None:
    assert any_value(value) == _encode_value(value).SerializeToString()


async def _spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    async with fusion_sidecar(span_exporter=exporter) as s:
        s.wall.script("up-m2", Status(503))
        await s.openai().chat.completions.create(
            model="fusion/trio", messages=QUESTION, extra_headers={"traceparent": TRACEPARENT}
        )
        await s.openai().chat.completions.create(model="m1", messages=QUESTION)
        s.app[SERVICES].telemetry.force_flush()
    return list(exporter.get_finished_spans())


async def test_real_spans_encode_to_the_sdk_bytes() -> None:
    spans = await _spans()
    assert len(spans) > 10
    resource = Resource.create({"service.name": "fusion-router", "service.version": "9"})
    scope = InstrumentationScope("router", "9")
    items = [compact(span) for span in spans]
    sdk = encode_spans([rebuild(i, resource, scope) for i in items]).SerializeToString()
    encoder = Encoder(dict(resource.attributes), "router", "9")
    assert encoder.request(items) == sdk
    assert encoder.request(items) == sdk  # the second time from the remembered attributes


@pytest.mark.parametrize("status", [(0, None), (1, None), (2, "ValueError: bad")])
def test_statuses_and_remote_parents_encode_as_the_sdk_does(status: tuple[int, str | None]) -> None:
    resource = Resource.create({"service.name": "x"})
    scope = InstrumentationScope("router", None)
    item = (
        "name",
        5,
        6,
        1,
        "k=v",
        (7, True, 1),
        2,
        10,
        20,
        status[0],
        status[1],
        (("a", 1), ("b", None), ("c", ("x", "y"))),
        (("e", 15, (("n", 0.0),)),),
        (),
    )
    sdk = encode_spans([rebuild(item, resource, scope)]).SerializeToString()
    assert Encoder(dict(resource.attributes), "router", None).request([item]) == sdk


keys = st.sampled_from(["a", "b", "gen_ai.request.model", "http.response.status_code"])
attribute_lists = st.lists(st.tuples(keys, values), max_size=6).map(
    lambda kv: tuple(dict(kv).items())
)
ids_64 = st.integers(min_value=1, max_value=2**64 - 1)
times = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def spans(draw: Any) -> tuple[Any, ...]:
    """A flattened span with any of what a span can hold (`span_shipping.Compact`)."""
    parent = draw(st.none() | st.tuples(ids_64, st.booleans(), st.sampled_from([0, 1])))
    events = draw(st.lists(st.tuples(st.text(max_size=8), times, attribute_lists), max_size=2))
    links = draw(
        st.lists(
            st.tuples(st.integers(1, 2**128 - 1), ids_64, st.just(1), attribute_lists),
            max_size=2,
        )
    )
    code = draw(st.integers(0, 2))  # a description only with ERROR (2), as `Status` keeps it
    return (
        draw(st.text(max_size=30)),
        draw(st.integers(1, 2**128 - 1)),
        draw(ids_64),
        1,
        draw(st.sampled_from(["", "k=v", "a=1,b=2"])),
        parent,
        draw(st.integers(0, 4)),
        draw(times),
        draw(times),
        code,
        draw(st.none() | st.text(max_size=10)) if code == 2 else None,
        draw(attribute_lists),
        tuple(events),
        tuple(links),
    )


RESOURCE = Resource.create({"service.name": "x"})
ENCODER = Encoder(dict(RESOURCE.attributes), "router", "9")  # one: what it remembers is reused


@settings(max_examples=400, deadline=None)
@given(st.lists(spans(), min_size=1, max_size=3))
def test_any_span_encodes_to_the_sdk_bytes(items: list[tuple[Any, ...]]) -> None:
    scope = InstrumentationScope("router", "9")
    sdk = encode_spans([rebuild(i, RESOURCE, scope) for i in items]).SerializeToString()
    encoder = Encoder(dict(RESOURCE.attributes), "router", "9")
    assert encoder.request(items) == sdk
    assert ENCODER.request(items) == sdk  # with all it remembered from the examples before
