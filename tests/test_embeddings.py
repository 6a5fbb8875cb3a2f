"""`POST /v1/embeddings` (issue 17) through the one core: catalog models of `kind: embedding`
on OpenAI-protocol and Gemini upstreams (`batchEmbedContents`) and the simulator, driven with
the official `openai` SDK (`client.embeddings.create`). Float and base64 vectors come back
exactly; `dimensions` reaches each upstream in its own shape; a route fails over, policy gates
every target, an open breaker is skipped; usage and cost reach the `router` object, the
metrics and the one `request.completed` line. A model of the other kind is a 400
`wrong_model_kind`, on either API; Anthropic's protocol has no embeddings (a config error)."""

from __future__ import annotations

import base64
import math
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes
from structlog.testing import capture_logs

from router import semconv, yaml12
from router.app import create_app
from router.catalog import Catalog
from router.config import load_config, parse_config
from router.embeddings_in import MAX_INPUTS
from router.errors import (
    ConfigError,
    ProviderAuthFailed,
    ProviderError,
    ProviderMalformed,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from router.providers import AnthropicProvider, GeminiProvider, OpenAIProvider, Secret
from router.providers.base import EmbeddingProvider
from router.providers.gemini import EMBED_BATCH
from router.providers.sim import embedding
from router.state import SERVICES
from router.types import EmbeddingCall, EmbeddingRequest, Timeouts
from router.upstream_http import UpstreamClient
from router.vectors import checked_vectors, pack_float32, unpack_float32
from tests.fakes import gemini_server, openai_server
from tests.fakes.openai_server import FAKE_DIMENSIONS, fake_vector
from tests.fakes.script import Answer, Hang, Malformed, OddShape, Reset, Status, Wall
from tests.helpers import TEST_POLICIES, config_from_yaml, serve

KEYS = {"KEY_A": "sk-CANARY-emb-aaaa", "KEY_G": "g-CANARY-emb-gggg"}
TEXTS = ["The quick brown fox.", "jumps over the lazy dog", "ünïcødé ✓"]


def _yaml(openai_url: str, gemini_url: str, policies: Path, extra: str = "") -> str:
    return f"""
jurisdiction: us
policies: {policies}
retry: {{transient_base_s: 0.001, transient_cap_s: 0.002, throttle_base_s: 0.001, throttle_cap_s: 0.002}}
providers:
  pa:
    protocol: openai
    base_url: {openai_url}/v1
    allow_http: true
    api_key_env: KEY_A
    region: us
    timeouts: {{connect_s: 1, first_byte_s: 0.5, idle_s: 0.5, total_s: 3}}
    breaker: {{fail_max: 2, reset_timeout_s: 60}}
  pb:
    protocol: openai
    base_url: {openai_url}/v1
    allow_http: true
    region: us
    timeouts: {{connect_s: 1, first_byte_s: 0.5, idle_s: 0.5, total_s: 3}}
  pg:
    protocol: gemini
    base_url: {gemini_url}/v1beta
    allow_http: true
    api_key_env: KEY_G
    region: us
    timeouts: {{connect_s: 1, first_byte_s: 0.5, idle_s: 0.5, total_s: 3}}
models:
  emb-a:
    kind: embedding
    provider: pa
    upstream_id: up-emb-a
    vendor: VendorA
    origin: us
    tier: standard
    context_window: 8192
    dimensions: 8
    price: {{input_per_mtok: 100.0}}
  emb-b:
    kind: embedding
    provider: pb
    upstream_id: up-emb-b
    vendor: VendorB
    origin: us
    tier: standard
    context_window: 8192
    price: {{input_per_mtok: 200.0, output_per_mtok: 0}}
  emb-g:
    kind: embedding
    provider: pg
    upstream_id: up-emb-g
    vendor: Google
    origin: us
    tier: standard
    context_window: 2048
    dimensions: 8
    price: {{input_per_mtok: 300.0}}
  emb-small:
    kind: embedding
    provider: pb
    upstream_id: up-emb-small
    vendor: VendorB
    origin: us
    tier: budget
    context_window: 8192
    dimensions: 4
    price: {{input_per_mtok: 1.0}}
  chat-a:
    provider: pa
    upstream_id: up-chat-a
    vendor: VendorA
    origin: us
    tier: strong
    context_window: 8000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
routes:
  embed: [emb-a, emb-b]
  embed-g: [emb-g, emb-a]
  small-first: [emb-small, emb-a]
  talk: [chat-a]
panels:
  solo:
    panelists: [chat-a]
    synthesizers: [chat-a]
    quorum: 1
{extra}
"""


@dataclass
class Bed:
    """A sidecar, the fakes behind it (one OpenAI, one Gemini) and their call logs."""

    url: str
    wall: Wall
    gwall: Wall
    exporter: InMemorySpanExporter
    app: web.Application
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)

    def client(self, **headers: str) -> openai.AsyncOpenAI:
        c = openai.AsyncOpenAI(
            base_url=f"{self.url}/v1", api_key="unused", max_retries=0, default_headers=headers
        )
        self.clients.append(c)
        return c

    async def post(
        self, body: dict[str, Any], path: str = "/v1/embeddings", **headers: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.url}{path}", json=body, headers=headers) as response,
        ):
            return response.status, await response.json(), dict(response.headers)

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}{path}") as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()


@asynccontextmanager
async def bed(policies: Path = TEST_POLICIES, extra: str = "") -> AsyncIterator[Bed]:
    wall, gwall = Wall(), Wall()
    exporter = InMemorySpanExporter()
    async with (
        serve(openai_server.make_app(wall)) as upstream,
        serve(gemini_server.make_app(gwall)) as gemini,
    ):
        yaml = _yaml(
            str(upstream.make_url("")).rstrip("/"),
            str(gemini.make_url("")).rstrip("/"),
            policies,
            extra,
        )
        app = create_app(config_from_yaml(yaml), environ=KEYS, span_exporter=exporter)
        async with serve(app) as server:
            b = Bed(str(server.make_url("")).rstrip("/"), wall, gwall, exporter, app)
            try:
                yield b
            finally:
                for c in b.clients:
                    await c.close()


def _attempts(router: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(a["model"], a["outcome"], a["code"]) for a in router["attempts"]]


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- OpenAI-protocol upstreams ----------------------------------------------------------------


async def test_float_vectors_come_back_exactly_and_the_upstream_body_is_openais() -> None:
    """`encoding_format: float`: every input's vector as the upstream wrote it, in input
    order; the upstream got the texts as a list, under its own model id, with the key."""
    async with bed() as b:
        got = await b.client().embeddings.create(
            model="emb-a", input=TEXTS, encoding_format="float", user="u-1"
        )
        assert [d.embedding for d in got.data] == [fake_vector("up-emb-a", t) for t in TEXTS]
        assert [d.index for d in got.data] == [0, 1, 2]
        assert got.model == "emb-a"
        assert (got.usage.prompt_tokens, got.usage.total_tokens) == (11, 11)
        [call] = b.wall.calls
        assert call.path == "/v1/embeddings"
        assert call.body == {"model": "up-emb-a", "input": TEXTS, "user": "u-1"}
        assert call.headers["Authorization"] == f"Bearer {KEYS['KEY_A']}"


async def test_the_sdks_default_base64_gets_the_same_vectors() -> None:
    """The SDK asks for base64 unless told otherwise, and decodes it: the same vectors as
    float. The upstream was asked for base64 too; on the wire each vector is little-endian
    float32, base64-encoded, as OpenAI writes it."""
    async with bed() as b:
        got = await b.client().embeddings.create(model="emb-a", input=TEXTS)
        assert [d.embedding for d in got.data] == [fake_vector("up-emb-a", t) for t in TEXTS]
        assert b.wall.calls[-1].body == {
            "model": "up-emb-a",
            "input": TEXTS,
            "encoding_format": "base64",
        }
        status, raw, _ = await b.post(
            {"model": "emb-a", "input": "one", "encoding_format": "base64"}
        )
        assert status == 200
        vector = fake_vector("up-emb-a", "one")
        expected = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        assert raw["data"] == [{"object": "embedding", "index": 0, "embedding": expected}]


async def test_a_single_string_input_is_one_vector() -> None:
    """`input` as one string: one vector, sent upstream as a one-item list."""
    async with bed() as b:
        got = await b.client().embeddings.create(
            model="emb-a", input="hello", encoding_format="float"
        )
        assert [d.embedding for d in got.data] == [fake_vector("up-emb-a", "hello")]
        assert b.wall.calls[-1].body["input"] == ["hello"]


async def test_dimensions_are_passed_through_to_openai() -> None:
    """`dimensions` goes upstream as sent; the vectors are that long."""
    async with bed() as b:
        got = await b.client().embeddings.create(
            model="emb-a", input=TEXTS, dimensions=5, encoding_format="float"
        )
        assert b.wall.calls[-1].body["dimensions"] == 5
        assert [d.embedding for d in got.data] == [fake_vector("up-emb-a", t, 5) for t in TEXTS]


async def test_vectors_of_another_size_than_asked_are_a_provider_fault_that_fails_over() -> None:
    """An upstream that ignores `dimensions`, or answers a vector short, is malformed: the
    route moves on, and the answer the caller gets has the size asked for."""
    bad = '{"object": "list", "model": "x", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}], "usage": {"prompt_tokens": 1, "total_tokens": 1}}'
    async with bed() as b:
        b.wall.script("up-emb-a", OddShape(body=bad))
        status, body, _ = await b.post({"model": "embed", "input": ["a"], "dimensions": 3})
        assert status == 200
        assert _attempts(body["router"]) == [
            ("emb-a", "provider_fault", "provider_malformed"),
            ("emb-b", "success", "ok"),
        ]
        assert body["data"][0]["embedding"] == fake_vector("up-emb-b", "a", 3)


# --- Gemini ------------------------------------------------------------------------------------


async def test_gemini_gets_batch_embed_contents_with_output_dimensionality() -> None:
    """A Gemini embedding model is `batchEmbedContents`: one request per text naming the model,
    `dimensions` as `outputDimensionality`, the key in `x-goog-api-key`; Gemini's vectors
    and its token count come back (as floats and as base64)."""
    async with bed() as b:
        got = await b.client().embeddings.create(
            model="emb-g", input=TEXTS, dimensions=6, encoding_format="float", user="u"
        )
        assert [d.embedding for d in got.data] == [fake_vector("up-emb-g", t, 6) for t in TEXTS]
        assert got.usage.prompt_tokens == 11
        [call] = b.gwall.calls
        assert call.path == "/v1beta/models/up-emb-g:batchEmbedContents"
        assert call.headers["x-goog-api-key"] == KEYS["KEY_G"]
        assert call.body == {
            "requests": [
                {
                    "model": "models/up-emb-g",
                    "content": {"parts": [{"text": t}]},
                    "outputDimensionality": 6,
                }
                for t in TEXTS
            ]
        }
        again = await b.client().embeddings.create(model="emb-g", input=TEXTS)  # base64
        assert [d.embedding for d in again.data] == [
            fake_vector("up-emb-g", t, FAKE_DIMENSIONS) for t in TEXTS
        ]
        assert "outputDimensionality" not in b.gwall.calls[-1].body["requests"][0]


async def test_more_inputs_than_a_gemini_batch_takes_go_in_consecutive_calls() -> None:
    """Gemini takes at most 100 requests a call: 150 texts are two calls (100, then 50), one
    attempt; the vectors keep the input order and the token counts add up."""
    texts = [f"text number {i}" for i in range(150)]
    async with bed() as b:
        got = await b.client().embeddings.create(model="emb-g", input=texts)
        assert [len(c.body["requests"]) for c in b.gwall.calls] == [EMBED_BATCH, 50]
        assert [d.embedding for d in got.data] == [fake_vector("up-emb-g", t) for t in texts]
        assert got.usage.prompt_tokens == 22
        assert len(got.model_extra["router"]["attempts"]) == 1  # type: ignore[index]


async def test_a_gemini_refusal_is_the_callers_400_and_a_gemini_outage_fails_over() -> None:
    """A 400 from Gemini is the caller's (passed on, not failed over); a 503 fails over to
    the route's next target."""
    async with bed() as b:
        b.gwall.script("up-emb-g", Status(400, "bad"))
        status, body, _ = await b.post({"model": "embed-g", "input": "x"})
        assert (status, body["error"]["code"]) == (400, "upstream_rejected")
        assert b.wall.calls == []
        b.gwall.script("up-emb-g", Status(503))
        status, body, _ = await b.post({"model": "embed-g", "input": "x"})
        assert status == 200
        assert _attempts(body["router"]) == [
            ("emb-g", "provider_fault", "provider_unavailable"),
            ("emb-a", "success", "ok"),
        ]


# --- the core: failover, policy, breakers, usage, cost ---------------------------------------


async def test_a_route_fails_over_from_a_failing_target_listing_its_attempts() -> None:
    """The route's first target answers 503: the second serves, and the body's `router`
    object and the X-Router-* headers list both calls, as for chat."""
    async with bed() as b:
        b.wall.script("up-emb-a", Status(503))
        raw = await b.client().embeddings.with_raw_response.create(
            model="embed", input=["x", "y"], encoding_format="float"
        )
        got = raw.parse()
        assert [d.embedding for d in got.data] == [fake_vector("up-emb-b", t) for t in "xy"]
        router = got.model_extra["router"]  # type: ignore[index]
        assert _attempts(router) == [
            ("emb-a", "provider_fault", "provider_unavailable"),
            ("emb-b", "success", "ok"),
        ]
        assert router["provider"] == "pb"
        assert got.model == "emb-b"
        assert raw.headers["X-Router-Model"] == "emb-b"
        assert raw.headers["X-Router-Provider"] == "pb"
        assert raw.headers["X-Router-Attempted"] == "pa,pb"
        assert raw.headers["X-Router-Attempts"] == "2"
        assert raw.headers["X-Router-Jurisdiction"] == "us"


async def test_every_target_failing_is_a_502_listing_the_attempts() -> None:
    """No target answers: 502 `all_providers_failed` with every attempt, nothing served."""
    async with bed() as b:
        b.wall.script("up-emb-a", Status(500))
        b.wall.script("up-emb-b", Malformed())
        with pytest.raises(openai.APIStatusError) as info:
            await b.client().embeddings.create(model="embed", input="x")
        assert info.value.status_code == 502
        error = info.value.body
        assert isinstance(error, dict)
        assert error["code"] == "all_providers_failed"
        assert [(a["model"], a["code"]) for a in error["attempts"]] == [
            ("emb-a", "provider_unavailable"),
            ("emb-b", "provider_malformed"),
            ("emb-b", "provider_malformed"),  # the last target's one retry
        ]


async def test_a_silent_upstream_times_out_and_fails_over() -> None:
    """A target that says nothing within its first-byte clock fails over at once."""
    async with bed() as b:
        b.wall.script("up-emb-a", Hang(5))
        status, body, _ = await b.post({"model": "embed", "input": "x"})
        assert status == 200
        assert _attempts(body["router"])[0] == ("emb-a", "provider_fault", "provider_timeout")


def _policies(tmp_path: Path, denied: str) -> Path:
    (tmp_path / "us.yaml").write_text(
        'jurisdiction: us\nversion: "t-1"\ndefault: allow\nrules: []\n'
    )
    (tmp_path / "eu.yaml").write_text(
        'jurisdiction: eu\nversion: "t-2"\ndefault: allow\nrules:\n'
        "  - id: no-emb-a\n    effect: deny\n    reason: test\n"
        f"    match:\n      models: [{denied}]\n"
    )
    return tmp_path


async def test_a_policy_denied_embedding_model_is_skipped_and_never_called(
    tmp_path: Path,
) -> None:
    """Under a jurisdiction that denies the route's first model, the second serves and the
    denied one's upstream never sees a call; the denial is in the headers."""
    async with bed(_policies(tmp_path, "emb-a")) as b:
        got = await b.client(**{"X-Router-Jurisdiction": "eu"}).embeddings.with_raw_response.create(
            model="embed", input="x", encoding_format="float"
        )
        assert got.parse().model == "emb-b"
        assert [c.model for c in b.wall.calls] == ["up-emb-b"]
        assert got.headers["X-Router-Policy-Denied"] == "emb-a=no-emb-a"
        assert got.headers["X-Router-Jurisdiction"] == "us,eu"  # the header narrows


async def test_a_policy_denied_embedding_model_alone_is_a_403_naming_the_rule(
    tmp_path: Path,
) -> None:
    """Asked for by name where policy denies it: 403 `policy_denied` with the rule, and no call."""
    async with bed(_policies(tmp_path, "emb-a")) as b:
        with pytest.raises(openai.PermissionDeniedError) as info:
            await b.client(**{"X-Router-Jurisdiction": "eu"}).embeddings.create(
                model="emb-a", input="x"
            )
        assert info.value.code == "policy_denied"
        assert isinstance(info.value.body, dict)
        assert info.value.body["rule_id"] == "no-emb-a"
        assert b.wall.calls == []


async def test_an_open_breaker_is_skipped_without_a_call() -> None:
    """Two faults open the first target's breaker (fail_max 2): the next request skips it
    with `breaker_open`, calling only the second target."""
    async with bed() as b:
        b.wall.script("up-emb-a", Status(503))
        for _ in range(2):
            status, _body, _ = await b.post({"model": "embed", "input": "x"})
            assert status == 200
        calls = len(b.wall.calls_to("up-emb-a"))
        status, body, _ = await b.post({"model": "embed", "input": "x"})
        assert status == 200
        assert _attempts(body["router"]) == [
            ("emb-a", "skipped", "breaker_open"),
            ("emb-b", "success", "ok"),
        ]
        assert len(b.wall.calls_to("up-emb-a")) == calls
        _, breakers = await b.get("/admin/breakers")
        assert {r["key"]: r["state"] for r in breakers["breakers"]}["pa/emb-a"] == "open"


async def test_usage_and_cost_reach_the_router_object_and_the_metrics() -> None:
    """Cost is input tokens at the model's input price (no output tokens); the tokens and
    cost counters and the request counter move by as much."""
    async with bed() as b:
        b.wall.script("up-emb-a", Answer(input_tokens=1000))
        status, body, _ = await b.post({"model": "emb-a", "input": TEXTS})
        assert status == 200
        assert body["usage"] == {"prompt_tokens": 1000, "total_tokens": 1000}
        assert body["router"]["cost_usd"] == pytest.approx(1000 * 100.0 / 1e6)
        _, text = await b.get("/metrics")
        labels = {"provider": "pa", "model": "emb-a"}
        assert _metric(text, "router_tokens_total", type="input", **labels) == 1000
        assert _metric(text, "router_tokens_total", type="output", **labels) == 0
        assert _metric(text, "router_cost_usd_total", **labels) == pytest.approx(0.1)
        assert (
            _metric(text, "router_requests_total", kind="model", target="emb-a", outcome="ok") == 1
        )
        assert _metric(text, "router_upstream_attempts_total", outcome="success", **labels) == 1


async def test_one_request_completed_line_per_request() -> None:
    """Each request, served or refused, writes one `request.completed` line: who served,
    after which calls, its tokens and cost (input only), not streamed."""
    async with bed() as b:
        b.wall.script("up-emb-a", [Status(503), Answer(input_tokens=40)])
        with capture_logs() as logs:
            await b.post({"model": "embed", "input": ["a", "b"]})
            await b.post({"model": "chat-a", "input": "a"})
        lines = [e for e in logs if e["event"] == "request.completed"]
        assert len(lines) == 2
        served, refused = lines
        assert served["path"] == "/v1/embeddings"
        assert served["status"] == 200
        assert served["requested_model"] == "embed"
        assert (served["kind"], served["target"]) == ("route", "embed")
        assert (served["served_model"], served["provider"]) == ("emb-b", "pb")
        assert (served["attempts"], served["attempted"]) == (2, ["pa", "pb"])
        assert (served["input_tokens"], served["output_tokens"]) == (11, 0)
        assert served["cost_usd"] == pytest.approx(11 * 200.0 / 1e6)
        assert served["stream"] is False
        assert "error_code" not in served
        assert (refused["status"], refused["error_code"]) == (400, "wrong_model_kind")


async def test_the_attempt_span_is_an_embeddings_operation() -> None:
    """The upstream call's CLIENT span is named and typed as an embeddings operation."""
    async with bed() as b:
        await b.post({"model": "emb-a", "input": "x"})
        b.app[SERVICES].telemetry.force_flush()
        spans = [s for s in b.exporter.get_finished_spans() if s.name.endswith("up-emb-a")]
        assert [s.name for s in spans] == ["embeddings up-emb-a"]
        attributes = dict(spans[0].attributes or {})
        assert attributes[semconv.GEN_AI_OPERATION_NAME] == "embeddings"
        assert attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 11
        assert attributes[semconv.ROUTER_MODEL] == "emb-a"


def test_the_embeddings_operation_name_is_the_semconv_value() -> None:
    """`OPERATION_EMBEDDINGS` is the GenAI semantic conventions' own value."""
    assert (
        gen_ai_attributes.GenAiOperationNameValues.EMBEDDINGS.value == semconv.OPERATION_EMBEDDINGS
    )


# --- dimensions against the catalog -------------------------------------------------------------


async def test_a_target_with_smaller_vectors_than_asked_is_skipped() -> None:
    """A route's target whose configured `dimensions` are fewer than asked is skipped without
    a call; asked of it alone, more than it has is a 400 naming `dimensions`."""
    async with bed() as b:
        status, body, _ = await b.post({"model": "small-first", "input": "x", "dimensions": 6})
        assert status == 200
        assert _attempts(body["router"]) == [
            ("emb-small", "skipped", "dimensions_too_large"),
            ("emb-a", "success", "ok"),
        ]
        status, body, _ = await b.post({"model": "emb-small", "input": "x", "dimensions": 6})
        assert (status, body["error"]["param"]) == (400, "dimensions")
        assert b.wall.calls_to("up-emb-small") == []


# --- kinds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "kind"),
    [("chat-a", "a chat model"), ("talk", "a route of chat"), ("fusion/solo", "fusion panel")],
)
async def test_a_chat_model_route_or_panel_asked_to_embed_is_a_400(model: str, kind: str) -> None:
    """Naming a chat model, route or panel on /v1/embeddings: 400 `wrong_model_kind`, nothing
    called; an unknown name stays a 404."""
    async with bed() as b:
        with pytest.raises(openai.BadRequestError) as info:
            await b.client().embeddings.create(model=model, input="x")
        assert info.value.code == "wrong_model_kind"
        assert kind in info.value.message
        assert isinstance(info.value.body, dict)
        assert (info.value.body["param"], info.value.body["model_kind"]) == ("model", "chat")
        assert b.wall.calls == []
        with pytest.raises(openai.NotFoundError):
            await b.client().embeddings.create(model="no-such-model", input="x")


@pytest.mark.parametrize("model", ["emb-a", "embed"])
async def test_an_embedding_model_or_route_asked_to_chat_is_a_400(model: str) -> None:
    """Naming an embedding model or route on /v1/chat/completions (whole or streamed): 400
    `wrong_model_kind`, nothing called."""
    async with bed() as b:
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as info:
                await b.client().chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hi"}], stream=stream
                )
            assert info.value.code == "wrong_model_kind"
            assert "/v1/embeddings" in info.value.message
        assert b.wall.calls == []


async def test_an_embedding_model_named_in_a_fusion_panel_is_a_400() -> None:
    """A request's own panel that seats an embedding model: 400 naming the seat, no call."""
    async with bed() as b:
        status, body, _ = await b.post(
            {
                "model": "fusion",
                "messages": [{"role": "user", "content": "hi"}],
                "fusion": {"panelists": ["chat-a", "emb-a"], "synthesizers": ["chat-a"]},
            },
            path="/v1/chat/completions",
        )
        assert status == 400
        assert (body["error"]["code"], body["error"]["param"]) == (
            "wrong_model_kind",
            "fusion.panelists[1]",
        )
        assert b.wall.calls == []


async def test_models_lists_each_models_kind() -> None:
    """`/v1/models` says each model's and route's kind (and an embedding model's size)."""
    async with bed() as b:
        status, body = await b.get("/v1/models")
        assert status == 200
        entries = {e["id"]: e["router"] for e in body["data"]}
        assert entries["emb-a"]["model_kind"] == "embedding"
        assert entries["emb-a"]["dimensions"] == 8
        assert entries["emb-a"]["capabilities"] == []
        assert "dimensions" not in entries["emb-b"]
        assert entries["chat-a"]["model_kind"] == "chat"
        assert "dimensions" not in entries["chat-a"]
        assert (entries["embed"]["kind"], entries["embed"]["model_kind"]) == (
            "route",
            "embedding",
        )
        assert entries["talk"]["model_kind"] == "chat"
        assert entries["fusion/solo"]["model_kind"] == "chat"


# --- the embedded default's simulator -----------------------------------------------------------


async def test_the_embedded_defaults_simulated_embedding_models_are_deterministic() -> None:
    """On the embedded default, each embedding model answers unit vectors from a hash of the
    text: the same text, the same vector (float and base64 alike), different texts differ;
    `dimensions` is honoured, and without it the catalog's size."""
    async with serve(create_app(load_config(None), environ={})) as server:
        url = str(server.make_url("")).rstrip("/")
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as c:
            for model in ("text-embedding-3-large", "gemini-embedding-001"):
                one = await c.embeddings.create(
                    model=model, input=["alpha", "beta", "alpha"], dimensions=64
                )
                again = await c.embeddings.create(
                    model=model, input="alpha", dimensions=64, encoding_format="float"
                )
                a, b, a2 = (d.embedding for d in one.data)
                assert a == a2 == again.data[0].embedding
                assert a != b
                assert len(a) == 64
                assert math.fsum(v * v for v in a) == pytest.approx(1.0, abs=1e-5)
                full = await c.embeddings.create(model=model, input="alpha")
                assert len(full.data[0].embedding) == 3072
                assert one.model_extra["router"]["cost_usd"] > 0  # type: ignore[index]
            with pytest.raises(openai.BadRequestError) as info:
                await c.embeddings.create(model="gpt-5.5", input="alpha")
            assert info.value.code == "wrong_model_kind"


def test_the_simulators_vectors_depend_on_model_and_text_only() -> None:
    """The simulator's vector is a function of (model, text, size): float32 values, unit
    length; another model or text gives another vector."""
    v = embedding("m", "text", 16)
    assert v == embedding("m", "text", 16)
    assert v != embedding("m2", "text", 16)
    assert v != embedding("m", "text2", 16)
    assert unpack_float32(pack_float32(v)) == v
    assert math.fsum(x * x for x in v) == pytest.approx(1.0, abs=1e-6)


def test_the_embedded_default_lists_its_embedding_models_on_sim_providers() -> None:
    """Two embedding models, with their sizes, kept apart from the chat names and panels."""
    catalog = Catalog.from_config(load_config(None).config)
    embedding_models = {m.id: m for m in catalog.models.values() if m.kind == "embedding"}
    assert set(embedding_models) == {"text-embedding-3-large", "gemini-embedding-001"}
    assert {m.dimensions for m in embedding_models.values()} == {3072}
    assert set(catalog.embedding_chains) == set(embedding_models)
    assert not set(catalog.chat_chains) & set(embedding_models)
    for panel in catalog.panels.values():
        assert not set(panel.panelists + panel.judges + panel.synthesizers) & set(embedding_models)


# --- request validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"model": "emb-a", "input": [1, 2, 3]}, "unsupported_content", "input"),
        ({"model": "emb-a", "input": [[1, 2], [3]]}, "unsupported_content", "input"),
        ({"model": "emb-a", "input": []}, "invalid_request", "input"),
        ({"model": "emb-a", "input": ""}, "invalid_request", "input"),
        ({"model": "emb-a", "input": ["a", ""]}, "invalid_request", "input[1]"),
        ({"model": "emb-a", "input": ["a", None]}, "invalid_request", "input[1]"),
        ({"model": "emb-a", "input": {"text": "a"}}, "invalid_request", "input"),
        ({"model": "emb-a"}, "invalid_request", "input"),
        ({"model": "emb-a", "input": ["a"] * (MAX_INPUTS + 1)}, "invalid_request", "input"),
        ({"model": "", "input": "a"}, "invalid_request", "model"),
        ({"input": "a"}, "invalid_request", "model"),
        ({"model": "emb-a", "input": "a", "dimensions": 0}, "invalid_request", "dimensions"),
        ({"model": "emb-a", "input": "a", "dimensions": "8"}, "invalid_request", "dimensions"),
        ({"model": "emb-a", "input": "a", "dimensions": True}, "invalid_request", "dimensions"),
        (
            {"model": "emb-a", "input": "a", "encoding_format": "int8"},
            "invalid_request",
            "encoding_format",
        ),
        ({"model": "emb-a", "input": "a", "user": 7}, "invalid_request", "user"),
        (
            {"model": "emb-a", "input": "a", "task_type": "x", "truncate": 1},
            "unsupported_parameter",
            "task_type",
        ),
        ({"model": "emb-a", "input": "a", "api_key": "sk-x"}, "forbidden_field", "api_key"),
        ({"model": "emb-a", "input": "a", "base_url": "http://x"}, "forbidden_field", "base_url"),
    ],
)
async def test_bad_input_is_a_400_and_nothing_goes_upstream(
    body: dict[str, Any], code: str, param: str
) -> None:
    """Strict input: each problem a 400 with its stable code and the field it is about."""
    async with bed() as b:
        status, got, _ = await b.post(body)
        assert status == 400
        assert (got["error"]["code"], got["error"]["param"]) == (code, param)
        assert b.wall.calls == []


async def test_unknown_fields_are_all_named() -> None:
    """Every unknown field is named in the message."""
    async with bed() as b:
        _, got, _ = await b.post({"model": "emb-a", "input": "a", "zeta": 1, "alpha": 2})
        assert "alpha, zeta" in got["error"]["message"]


async def test_nulls_are_the_defaults_and_2048_inputs_are_taken() -> None:
    """`dimensions`, `encoding_format` and `user` as null are the defaults; 2048 inputs are
    within the limit."""
    async with bed() as b:
        body = {"model": "emb-a", "input": ["t"] * MAX_INPUTS}
        status, got, _ = await b.post(
            {**body, "dimensions": None, "encoding_format": None, "user": None}
        )
        assert status == 200
        assert len(got["data"]) == MAX_INPUTS
        assert isinstance(got["data"][0]["embedding"], list)
        assert b.wall.calls[-1].body == {"model": "up-emb-a", "input": ["t"] * MAX_INPUTS}


async def test_duplicate_keys_and_non_json_are_refused() -> None:
    """The body is read as strictly as a chat request's."""
    async with bed() as b, aiohttp.ClientSession() as http:
        for data, code in [
            (b'{"model": "emb-a", "model": "emb-b", "input": "a"}', "duplicate_key"),
            (b"not json", "invalid_json"),
            (b'["a"]', "invalid_json"),
        ]:
            async with http.post(
                f"{b.url}/v1/embeddings",
                data=data,
                headers={"Content-Type": "application/json"},
            ) as response:
                assert response.status == 400
                assert (await response.json())["error"]["code"] == code


# --- config ----------------------------------------------------------------------------------


_BASE = """
jurisdiction: us
providers:
  an:
    protocol: anthropic
    base_url: https://api.anthropic.example
    region: us
  oa:
    protocol: openai
    base_url: https://api.openai.example/v1
    region: us
models:
  chat:
    provider: oa
    upstream_id: c
    vendor: V
    origin: us
    tier: strong
    context_window: 1000
    price: {input_per_mtok: 1, output_per_mtok: 1}
  emb:
    kind: embedding
    provider: oa
    upstream_id: e
    vendor: V
    origin: us
    tier: budget
    context_window: 1000
    price: {input_per_mtok: 1}
"""


def _problems(extra: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml12.loads(_BASE + extra), "t.yaml")
    return [(p.path, p.message) for p in info.value.problems]


def test_the_base_config_is_valid() -> None:
    """(The fixture the config cases below break one thing of.)"""
    config = parse_config(yaml12.loads(_BASE), "t.yaml")
    assert config.models["emb"].kind == "embedding"
    assert config.models["chat"].kind == "chat"


def test_an_anthropic_embedding_model_is_a_config_error() -> None:
    """Anthropic has no embeddings API: an embedding model on its protocol is refused at load."""
    extra = """  claude-emb:
    kind: embedding
    provider: an
    upstream_id: x
    vendor: Anthropic
    origin: us
    tier: budget
    context_window: 1000
    price: {input_per_mtok: 1}
"""
    [(path, message)] = _problems(extra)
    assert path == "models.claude-emb.kind"
    assert "anthropic protocol has no embeddings API" in message


@pytest.mark.parametrize(
    ("extra", "path", "fragment"),
    [
        ("routes:\n  mixed: [chat, emb]\n", "routes.mixed", "mixes chat and embedding"),
        (
            "panels:\n  p:\n    panelists: [chat, emb]\n    synthesizers: [chat]\n",
            "panels.p.panelists[1]",
            "embedding model",
        ),
        (
            "panels:\n  p:\n    panelists: [chat]\n    synthesizers: [emb]\n",
            "panels.p.synthesizers[0]",
            "embedding model",
        ),
    ],
)
def test_routes_and_panels_keep_the_kinds_apart(extra: str, path: str, fragment: str) -> None:
    """A route is of one kind; a fusion panel seats chat models only."""
    [(got_path, message)] = _problems(extra)
    assert got_path == path
    assert fragment in message


@pytest.mark.parametrize(
    ("key", "value", "path", "fragment"),
    [
        ("dimensions", "8", "models.x.dimensions", "only an embedding model"),
        ("price", "{input_per_mtok: 1}", "models.x.price.output_per_mtok", "required key"),
        ("kind", "vector", "models.x.kind", "'chat' or 'embedding'"),
    ],
)
def test_a_chat_model_takes_no_dimensions_and_needs_an_output_price(
    key: str, value: str, path: str, fragment: str
) -> None:
    """The chat model's config: no `dimensions`, an output price, a known `kind`."""
    fields = {
        "provider": "oa",
        "upstream_id": "x",
        "vendor": "V",
        "origin": "us",
        "tier": "strong",
        "context_window": "1000",
        "price": "{input_per_mtok: 1, output_per_mtok: 1}",
        key: value,
    }
    extra = "  x:\n" + "".join(f"    {k}: {v}\n" for k, v in fields.items())
    [(got_path, message)] = _problems(extra)
    assert got_path == path
    assert fragment in message


@pytest.mark.parametrize(
    ("line", "path"),
    [
        ("max_output_tokens: 10", "models.x.max_output_tokens"),
        ("thinking: adaptive", "models.x.thinking"),
        ("structured_output: native", "models.x.structured_output"),
        ("capabilities: [tools]", "models.x.capabilities"),
    ],
)
def test_an_embedding_model_takes_no_chat_keys(line: str, path: str) -> None:
    """Keys that only mean something for chat are refused on an embedding model, as is an
    output price."""
    extra = f"""  x:
    kind: embedding
    provider: oa
    upstream_id: x
    vendor: V
    origin: us
    tier: budget
    context_window: 1000
    price: {{input_per_mtok: 1}}
    {line}
"""
    [(got_path, _)] = _problems(extra)
    assert got_path == path
    priced = extra.replace("{input_per_mtok: 1}", "{input_per_mtok: 1, output_per_mtok: 2}")
    assert ("models.x.price.output_per_mtok", "an embedding model bills input tokens only") in (
        _problems(priced)
    )


def test_embedding_models_are_never_fusion_substitutes() -> None:
    """The substitute pool of a panel leaves embedding models out, even as its only other
    models (so a seat is left empty rather than filled by one)."""
    from router.fusion.plan import plan_panel
    from router.fusion.resolve import availability_for

    config = parse_config(
        yaml12.loads(_BASE + "panels:\n  p:\n    panelists: [chat]\n    synthesizers: [chat]\n"),
        "t.yaml",
    )
    catalog = Catalog.from_config(config)
    availability = availability_for(
        catalog.models, lambda m: "denied" if m.id == "chat" else None, lambda _m: False
    )
    plan = plan_panel(catalog.panels["p"], catalog.models, availability)
    assert [(s.wanted, s.model) for s in plan.seats] == [("chat", None)]
    assert availability("emb") == "an embedding model"


# --- the adapters' contract ---------------------------------------------------------------------


ADAPTERS = {
    "openai": (openai_server.make_app, "/v1", OpenAIProvider),
    "gemini": (gemini_server.make_app, "/v1beta", GeminiProvider),
}


@asynccontextmanager
async def adapter(protocol: str) -> AsyncIterator[tuple[Wall, EmbeddingProvider]]:
    """An adapter against its own fake, as the provider contract suite builds them."""
    make_app, base_path, kind = ADAPTERS[protocol]
    wall = Wall()
    async with serve(make_app(wall)) as server, UpstreamClient() as session:
        base = str(server.make_url(base_path)).rstrip("/")
        yield wall, kind("up", session, base, Secret("sk-CANARY-contract"))


def embed_call(texts: tuple[str, ...], dimensions: int | None = None) -> EmbeddingCall:
    request = EmbeddingRequest("m", texts, dimensions)
    return EmbeddingCall(
        request,
        "m1",
        Timeouts(connect=1.0, first_byte=0.5, idle=0.5, total=5.0),
        deadline=time.monotonic() + 5.0,
    )


@pytest.mark.parametrize("protocol", list(ADAPTERS))
async def test_each_adapter_embeds_in_input_order_with_usage(protocol: str) -> None:
    """`embed` answers one vector per text, in order, the size asked, with the upstream's
    token count (and is an `EmbeddingProvider`; Anthropic's adapter is not)."""
    async with adapter(protocol) as (wall, provider):
        assert isinstance(provider, EmbeddingProvider)
        wall.script("m1", Answer(input_tokens=17))
        got = await provider.embed(embed_call(("a", "b"), 3))
        assert got.vectors == tuple(tuple(fake_vector("m1", t, 3)) for t in "ab")
        assert (got.usage.input_tokens, got.usage.output_tokens) == (17, 0)
    async with UpstreamClient() as session:
        anthropic = AnthropicProvider("an", session, "https://api.anthropic.example", None)
        assert isinstance(anthropic.name, str)
        assert not isinstance(anthropic, EmbeddingProvider)


@pytest.mark.parametrize("protocol", list(ADAPTERS))
@pytest.mark.parametrize(
    ("behaviour", "error", "outcome"),
    [
        (Status(500), ProviderUnavailable, "provider_fault"),
        (Status(429, "slow down", retry_after="7"), ProviderRateLimited, "throttled"),
        (Status(400, "bad field"), ProviderRejected, "caller_fault"),
        (Status(401, "bad key"), ProviderAuthFailed, "provider_fault"),
        (Malformed(), ProviderMalformed, "provider_fault"),
        (Reset(), ProviderUnavailable, "provider_fault"),
        (Hang(3), ProviderTimeout, "provider_fault"),
    ],
)
async def test_each_adapters_failures_map_through_the_one_place(
    protocol: str, behaviour: Any, error: type[ProviderError], outcome: str
) -> None:
    """Every upstream outcome of an embeddings call is classified as a chat call's is, by
    `error_for_status` and `map_upstream_errors`; no key in the message."""
    async with adapter(protocol) as (wall, provider):
        wall.script("m1", behaviour)
        with pytest.raises(error) as info:
            await provider.embed(embed_call(("a",)))
        assert info.value.outcome.value == outcome
        assert "CANARY" not in str(info.value)
        if isinstance(behaviour, Status) and behaviour.retry_after:
            assert isinstance(info.value, ProviderRateLimited)
            assert info.value.retry_after == 7.0


# --- the vector checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vectors", "fragment"),
    [
        ([[0.1, 0.2]], "1 vectors for 2 inputs"),
        ([[0.1, 0.2], [0.1]], "different or no size"),
        ([[0.1, 0.2], []], "different or no size"),
        ([[0.1, "x"], [0.1, 0.2]], "not a vector of numbers"),
        ([[0.1, 0.2], None], "not a vector of numbers"),
        ([[0.1, 0.2], "not base64!"], "not a vector of numbers"),
        ([[0.1, 0.2], base64.b64encode(b"abc").decode()], "not a vector of numbers"),
        ([[0.1, 0.2], pack_float32([math.inf, 0.0])], "not a vector of numbers"),
        ([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]], "3-dimensional vectors, not the 2 asked"),
    ],
)
def test_off_shape_vectors_are_malformed(vectors: list[Any], fragment: str) -> None:
    """What the caller could not use is the provider's malformed answer, never passed on."""
    with pytest.raises(ProviderMalformed) as info:
        checked_vectors(vectors, 2, 2, "up")
    assert fragment in info.value.message


def test_numbers_and_base64_read_alike() -> None:
    """A vector as numbers and the same as base64 float32 read to the same floats."""
    vector = fake_vector("m", "t")
    assert checked_vectors([vector, pack_float32(vector)], 2, None, "up") == (
        tuple(vector),
        tuple(vector),
    )
