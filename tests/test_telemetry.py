"""Traces, logs and metrics as ops see them: OTLP export, span tree, trace ids, no secrets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from router.state import SERVICES
from router.tracing import sampler_from
from tests.fakes.script import Answer, CutStream, InBandError, Malformed, Reset, StallStream, Status
from tests.fusion_setup import fusion_sidecar
from tests.helpers import KEYS, log_lines, otlp_receiver, sidecar, spans_of

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
QUESTION = [{"role": "user", "content": "When was the bridge built?"}]


def _attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = value.string_value or value.int_value or value.bool_value
    return out


async def test_otlp_export_shows_the_fusion_span_tree_with_substitution() -> None:
    """A local OTLP/HTTP receiver gets one trace: parented on the inbound traceparent, a CLIENT
    span per upstream attempt, and the substitution on the seat's span."""
    async with (
        otlp_receiver() as (url, requests),
        fusion_sidecar(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": url}) as s,
    ):
        s.wall.script("up-m2", Status(503))
        await s.openai().chat.completions.create(
            model="fusion/trio",
            messages=QUESTION,  # type: ignore[arg-type]
            extra_headers={"traceparent": TRACEPARENT},
        )
        await asyncio.to_thread(s.app[SERVICES].telemetry.force_flush)
    received = spans_of(requests)
    by_id = {span.span_id: span for span in received}
    assert received, "nothing was exported"
    assert all(span.trace_id.hex() == TRACE_ID for span in received)
    server = [s for s in received if s.kind == s.SPAN_KIND_SERVER]
    assert len(server) == 1
    assert server[0].parent_span_id.hex() == PARENT_ID
    clients = [s for s in received if s.kind == s.SPAN_KIND_CLIENT]
    models = sorted(_attrs(c)["gen_ai.request.model"] for c in clients)
    assert models == sorted(  # (m2 failed once: substituted, not retried, with sub1 ready)
        ["up-m1", "up-m2", "up-m3", "up-sub1", "up-judge-m", "up-synth-m"]
    )
    for client in clients:
        attrs = _attrs(client)
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.provider.name"] == "openai"
    failed = [c for c in clients if _attrs(c)["gen_ai.request.model"] == "up-m2"]
    assert all(_attrs(c)["error.type"] == "provider_unavailable" for c in failed)
    seats = [s for s in received if s.name == "fusion.seat"]
    substituted = [s for s in seats if _attrs(s).get("router.substitute_for") == "m2"]
    assert len(substituted) == 1
    assert any(e.name == "router.fusion.substituted" for e in substituted[0].events)
    # every client span of the substituted seat hangs under that seat's span
    for client in failed:
        assert client.parent_span_id == substituted[0].span_id
    workflow = next(s for s in received if s.name == "invoke_workflow fusion")
    assert by_id[workflow.parent_span_id] is server[0]


async def test_unreachable_collector_never_fails_a_request() -> None:
    """With the OTLP endpoint on a closed port, requests succeed as usual."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    async with sidecar(environ=env) as s:
        for _ in range(5):
            reply = await s.openai().chat.completions.create(model="m-a", messages=QUESTION)  # type: ignore[arg-type]
            assert reply.choices[0].message.content


async def test_log_lines_carry_request_and_trace_ids() -> None:
    """The canonical request.completed line has the request id, trace id and span id."""
    with log_lines() as lines:
        async with sidecar() as s:
            client = s.openai()
            raw = await client.chat.completions.with_raw_response.create(
                model="m-a",
                messages=QUESTION,
                extra_headers={"traceparent": TRACEPARENT},  # type: ignore[arg-type]
            )
            # later calls on the same keep-alive connection carry their own ids, not a leftover
            later = [
                await client.chat.completions.with_raw_response.create(
                    model="m-a",
                    messages=QUESTION,  # type: ignore[arg-type]
                )
                for _ in range(2)
            ]
        completed = [line for line in lines if line["event"] == "request.completed"]
        assert len(completed) == 3
        ids = [r.headers["x-request-id"] for r in (raw, *later)]
        assert [line["request_id"] for line in completed] == ids
        assert len(set(ids)) == 3
        line = completed[0]
        assert line["request_id"] == raw.headers["x-request-id"]
        assert line["trace_id"] == TRACE_ID
        assert len(line["span_id"]) == 16
        assert line["served_model"] == "m-a"
        assert line["attempts"] == 1
        assert line["policy_version"]


async def test_no_secret_or_prompt_reaches_logs_spans_metrics_or_errors() -> None:
    """S1/S2: canary keys and canary prompt text appear in no log line, span, metric or error body."""
    canary_prompt = "CANARY-PROMPT-7f3e text that must not be logged"
    captured: list[str] = []

    def keep(_logger: Any, _method: str, event_dict: dict[str, Any]) -> str:
        captured.append(json.dumps(event_dict, default=str))
        return ""

    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, keep],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    exporter = InMemorySpanExporter()
    bodies: list[str] = []
    try:
        messages = [{"role": "user", "content": canary_prompt}]
        for (
            script
        ) in (  # the fault matrix's families, each on a fresh sidecar (no breaker in the way)
            Status(401, "bad key " + KEYS["TEST_KEY_A"]),
            Status(500, "boom " + KEYS["TEST_KEY_A"]),
            Status(400, "echo " + canary_prompt),
            Status(429, retry_after="1"),
            Status(429, "quota", code="insufficient_quota"),
            Malformed(),
            Reset(),
            CutStream(after=1),
            InBandError(after=1),
            StallStream(after=1, seconds=2),
            Answer("fine"),
        ):
            async with sidecar(span_exporter=exporter) as s, aiohttp.ClientSession() as http:
                s.wall.script("up-model-a", script)
                for stream in (False, True):
                    async with http.post(
                        f"{s.base_url}/chat/completions",
                        json={"model": "both", "messages": messages, "stream": stream},
                    ) as response:
                        bodies.append(await response.text())
                        bodies.append(repr(dict(response.headers)))
                async with http.get(f"{s.url}/metrics") as response:
                    bodies.append(await response.text())
                async with http.get(f"{s.url}/admin/breakers") as response:
                    bodies.append(await response.text())
                s.app[SERVICES].telemetry.force_flush()
    finally:
        structlog.reset_defaults()
    spans = [
        json.dumps(
            {
                "name": sp.name,
                "attrs": dict(sp.attributes or {}),
                "events": [e.name for e in sp.events],
            },
            default=str,
        )
        for sp in exporter.get_finished_spans()
    ]
    assert captured
    assert spans
    assert bodies
    everything = "\n".join(captured + spans + bodies)
    for canary in (*KEYS.values(), "CANARY-PROMPT-7f3e"):
        assert canary not in everything


async def test_content_is_captured_only_when_the_operator_opts_in_twice() -> None:
    """S2: prompts and completions reach spans and the log line only with the config flag AND
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY."""
    prompt = [{"role": "user", "content": "CANARY-OPT-IN prompt"}]
    cases = [
        (
            "telemetry: {capture_content: true}\n",
            {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"},
            True,
        ),
        ("telemetry: {capture_content: true}\n", {}, False),
        ("", {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"}, False),
    ]
    for extra, env, expected in cases:
        exporter = InMemorySpanExporter()
        lines: list[str] = []

        def keep(
            _logger: Any, _method: str, event_dict: dict[str, Any], lines: list[str] = lines
        ) -> str:
            lines.append(json.dumps(event_dict, default=str))
            return ""

        structlog.configure(
            processors=[keep],
            logger_factory=structlog.ReturnLoggerFactory(),
            cache_logger_on_first_use=False,
        )
        try:
            async with sidecar(extra, environ=env, span_exporter=exporter) as s:
                await s.openai().chat.completions.create(model="m-a", messages=prompt)  # type: ignore[arg-type]
                s.app[SERVICES].telemetry.force_flush()
        finally:
            structlog.reset_defaults()
        spans = json.dumps(
            [dict(sp.attributes or {}) for sp in exporter.get_finished_spans()], default=str
        )
        assert ("CANARY-OPT-IN" in spans) is expected
        assert ("CANARY-OPT-IN" in "\n".join(lines)) is expected


@pytest.mark.parametrize(
    ("environ", "description"),
    [
        ({}, "ParentBased{root:AlwaysOnSampler"),
        ({"OTEL_TRACES_SAMPLER": "always_off"}, "AlwaysOffSampler"),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
            "ParentBased{root:TraceIdRatioBased{0.25}",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "lots"},
            "TraceIdRatioBased{1.0}",
        ),
        ({"OTEL_TRACES_SAMPLER": "TraceIdRatio", "OTEL_TRACES_SAMPLER_ARG": "7"}, "{1.0}"),
        ({"OTEL_TRACES_SAMPLER": "no_such_sampler"}, "ParentBased{root:AlwaysOnSampler"),
    ],
)
def test_sampler_follows_the_otel_variables(environ: dict[str, str], description: str) -> None:
    assert description in sampler_from(environ).get_description()


@pytest.mark.parametrize(("ratio", "expect_spans"), [("0", False), ("1", True)])
async def test_sampling_ratio_decides_what_is_exported(ratio: str, expect_spans: bool) -> None:
    """OTEL_TRACES_SAMPLER=traceidratio at 0 exports nothing (requests still answer); at 1, all."""
    exporter = InMemorySpanExporter()
    env = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": ratio}
    async with sidecar(environ=env, span_exporter=exporter) as s:
        for _ in range(3):
            reply = await s.openai().chat.completions.create(model="m-a", messages=QUESTION)  # type: ignore[arg-type]
            assert reply.choices[0].message.content
        s.app[SERVICES].telemetry.force_flush()
    names = {span.name for span in exporter.get_finished_spans()}
    assert bool(names) is expect_spans
    if expect_spans:
        assert "POST /v1/chat/completions" in names
