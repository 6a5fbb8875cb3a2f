"""Trace ids in log lines and upstream headers name traces that exist (issue 20).

With spans exported, a request that is not sampled and came without a `traceparent` gets no
span: its log line has no trace id (it would name a trace no collector has) and it costs the
request nothing. A sampled request's log line names its exported trace; a caller's
`traceparent` is kept either way; and a provider with `forward_trace_context: true` is sent the
trace context, sampled or not, so it learns the decision.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from router.app import create_app
from router.state import SERVICES
from tests.fakes import openai_server
from tests.fakes.script import Wall
from tests.helpers import (
    KEYS,
    config_from_yaml,
    log_lines,
    otlp_receiver,
    serve,
    spans_of,
    two_provider_yaml,
)

QUESTION = [{"role": "user", "content": "hi"}]
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
UNSAMPLED_PARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-00"


@asynccontextmanager
async def traced_sidecar(
    sampler: str, ratio: str = "1", forward: bool = False
) -> AsyncIterator[tuple[str, Wall, Any, list[Any]]]:
    """A sidecar exporting to a local OTLP receiver: its URL, the fake's call log, the app and
    the receiver's export requests."""
    wall = Wall()
    async with otlp_receiver() as (collector, received), serve(openai_server.make_app(wall)) as up:
        text = two_provider_yaml(str(up.make_url("")).rstrip("/"))
        if forward:
            text = text.replace(
                "api_key_env: TEST_KEY_A",
                "api_key_env: TEST_KEY_A\n    forward_trace_context: true",
            )
        environ = {
            **KEYS,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector,
            "OTEL_TRACES_SAMPLER": sampler,
            "OTEL_TRACES_SAMPLER_ARG": ratio,
        }
        app = create_app(config_from_yaml(text), environ=environ)
        async with serve(app) as server:
            yield str(server.make_url("")).rstrip("/"), wall, app, received


async def _ask(url: str, count: int, headers: dict[str, str] | None = None) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            body = {"model": "m-a", "messages": QUESTION}
            async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                assert r.status == 200


def _completed(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"] == "request.completed"]


async def test_log_trace_ids_name_exactly_the_exported_traces() -> None:
    """At a ratio of 0.5, 60 requests: the trace ids on the log lines are exactly the traces
    the collector received, and the requests without one were not sampled."""
    with log_lines() as lines:
        async with traced_sidecar("parentbased_traceidratio", "0.5") as (url, _wall, app, got):
            await _ask(url, 60)
            await asyncio.to_thread(app[SERVICES].telemetry.force_flush)
        completed = _completed(lines)
    logged = {line["trace_id"] for line in completed if "trace_id" in line}
    exported = {span.trace_id.hex() for span in spans_of(got)}
    assert len(completed) == 60
    assert logged == exported
    assert 10 <= len(logged) <= 50  # some sampled, some not (0.5: beyond 5 deviations else)


async def test_an_unsampled_request_has_no_span_unless_it_came_with_a_traceparent() -> None:
    with log_lines() as lines:
        async with traced_sidecar("parentbased_always_off") as (url, wall, app, got):
            await _ask(url, 2)
            await _ask(url, 1, headers={"traceparent": UNSAMPLED_PARENT})
            await _ask(url, 1, headers={"traceparent": "00-not-a-valid-parent-01"})
            await asyncio.to_thread(app[SERVICES].telemetry.force_flush)
        completed = _completed(lines)
    # (a malformed traceparent counts as none: W3C says to start a new trace)
    assert [line.get("trace_id") for line in completed] == [None, None, CALLER_TRACE, None]
    assert spans_of(got) == []
    assert all("traceparent" not in call.headers for call in wall.calls)  # not forwarded


@pytest.mark.parametrize("sampled", [False, True])
async def test_a_forwarding_provider_learns_the_decision_sampled_or_not(sampled: bool) -> None:
    """With `forward_trace_context: true` on the provider, an unsampled request still has its
    ids: the provider gets `traceparent` with the sampled flag as decided, the log line the
    same trace id, and only a sampled trace is exported."""
    sampler = "parentbased_always_on" if sampled else "parentbased_always_off"
    with log_lines() as lines:
        async with traced_sidecar(sampler, forward=True) as (url, wall, app, got):
            await _ask(url, 1)
            await asyncio.to_thread(app[SERVICES].telemetry.force_flush)
        completed = _completed(lines)
    version, trace_id, _span_id, flags = wall.calls[0].headers["traceparent"].split("-")
    assert version == "00"
    assert bool(int(flags, 16) & 0x01) is sampled  # the W3C sampled flag
    assert trace_id == completed[0]["trace_id"]
    assert {span.trace_id.hex() for span in spans_of(got)} == ({trace_id} if sampled else set())
