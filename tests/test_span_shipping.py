"""Span export (issue 20): a flattened span, written down a pipe and rebuilt, encodes to the
SDK's OTLP bytes; and both ways of exporting (a thread of the sidecar, or the exporter
process) deliver every span to a real OTLP/HTTP receiver, at shutdown too."""

from __future__ import annotations

import asyncio
import marshal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from router.span_shipping import compact, rebuild
from router.state import SERVICES
from tests.fakes.script import Status
from tests.fusion_setup import fusion_sidecar
from tests.helpers import Sidecar, otlp_receiver, serve, sidecar, spans_of

QUESTION: Any = [{"role": "user", "content": "When was the bridge built?"}]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_a_shipped_span_encodes_to_the_same_otlp_bytes() -> None:
    """A fusion with a failed seat (error status, events, remote parent, many attributes),
    every span through compact -> marshal -> rebuild: byte-identical OTLP."""
    exporter = InMemorySpanExporter()
    async with fusion_sidecar(span_exporter=exporter) as s:
        s.wall.script("up-m2", Status(503))
        await s.openai().chat.completions.create(
            model="fusion/trio", messages=QUESTION, extra_headers={"traceparent": TRACEPARENT}
        )
        s.app[SERVICES].telemetry.force_flush()
    spans = exporter.get_finished_spans()
    assert len(spans) >= 10
    assert any(span.events for span in spans)
    assert any(not span.status.is_ok for span in spans)
    assert any(span.parent is not None and span.parent.is_remote for span in spans)
    shipped = marshal.loads(marshal.dumps([compact(span) for span in spans]))  # noqa: S302
    rebuilt = [rebuild(item, spans[0].resource, spans[0].instrumentation_scope) for item in shipped]
    assert encode_spans(rebuilt).SerializeToString() == encode_spans(spans).SerializeToString()


@pytest.mark.parametrize("export", ["thread", "process"])
async def test_every_span_is_delivered_even_at_shutdown(export: str) -> None:
    """No flush asked for: closing the app sends what is buffered, and the exporter (a thread,
    or the exporter process) exports it before it ends."""
    received: list[Any] = []

    async def traces(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource_spans in message.resource_spans:
            names = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
            assert names["service.name"] == "fusion-router"
            for scope_spans in resource_spans.scope_spans:
                assert scope_spans.scope.name == "router"
                received.extend(scope_spans.spans)
        return web.Response(status=200)

    collector = web.Application()
    collector.router.add_post("/v1/traces", traces)
    async with serve(collector) as otlp:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": str(otlp.make_url("")).rstrip("/"),
            "ROUTER_SPAN_EXPORT": export,
        }
        async with fusion_sidecar(environ=env) as s:
            kind = type(s.app[SERVICES].telemetry.shipper).__name__
            assert kind == {"thread": "SpanSender", "process": "SpanShipper"}[export]
            for _ in range(3):
                await s.openai().chat.completions.create(model="m1", messages=QUESTION)
            telemetry = s.app[SERVICES].telemetry
        # the sidecar is closed: its shutdown flushed the buffer and waited for the export;
        # the receiver runs on this loop, so give the exporter process its answers
        for _ in range(200):
            if len(received) >= 6:
                break
            await asyncio.sleep(0.02)
        del telemetry
    servers = [span for span in received if span.kind == span.SPAN_KIND_SERVER]
    clients = [span for span in received if span.kind == span.SPAN_KIND_CLIENT]
    assert (len(servers), len(clients)) == (3, 3)


@asynccontextmanager
async def exporting_sidecar(
    answer: Callable[[], Awaitable[web.Response]], settings: dict[str, str]
) -> AsyncIterator[tuple[Sidecar, list[Any]]]:
    """A sidecar exporting spans (with these `OTEL_*`/`ROUTER_*` settings) to a local OTLP/HTTP
    receiver that answers with `answer()`; the sidecar and the spans of the requests taken."""
    received: list[Any] = []

    async def traces(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        response = await answer()
        if response.status == 200:
            received.extend(
                span
                for resource_spans in message.resource_spans
                for scope_spans in resource_spans.scope_spans
                for span in scope_spans.spans
            )
        return response

    collector = web.Application()
    collector.router.add_post("/v1/traces", traces)
    async with serve(collector) as otlp:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": str(otlp.make_url("")).rstrip("/"), **settings}
        async with sidecar(environ=env) as s:
            yield s, received


def _dropped_metric(text: str, reason: str) -> float:
    line = next(
        line
        for line in text.splitlines()
        if line.startswith(f'router_spans_dropped_total{{reason="{reason}"}}')
    )
    return float(line.rsplit(" ", 1)[1])


async def _ask(url: str, count: int) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            async with http.post(
                f"{url}/v1/chat/completions", json={"model": "m-a", "messages": QUESTION}
            ) as r:
                assert r.status == 200


async def test_a_stuck_collector_bounds_what_waits_and_counts_every_span_it_drops() -> None:
    """The collector holds the first export: at most OTEL_BSP_MAX_QUEUE_SIZE spans wait, the
    rest are dropped and counted (`router_spans_dropped_total{reason="queue_full"}`); once it
    answers, every span was either delivered or counted."""
    release = asyncio.Event()

    async def held() -> web.Response:
        await release.wait()
        return web.Response(status=200)

    settings = {"OTEL_BSP_MAX_QUEUE_SIZE": "40", "OTEL_BSP_SCHEDULE_DELAY": "20"}
    async with exporting_sidecar(held, settings) as (s, received):
        shipper = s.app[SERVICES].telemetry.shipper
        await _ask(s.url, 60)  # 120 spans: a server and a client span each
        assert shipper is not None
        dropped = shipper.dropped["queue_full"]
        assert dropped > 0
        async with aiohttp.ClientSession() as http, http.get(f"{s.url}/metrics") as r:
            assert _dropped_metric(await r.text(), "queue_full") == dropped
        release.set()
        await asyncio.to_thread(shipper.force_flush)
        # and the span of that GET /metrics: 121 spans, each delivered or counted
        assert len(received) + shipper.dropped["queue_full"] == 121
        assert len(received) >= 40
        assert shipper.dropped["export_failed"] == 0


@pytest.mark.parametrize("export", ["thread", "process"])
async def test_spans_a_collector_refuses_are_counted_as_export_failed(export: str) -> None:
    async def refused() -> web.Response:
        return web.Response(status=400, text="no")

    async with exporting_sidecar(refused, {"ROUTER_SPAN_EXPORT": export}) as (s, received):
        shipper = s.app[SERVICES].telemetry.shipper
        assert shipper is not None
        await _ask(s.url, 5)
        await asyncio.to_thread(shipper.force_flush)
        async with aiohttp.ClientSession() as http, http.get(f"{s.url}/metrics") as r:
            text = await r.text()  # (read before its own span is exported)
        assert shipper.dropped == {"export_failed": 10}
        assert _dropped_metric(text, "export_failed") == 10
        assert _dropped_metric(text, "queue_full") == 0
    assert received == []


@pytest.mark.parametrize("export", ["thread", "process"])
@pytest.mark.parametrize("odd", [object(), frozenset({"a"})], ids=["object", "frozenset"])
async def test_a_span_that_cannot_be_encoded_is_counted_and_the_others_go(
    export: str, odd: object
) -> None:
    """An attribute value OTLP has no type for (a programming slip, which the SDK would drop
    with a warning; a frozenset even crosses the exporter process's pipe): ending that span
    raises nothing, it is counted as export_failed, and the spans around it reach the
    collector."""
    async with otlp_receiver() as (url, requests):
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": url, "ROUTER_SPAN_EXPORT": export}
        async with sidecar(environ=env) as s:
            telemetry = s.app[SERVICES].telemetry
            shipper = telemetry.shipper
            assert shipper is not None
            for name, value in (("before", 1), ("odd", odd), ("after", "x")):
                with telemetry.tracer.start_as_current_span(name) as span:
                    span.set_attribute("value", value)
            await asyncio.to_thread(shipper.force_flush)
            assert shipper.dropped == {"export_failed": 1}
            names = [span.name for span in spans_of(requests)]
    assert names == ["before", "after"]


async def test_thread_exports_go_in_batches_of_the_configured_size() -> None:
    """OTEL_BSP_MAX_EXPORT_BATCH_SIZE=4: ten spans flushed at once reach the collector as
    requests of 4, 4 and 2 spans (a large queue never becomes one oversized request)."""
    async with otlp_receiver() as (url, requests):
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": url,
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4",
            "OTEL_BSP_SCHEDULE_DELAY": "60000",  # only the flush below sends
        }
        async with sidecar(environ=env) as s:
            telemetry = s.app[SERVICES].telemetry
            for n in range(10):
                with telemetry.tracer.start_as_current_span(f"span {n}"):
                    pass
            assert telemetry.shipper is not None
            await asyncio.to_thread(telemetry.shipper.force_flush)
            sizes = [len(spans_of([request])) for request in requests]
    assert sizes == [4, 4, 2]


async def test_a_flush_that_timed_out_does_not_answer_the_next_one() -> None:
    """Exporter process, a collector taking 0.6 s a request: the first flush gives up after
    0.2 s; its late acknowledgement must not end the second flush before the second export."""

    async def slow() -> web.Response:
        await asyncio.sleep(0.6)
        return web.Response(status=200)

    settings = {"ROUTER_SPAN_EXPORT": "process", "OTEL_BSP_SCHEDULE_DELAY": "60000"}
    async with exporting_sidecar(slow, settings) as (s, received):
        telemetry = s.app[SERVICES].telemetry
        shipper = telemetry.shipper
        assert shipper is not None
        with telemetry.tracer.start_as_current_span("first"):
            pass
        assert not await asyncio.to_thread(shipper.force_flush, 200)
        with telemetry.tracer.start_as_current_span("second"):
            pass
        assert await asyncio.to_thread(shipper.force_flush, 10_000)
        assert sorted(span.name for span in received) == ["first", "second"]


async def test_a_span_ended_after_shutdown_is_counted() -> None:
    async with (
        otlp_receiver() as (url, _requests),
        sidecar(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": url}) as s,
    ):
        telemetry = s.app[SERVICES].telemetry
        await asyncio.to_thread(telemetry.shutdown)
        with telemetry.tracer.start_as_current_span("late"):
            pass
        assert telemetry.shipper is not None
        assert telemetry.shipper.dropped == {"export_failed": 1}
