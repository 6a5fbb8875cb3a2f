"""Span export (issue 20): a flattened span, written down a pipe and rebuilt, encodes to the
SDK's OTLP bytes; and both ways of exporting (a thread of the sidecar, or the exporter
process) deliver every span to a real OTLP/HTTP receiver, at shutdown too."""

from __future__ import annotations

import marshal
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from router.span_shipping import compact, rebuild
from router.state import SERVICES
from tests.fakes.script import Status
from tests.fusion_setup import fusion_sidecar
from tests.helpers import serve

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
        import asyncio

        for _ in range(200):
            if len(received) >= 6:
                break
            await asyncio.sleep(0.02)
        del telemetry
    servers = [span for span in received if span.kind == span.SPAN_KIND_SERVER]
    clients = [span for span in received if span.kind == span.SPAN_KIND_CLIENT]
    assert (len(servers), len(clients)) == (3, 3)
