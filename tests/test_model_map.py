"""Agents ask for a model by name (issue 17): `model_map` sends a requested name to a route,
model or panel when the name is not in the catalog, is denied here, or has no target up. The
answer says what served it and why (headers, the log line, the trace); without an entry the
404, 403 or 503 stays; `/v1/models` lists the mapped names."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from router import semconv
from router.app import create_app
from router.errors import ConfigError
from router.state import SERVICES
from tests.fakes import openai_server
from tests.fakes.script import Answer, Status, Wall
from tests.helpers import config_from_yaml, serve

POLICY = """jurisdiction: us
version: "map-1"
default: allow
rules:
  - id: deny-withdrawn
    effect: deny
    reason: withdrawn by an export directive
    match:
      models: [withdrawn]
"""


def _model(name: str) -> str:
    return f"""
  {name}:
    provider: po
    upstream_id: up-{name}
    vendor: Vendor-{name}
    origin: us
    tier: strong
    context_window: 8000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}"""


def _yaml(upstream: str, policies: Path, model_map: str) -> str:
    return f"""
jurisdiction: us
policies: {policies}
retry: {{transient_base_s: 0.01, transient_cap_s: 0.02, throttle_base_s: 0.01, throttle_cap_s: 0.02}}
providers:
  po:
    protocol: openai
    base_url: {upstream}/v1
    allow_http: true
    region: us
    timeouts: {{connect_s: 1, first_byte_s: 2, idle_s: 2, total_s: 5}}
models:{_model("safe")}{_model("withdrawn")}{_model("flaky")}
routes:
  steady: [safe]
{model_map}
"""


MAP = """model_map:
  withdrawn: steady
  claude-sonnet-4-5: steady
  flaky: steady
"""
HI: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]


@asynccontextmanager
async def _sidecar(
    model_map: str = MAP, exporter: Any = None
) -> AsyncIterator[tuple[str, Wall, Any]]:
    wall = Wall()
    wall.script("up-safe", Answer("from safe"))
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "us.yaml").write_text(POLICY)
        async with serve(openai_server.make_app(wall)) as upstream:
            url = str(upstream.make_url("")).rstrip("/")
            loaded = config_from_yaml(_yaml(url, Path(folder), model_map))
            app = create_app(loaded, environ={}, span_exporter=exporter)
            async with serve(app) as server:
                yield str(server.make_url("")).rstrip("/"), wall, app


def _openai(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize(
    ("asked", "why"),
    [("claude-sonnet-4-5", "not_in_catalog"), ("withdrawn", "policy_denied")],
)
async def test_a_name_not_served_here_goes_to_its_mapped_route(asked: str, why: str) -> None:
    async with _sidecar() as (url, wall, _app):
        client = _openai(url)
        raw = await client.chat.completions.with_raw_response.create(model=asked, messages=HI)  # type: ignore[arg-type]
        completion = raw.parse()
        assert completion.choices[0].message.content == "from safe"
        assert (raw.headers["x-router-model"], raw.headers["x-router-mapped-from"]) == (
            "safe",
            asked,
        )
        assert raw.headers["x-router-mapped-why"] == why
        assert [c.model for c in wall.calls] == ["up-safe"]  # the withdrawn model never called
        await client.close()


async def test_an_available_mapped_model_is_served_as_it_is() -> None:
    async with _sidecar() as (url, wall, _app):
        wall.script("up-flaky", Answer("from flaky"))
        client = _openai(url)
        raw = await client.chat.completions.with_raw_response.create(model="flaky", messages=HI)  # type: ignore[arg-type]
        assert raw.parse().choices[0].message.content == "from flaky"
        assert "x-router-mapped-from" not in raw.headers
        await client.close()


async def test_a_model_with_no_target_up_goes_to_its_mapped_route() -> None:
    """`flaky` answers 429 with a Retry-After: it cools down; the next request for it is
    served by the mapped route, without calling it, and says why."""
    async with _sidecar() as (url, wall, _app):
        wall.script("up-flaky", Status(429, "slow down", retry_after="30"))
        client = _openai(url)
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="flaky", messages=HI)  # type: ignore[arg-type]
        calls = len(wall.calls_to("up-flaky"))
        raw = await client.chat.completions.with_raw_response.create(model="flaky", messages=HI)  # type: ignore[arg-type]
        assert raw.parse().choices[0].message.content == "from safe"
        assert raw.headers["x-router-mapped-why"] == "unavailable"
        assert len(wall.calls_to("up-flaky")) == calls
        await client.close()


async def test_without_an_entry_the_403_and_the_404_stay() -> None:
    async with _sidecar(model_map="") as (url, wall, _app):
        client = _openai(url)
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await client.chat.completions.create(model="withdrawn", messages=HI)  # type: ignore[arg-type]
        assert denied.value.body["code"] == "policy_denied"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="claude-sonnet-4-5", messages=HI)  # type: ignore[arg-type]
        assert wall.calls == []
        await client.close()


async def test_an_anthropic_client_asking_for_a_withdrawn_model_is_served_by_the_map() -> None:
    """Claude Code's case: the Messages API, the model it hard-codes, streamed."""
    async with _sidecar() as (url, wall, _app):
        client = anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0)
        async with client.messages.stream(
            model="withdrawn", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            message = await stream.get_final_message()
            headers = stream.response.headers
        assert [b.text for b in message.content if b.type == "text"] == ["from safe"]
        assert (headers["x-router-mapped-from"], headers["x-router-mapped-why"]) == (
            "withdrawn",
            "policy_denied",
        )
        assert [c.model for c in wall.calls] == ["up-safe"]
        await client.close()


async def test_the_log_line_and_the_trace_say_what_was_mapped() -> None:
    exporter = InMemorySpanExporter()
    async with _sidecar(exporter=exporter) as (url, _wall, app):
        client = _openai(url)
        with capture_logs(processors=[merge_contextvars]) as logs:
            await client.chat.completions.create(model="withdrawn", messages=HI)  # type: ignore[arg-type]
            for _ in range(50):
                if any(e["event"] == "request.completed" for e in logs):
                    break
                await asyncio.sleep(0.01)  # (the line follows the response)
        [line] = [e for e in logs if e["event"] == "request.completed"]
        assert (line["requested_model"], line["mapped_from"], line["mapped_reason"]) == (
            "withdrawn",
            "withdrawn",
            "policy_denied",
        )
        assert line["target"] == "steady"
        assert line["served_model"] == "safe"
        app[SERVICES].telemetry.force_flush()
        mapped = [
            s.attributes
            for s in exporter.get_finished_spans()
            if s.attributes and semconv.ROUTER_MAPPED_FROM in s.attributes
        ]
        assert [
            (a[semconv.ROUTER_MAPPED_FROM], a[semconv.ROUTER_MAPPED_REASON]) for a in mapped
        ] == [("withdrawn", "policy_denied")]
        await client.close()


async def test_models_lists_the_mapped_names() -> None:
    async with _sidecar() as (url, _wall, _app):
        client = _openai(url)
        listed = {m.id: m for m in (await client.models.list()).data}
        assert (listed["claude-sonnet-4-5"].model_extra or {})["router"] == {
            "kind": "mapped",
            "model_kind": "chat",
            "served_by": "steady",
        }
        # denied here, so listed as what a request for it gets: the mapped route
        assert (listed["withdrawn"].model_extra or {})["router"]["served_by"] == "steady"
        assert (listed["flaky"].model_extra or {})["router"]["kind"] == "model"  # allowed: itself
        await client.close()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("  gpt-9: nowhere", "no model, route or fusion/<panel>"),
        ("  steady: steady", "maps a name to itself"),
    ],
)
def test_config_refuses_a_bad_entry(entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        config_from_yaml(_yaml("http://127.0.0.1:9", Path("/nonexistent"), f"model_map:\n{entry}"))
    assert message in str(refused.value)
