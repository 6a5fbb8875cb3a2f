"""OpenAI parameters a protocol may lack (issue 16, first part): sent as they came to OpenAI,
translated or a documented no-op elsewhere, and where a protocol cannot carry one, its targets
are skipped without a call; with none left, a 400 names the parameter and the protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from router.app import create_app
from router.types import ChatRequest, Message
from tests.fakes import anthropic_server, openai_server
from tests.fakes.script import Answer, Wall
from tests.helpers import TEST_POLICIES, config_from_yaml, serve
from tests.test_providers_contract import Harness, _harness  # noqa: F401  # the fixture
from tests.test_request_fidelity import _sent

EXTRAS: dict[str, Any] = {
    "store": True,
    "metadata": {"team": "search"},
    "frequency_penalty": 0.5,
    "presence_penalty": -0.25,
}


async def test_openai_gets_them_as_sent_gemini_translated_anthropic_the_no_ops(
    harness: Harness,
) -> None:
    request = ChatRequest(
        model="m1",
        messages=(
            Message("user", "hi", name="alice")
            if harness.protocol.name == "openai"
            else Message("user", "hi"),
        ),
        passthrough=tuple(
            (k, v)
            for k, v in EXTRAS.items()
            if harness.protocol.name != "anthropic" or k in ("store", "metadata")
        ),
    )
    body = await _sent(harness, request)
    if harness.protocol.name == "openai":
        assert {k: body[k] for k in EXTRAS} == EXTRAS
        assert body["messages"][0]["name"] == "alice"
    elif harness.protocol.name == "gemini":
        config = body["generationConfig"]
        assert (config["frequencyPenalty"], config["presencePenalty"]) == (0.5, -0.25)
        assert not {"store", "metadata"} & set(body)
    else:
        assert not {"store", "metadata", "frequency_penalty", "presence_penalty"} & set(body)


def _yaml(openai_url: str, anthropic_url: str) -> str:
    return f"""
jurisdiction: us
policies: {TEST_POLICIES}
providers:
  po:
    protocol: openai
    base_url: {openai_url}/v1
    allow_http: true
    region: us
  pa:
    protocol: anthropic
    base_url: {anthropic_url}
    allow_http: true
    region: us
models:
  gpt:
    provider: po
    upstream_id: up-gpt
    vendor: VendorA
    origin: us
    tier: strong
    context_window: 8000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
  claude:
    provider: pa
    upstream_id: up-claude
    vendor: VendorB
    origin: us
    tier: strong
    context_window: 8000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
routes:
  claude-first: [claude, gpt]
  claude-only: [claude]
"""


@asynccontextmanager
async def _two_protocols() -> AsyncIterator[tuple[str, Wall]]:
    wall = Wall()
    wall.script("up-gpt", Answer("from gpt"))
    wall.script("up-claude", Answer("from claude"))
    async with (
        serve(openai_server.make_app(wall)) as po,
        serve(anthropic_server.make_app(wall)) as pa,
    ):
        loaded = config_from_yaml(
            _yaml(str(po.make_url("")).rstrip("/"), str(pa.make_url("")).rstrip("/"))
        )
        async with serve(create_app(loaded, environ={})) as server:
            yield str(server.make_url("")).rstrip("/"), wall


async def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/chat/completions", json=body) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


@pytest.mark.parametrize(
    ("extra", "message_extra", "field"),
    [
        ({"frequency_penalty": 0.5}, {}, "frequency_penalty"),
        ({"presence_penalty": 1}, {}, "presence_penalty"),
        ({}, {"name": "alice"}, "messages[].name"),
    ],
)
async def test_a_target_that_cannot_carry_a_field_is_skipped_and_none_left_is_a_400(
    extra: dict[str, Any], message_extra: dict[str, str], field: str
) -> None:
    async with _two_protocols() as (url, wall):
        messages = [{"role": "user", "content": "hi", **message_extra}]
        status, body, _ = await _post(url, {"model": "claude-first", "messages": messages, **extra})
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == "from gpt"
        assert [c.model for c in wall.calls] == ["up-gpt"]  # claude was never called
        codes = [(a["model"], a["code"]) for a in body["router"]["attempts"]]
        assert codes == [("claude", "unsupported_parameter"), ("gpt", "ok")]
        status, body, _ = await _post(url, {"model": "claude-only", "messages": messages, **extra})
        assert status == 400, body
        assert body["error"]["code"] == "unsupported_parameter"
        assert body["error"]["param"] == field
        assert "anthropic" in body["error"]["message"]
        assert [c.model for c in wall.calls] == ["up-gpt"]


async def test_store_and_metadata_are_no_ops_on_anthropic() -> None:
    async with _two_protocols() as (url, wall):
        status, body, _ = await _post(
            url,
            {
                "model": "claude-only",
                "messages": [{"role": "user", "content": "hi"}],
                "store": True,
                "metadata": {"team": "search"},
            },
        )
        assert status == 200, body
        assert [c.model for c in wall.calls] == ["up-claude"]
        assert not {"store"} & set(wall.calls[0].body)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"store": "yes"}, "store"),
        ({"metadata": ["x"]}, "metadata"),
        ({"frequency_penalty": 3}, "frequency_penalty"),
        ({"presence_penalty": "1"}, "presence_penalty"),
    ],
)
async def test_bad_values_are_a_400_naming_them(extra: dict[str, Any], param: str) -> None:
    async with _two_protocols() as (url, wall):
        status, body, _ = await _post(
            url, {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], **extra}
        )
        assert status == 400
        assert body["error"]["param"] == param
        assert wall.calls == []


async def test_a_fusion_panel_with_a_panelist_that_cannot_carry_a_field_is_a_400() -> None:
    """Said before any call, naming the field and the panelist (not a 502 panel_exhausted)."""
    async with _two_protocols() as (url, wall):
        status, body, _ = await _post(
            url,
            {
                "model": "fusion",
                "fusion": {"panelists": ["claude", "gpt"], "synthesizers": ["gpt"], "quorum": 2},
                "messages": [{"role": "user", "content": "hi", "name": "alice"}],
            },
        )
        assert status == 400, body
        assert (body["error"]["code"], body["error"]["param"]) == (
            "unsupported_parameter",
            "messages[].name",
        )
        assert "claude" in body["error"]["message"]
        assert wall.calls == []
