"""Capabilities in the catalog (issue 16): a model declares what it can do (tools, vision,
json_schema, reasoning); a route skips a target that lacks one the request needs without
calling it, says so in its attempts and in `explain`, and with no capable target left the
request gets a 400 `model_lacks_capability`. A model that declares nothing can do everything.
`/v1/models` shows capabilities; `structured_output` reaches the provider call."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import openai
import pytest

from router.app import create_app
from router.catalog import Catalog
from router.config import load_config
from router.errors import ConfigError
from router.explain import render_text
from router.protocol_support import CAPABILITIES
from router.routing import Router
from router.types import ChatRequest, Completion, Message, ProviderCall, StreamEvent, Usage
from tests.fakes import openai_server
from tests.fakes.script import Answer, Wall
from tests.helpers import TEST_POLICIES, config_from_yaml, serve

PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "Weather",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
HI: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]
LOOK: list[dict[str, Any]] = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": PIXEL}},
        ],
    }
]
# what each capability takes to be needed: (request fields, messages, the 400's `param`)
NEEDS: dict[str, tuple[dict[str, Any], list[dict[str, Any]], str]] = {
    "tools": ({"tools": TOOLS}, HI, "tools"),
    "vision": ({}, LOOK, "messages[].content[].image_url"),
    "json_schema": ({"response_format": SCHEMA}, HI, "response_format"),
    "reasoning": ({"reasoning_effort": "high"}, HI, "reasoning_effort"),
}


def _model(name: str, capabilities: str | None) -> str:
    listed = f"\n    capabilities: {capabilities}" if capabilities is not None else ""
    return f"""
  {name}:
    provider: po
    upstream_id: up-{name}
    vendor: Vendor-{name}
    origin: us
    tier: strong
    context_window: 8000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}{listed}"""


def _yaml(upstream: str) -> str:
    return f"""
jurisdiction: us
policies: {TEST_POLICIES}
providers:
  po:
    protocol: openai
    base_url: {upstream}/v1
    allow_http: true
    region: us
models:{_model("plain", "[]")}{_model("seeing", "[vision]")}{_model("undeclared", None)}{
        _model("full", "[tools, vision, json_schema, reasoning, web_search]")
    }
routes:
  plain-first: [plain, full]
  plain-only: [plain]
  lacking: [plain, seeing]
  undeclared-first: [undeclared, full]
"""


@asynccontextmanager
async def _sidecar() -> AsyncIterator[tuple[str, Wall]]:
    """A sidecar whose four models sit on one fake OpenAI server, each answering its name."""
    wall = Wall()
    for name in ("plain", "seeing", "undeclared", "full"):
        wall.script(f"up-{name}", Answer(f"from {name}"))
    async with serve(openai_server.make_app(wall)) as upstream:
        loaded = config_from_yaml(_yaml(str(upstream.make_url("")).rstrip("/")))
        async with serve(create_app(loaded, environ={})) as server:
            yield str(server.make_url("")).rstrip("/"), wall


async def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/chat/completions", json=body) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


async def _get(url: str, path: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}{path}") as response:
        return response.status, await response.json()


def _attempts(body: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(a["model"], a["code"], a.get("capability")) for a in body["router"]["attempts"]]


@pytest.mark.parametrize("capability", list(NEEDS))
async def test_a_route_skips_a_target_that_lacks_the_capability_without_calling_it(
    capability: str,
) -> None:
    """The first target lacks it: never called; its skip names the capability; the next serves."""
    extra, messages, _ = NEEDS[capability]
    async with _sidecar() as (url, wall):
        status, body, headers = await _post(
            url, {"model": "plain-first", "messages": messages, **extra}
        )
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == "from full"
        assert [c.model for c in wall.calls] == ["up-full"]
        assert _attempts(body) == [
            ("plain", "model_lacks_capability", capability),
            ("full", "ok", None),
        ]
        assert body["router"]["attempts"][0]["outcome"] == "skipped"
        assert (headers["X-Router-Attempts"], headers["X-Router-Attempted"]) == ("1", "po")


async def test_a_streamed_request_skips_it_too_and_its_last_chunk_says_so() -> None:
    """The same skip on the streaming path, reported in the usage chunk's attempts."""
    async with _sidecar() as (url, wall), aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/v1/chat/completions",
            json={
                "model": "plain-first",
                "messages": LOOK,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ) as response:
            assert response.status == 200
            raw = (await response.read()).decode()
        chunks = [json.loads(p[6:]) for p in raw.split("\n\n") if p.startswith("data: {")]
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        assert text.strip() == "from full"
        assert _attempts(chunks[-1]) == [
            ("plain", "model_lacks_capability", "vision"),
            ("full", "ok", None),
        ]
        assert [c.model for c in wall.calls] == ["up-full"]


@pytest.mark.parametrize(
    ("extra", "messages"),
    [
        ({}, HI),
        ({"reasoning_effort": "none"}, HI),
        ({"response_format": {"type": "json_object"}}, HI),
    ],
    ids=["text", "reasoning-none", "json-object"],
)
async def test_a_request_that_needs_nothing_is_served_by_a_text_only_model(
    extra: dict[str, Any], messages: list[dict[str, Any]]
) -> None:
    """Plain text, `reasoning_effort: none` and JSON mode need no capability."""
    async with _sidecar() as (url, wall):
        status, body, _ = await _post(url, {"model": "plain-only", "messages": messages, **extra})
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == "from plain"
        assert [c.model for c in wall.calls] == ["up-plain"]


@pytest.mark.parametrize("capability", list(NEEDS))
async def test_no_capable_target_is_a_400_naming_the_capability_and_the_models(
    capability: str,
) -> None:
    """Through the official SDK: a BadRequestError with our stable code; nothing was called."""
    extra, messages, param = NEEDS[capability]
    route = "lacking" if capability != "vision" else "plain-only"
    async with _sidecar() as (url, wall):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        async with client:
            with pytest.raises(openai.BadRequestError) as info:
                await client.chat.completions.create(model=route, messages=messages, **extra)
        error = info.value
        assert error.code == "model_lacks_capability"
        assert error.param == param
        assert isinstance(error.body, dict)
        assert error.body["capability"] == capability
        lacking = ["plain", "seeing"] if route == "lacking" else ["plain"]
        assert error.body["models"] == lacking
        for model in lacking:
            assert f"{model} lacks '{capability}'" in error.message
        assert error.response.headers["X-Router-Attempts"] == "0"
        assert wall.calls == []


async def test_with_several_needs_the_400_names_the_first_targets_first_lack() -> None:
    """Tools and an image to [plain, seeing]: plain lacks both, seeing lacks tools."""
    async with _sidecar() as (url, wall):
        status, body, _ = await _post(url, {"model": "lacking", "messages": LOOK, "tools": TOOLS})
        assert status == 400, body
        error = body["error"]
        assert (error["code"], error["capability"], error["param"]) == (
            "model_lacks_capability",
            "tools",
            "tools",
        )
        assert error["models"] == ["plain", "seeing"]
        assert "plain lacks 'tools', 'vision'; seeing lacks 'tools'" in error["message"]
        assert wall.calls == []


@pytest.mark.parametrize("capability", list(NEEDS))
async def test_a_model_that_declares_no_capabilities_is_never_skipped_for_one(
    capability: str,
) -> None:
    extra, messages, _ = NEEDS[capability]
    async with _sidecar() as (url, wall):
        status, body, _ = await _post(
            url, {"model": "undeclared-first", "messages": messages, **extra}
        )
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == "from undeclared"
        assert _attempts(body) == [("undeclared", "ok", None)]
        assert [c.model for c in wall.calls] == ["up-undeclared"]


async def test_a_fusion_panelist_that_lacks_the_capability_is_planned_out() -> None:
    """The plan leaves out a panelist the catalog says cannot see the images, before any
    call, and says why; it is never called."""
    async with _sidecar() as (url, wall):
        status, body, _ = await _post(
            url,
            {
                "model": "fusion",
                "fusion": {"panelists": ["plain", "full"], "synthesizers": ["full"], "quorum": 1},
                "messages": LOOK,
            },
        )
        assert status == 200, body
        assert wall.calls_to("up-plain") == []
        assert wall.calls_to("up-full")
        seats = {s["wanted"]: s for s in body["fusion"]["plan"]["seats"]}
        assert "lacks 'vision'" in seats["plain"]["reason"], seats


async def test_a_fusion_whose_synthesizers_lack_tools_is_a_400_before_any_call() -> None:
    """Panelists deliberate without tools (any may sit); the synthesizer answers with them."""
    async with _sidecar() as (url, wall):
        status, body, _ = await _post(
            url,
            {
                "model": "fusion",
                "fusion": {"panelists": ["plain", "full"], "synthesizers": ["plain"], "quorum": 1},
                "messages": HI,
                "tools": TOOLS,
            },
        )
        assert status == 400, body
        assert (body["error"]["code"], body["error"]["capability"]) == (
            "model_lacks_capability",
            "tools",
        )
        assert body["error"]["models"] == ["plain"]
        assert wall.calls == []


async def test_explain_shows_the_skip_for_a_request_that_needs_a_capability() -> None:
    async with _sidecar() as (url, _wall):
        status, result = await _get(url, "/admin/explain?model=plain-first&needs=tools")
        assert status == 200, result
        assert result["needs"] == ["tools"]
        chain = {d["model"]: d for d in result["chain"]}
        assert (chain["plain"]["lacks"], chain["full"]["lacks"]) == (["tools"], [])
        assert chain["plain"]["capabilities"] == []
        assert chain["full"]["capabilities"] == list(CAPABILITIES)
        assert (result["would_try"], result["outcome"]) == (["full"], "routable")
        text = render_text(result)
        assert "for a request that needs: tools" in text
        assert "skipped: lacks tools (model_lacks_capability)" in text

        status, result = await _get(url, "/admin/explain?model=lacking&needs=json_schema,tools")
        assert status == 200, result
        assert result["needs"] == ["tools", "json_schema"]
        assert (result["would_try"], result["outcome"]) == ([], "model_lacks_capability")
        assert [d["lacks"] for d in result["chain"]] == [["tools", "json_schema"]] * 2


async def test_explain_without_needs_shows_capabilities_and_skips_nothing() -> None:
    async with _sidecar() as (url, _wall):
        status, result = await _get(url, "/admin/explain?model=undeclared-first")
        assert status == 200, result
        assert result["needs"] == []
        assert result["would_try"] == ["undeclared", "full"]
        declared = {d["model"]: d["capabilities_declared"] for d in result["chain"]}
        assert declared == {"undeclared": False, "full": True}
        assert "(not declared: all assumed)" in render_text(result)


async def test_explain_refuses_an_unknown_capability_name() -> None:
    async with _sidecar() as (url, _wall):
        status, result = await _get(url, "/admin/explain?model=plain&needs=tools,video")
        assert status == 400
        assert (result["error"]["code"], result["error"]["param"]) == ("invalid_request", "needs")
        assert "'video'" in result["error"]["message"]


async def test_models_lists_each_models_capabilities_and_a_routes_union() -> None:
    async with _sidecar() as (url, _wall):
        status, body = await _get(url, "/v1/models")
        assert status == 200
        listed = {m["id"]: m["router"].get("capabilities") for m in body["data"]}
        assert listed["plain"] == []
        assert listed["seeing"] == ["vision"]
        assert listed["undeclared"] == list(CAPABILITIES)  # declares none: all of them
        assert listed["full"] == list(CAPABILITIES)
        assert listed["lacking"] == ["vision"]  # what at least one target can do
        assert listed["plain-first"] == list(CAPABILITIES)


def _config_with(model_lines: str) -> str:
    return _yaml("http://127.0.0.1:9").replace(
        "    price: {input_per_mtok: 1.0, output_per_mtok: 2.0}\n    capabilities: [vision]",
        f"    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}\n{model_lines}",
    )


@pytest.mark.parametrize(
    ("lines", "path", "fragment"),
    [
        (
            "    capabilities: [vision, video]",
            "models.seeing.capabilities[1]",
            "unknown capability 'video' (known: tools, vision, json_schema, reasoning, web_search)",
        ),
        (
            "    capabilities: [vision, tools, vision]",
            "models.seeing.capabilities",
            "'vision' twice",
        ),
        ("    capabilities: vision", "models.seeing.capabilities", "list"),
        (
            "    capabilities: [vision]\n    structured_output: json",
            "models.seeing.structured_output",
            "'native' or 'tool'",
        ),
    ],
)
def test_config_refuses_unknown_capabilities_and_bad_structured_output(
    lines: str, path: str, fragment: str
) -> None:
    text = _config_with(lines)
    assert lines in text  # the replacement happened
    with pytest.raises(ConfigError) as info:
        config_from_yaml(text)
    [problem] = info.value.problems
    assert problem.path == path
    assert fragment in problem.message
    assert problem.line is not None


def test_the_embedded_default_declares_capabilities_for_every_model() -> None:
    """Frontier models can do everything; the budget ones what they can, realistically."""
    catalog = Catalog.from_config(load_config(None).config)
    assert all(m.capabilities_declared for m in catalog.models.values())
    full = [m.id for m in catalog.models.values() if m.capability_list == list(CAPABILITIES)]
    assert {m.id for m in catalog.models.values() if m.tier == "frontier"} <= set(full)
    assert catalog.models["deepseek-v4-pro"].capability_list == ["tools", "reasoning"]
    assert "vision" in catalog.models["kimi-k2.6"].capabilities
    assert catalog.models["claude-opus-4.8"].structured_output == "native"
    assert catalog.models["gpt-5.5"].structured_output == "tool"


class _Recorder:
    """A provider that records each call it gets and answers it."""

    def __init__(self, name: str, protocol: str) -> None:
        self.name, self.protocol = name, protocol
        self.calls: list[ProviderCall] = []

    async def complete(self, call: ProviderCall, /) -> Completion:
        self.calls.append(call)
        return Completion("{}", "stop", Usage(1, 1), call.upstream_model)

    def stream(self, call: ProviderCall, /) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError


ANTHROPIC_YAML = f"""
jurisdiction: us
policies: {TEST_POLICIES}
providers:
  pa:
    protocol: anthropic
    base_url: https://anthropic.invalid
    region: us
models:
  claude-native:
    provider: pa
    upstream_id: up-native
    vendor: Anthropic
    origin: us
    tier: strong
    context_window: 8000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
    structured_output: native
  claude-default:
    provider: pa
    upstream_id: up-default
    vendor: Anthropic
    origin: us
    tier: strong
    context_window: 8000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
"""


@pytest.mark.parametrize(
    ("model", "expected"), [("claude-native", "native"), ("claude-default", "tool")]
)
async def test_structured_output_reaches_the_provider_call(model: str, expected: str) -> None:
    """The catalog's `structured_output` (default `tool`) is on the call routing builds."""
    catalog = Catalog.from_config(config_from_yaml(ANTHROPIC_YAML).config)
    recorder = _Recorder("pa", "anthropic")
    request = ChatRequest(
        model=model, messages=(Message("user", "hi"),), json_schema=SCHEMA["json_schema"]
    )
    routed = await Router({"pa": recorder}).complete(
        request, [catalog.models[model]], time.monotonic() + 5
    )
    assert routed.model.id == model
    [call] = recorder.calls
    assert (call.upstream_model, call.structured_output) == (f"up-{model[7:]}", expected)
