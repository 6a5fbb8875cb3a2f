"""Provider web search (`ChatRequest.web_search`, set by fusion for panelists that research):
each protocol's adapter turns it on with the exact upstream fragment, and reads the sources,
the search count and so the cost back. Whole answers go through the real `Router` in front of
a fake upstream of each protocol (which answers in its own server-tool format, built from the
official SDK types); streams through the adapter the config builds. The simulator searches
deterministically, on made-up domains only, never a blocked one."""

from __future__ import annotations

import dataclasses
import json
import time
import typing
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from router.catalog import Catalog, CatalogModel
from router.config import Protocol, SimProfile
from router.providers import Provider, build_providers
from router.providers.anthropic_request import web_search_tool
from router.providers.sim import SimProvider
from router.providers.sim_content import SIM_SEARCH_DOMAINS
from router.providers.web_search import (
    BLOCKED_DOMAINS_APPLIED,
    BLOCKED_DOMAINS_REASON,
    blocked_domains_applied,
    blocked_domains_reason,
    dedupe_sources,
    host_blocked,
    source,
)
from router.routing import Routed, Router
from router.types import (
    ChatRequest,
    Message,
    ProviderCall,
    Source,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
    WebSearch,
)
from router.upstream_http import UpstreamClient
from tests.fakes import anthropic_server, gemini_server, openai_server
from tests.fakes.script import Answer, Behaviour, Researched, Wall
from tests.helpers import TEST_POLICIES, config_from_yaml, serve

MODEL = "m"
UPSTREAM = "up-m"
QUESTION = "How many people live in Oslo?"
SSB = ("https://www.ssb.no/en/oslo", "Statistics Norway: Oslo")
WIKI = ("https://en.wikipedia.org/wiki/Oslo", "Oslo - Wikipedia")
SOURCES = (Source(*SSB), Source(*WIKI))
REPEATED = (SSB, WIKI, (SSB[0], "Statistics Norway again"), WIKI)  # repeats, to dedupe
PER_SEARCH = 0.01  # USD, the catalog's `per_web_search`
SEARCH = WebSearch(blocked_domains=("pinterest.com", "quora.com"), max_uses=3)

FAKES: Mapping[str, tuple[Callable[[Wall], web.Application], str]] = {
    "openai": (openai_server.make_app, "/v1"),
    "anthropic": (anthropic_server.make_app, ""),
    "gemini": (gemini_server.make_app, "/v1beta"),
}


def _catalog(protocol: str, base_url: str) -> str:
    return f"""
jurisdiction: us
policies: {TEST_POLICIES}
providers:
  up:
    protocol: {protocol}
    base_url: {base_url}
    allow_http: true
    region: us
models:
  {MODEL}:
    provider: up
    upstream_id: {UPSTREAM}
    vendor: Vendor
    origin: us
    tier: strong
    context_window: 200000
    max_output_tokens: 64000
    capabilities: [tools, web_search]
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0, per_web_search: {PER_SEARCH}}}
"""


@dataclass
class Upstream:
    """A router in front of one fake upstream of a protocol, its one catalog model, and the
    adapter the config built."""

    wall: Wall
    router: Router
    model: CatalogModel
    provider: Provider

    async def complete(self, request: ChatRequest) -> Routed:
        return await self.router.complete(request, [self.model], deadline=_far())

    async def stream(self, request: ChatRequest) -> list[StreamEvent]:
        call = ProviderCall(dataclasses.replace(request, stream=True), UPSTREAM)
        return [event async for event in self.provider.stream(call)]

    @property
    def body(self) -> dict[str, Any]:
        """The body of the last call the fake received."""
        body: dict[str, Any] = self.wall.calls[-1].body
        return body


def _far() -> float:
    return time.monotonic() + 30


@asynccontextmanager
async def _upstream(protocol: str, script: Behaviour) -> AsyncIterator[Upstream]:
    make_app, path = FAKES[protocol]
    wall = Wall()
    wall.script(UPSTREAM, script)
    async with serve(make_app(wall)) as server, UpstreamClient() as session:
        base_url = str(server.make_url("")).rstrip("/") + path
        config = config_from_yaml(_catalog(protocol, base_url)).config
        providers = build_providers(config, session, {})
        catalog = Catalog.from_config(config)
        yield Upstream(wall, Router(providers), catalog.models[MODEL], providers["up"])


def _request(search: WebSearch | None = SEARCH, **more: Any) -> ChatRequest:
    return ChatRequest(
        model=MODEL, messages=(Message("user", QUESTION),), web_search=search, **more
    )


def _cost(usage: Usage) -> float:
    return (usage.input_tokens * 1.0 + usage.output_tokens * 2.0) / 1e6 + (
        usage.web_searches * PER_SEARCH
    )


WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


# --- OpenAI: web_search_options, url_citation annotations ------------------------------------


async def test_openai_sends_web_search_options_and_reads_url_citations() -> None:
    async with _upstream("openai", Researched(sources=REPEATED)) as up:
        routed = await up.complete(_request())
        assert up.body["web_search_options"] == {}  # no domain filter, no limit: none exists
        assert "tools" not in up.body
    answer = routed.completion
    assert answer.text == Researched().text
    assert answer.sources == SOURCES  # deduplicated by URL, in order, the first title kept
    assert answer.usage == Usage(30, 12, 1)  # OpenAI bills per search call and counts none
    assert routed.cost == pytest.approx(_cost(answer.usage))
    assert routed.cost == pytest.approx((30 + 24) / 1e6 + PER_SEARCH)


async def test_openai_takes_a_search_count_the_usage_gives() -> None:
    from router.providers.openai import from_wire

    data = {
        "id": "x",
        "model": UPSTREAM,
        "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 1,
            "server_tool_use": {"web_search_requests": 4},
        },
    }
    assert from_wire(data, _request(), "up").usage == Usage(3, 1, 4)
    assert from_wire(data, _request(None), "up").usage == Usage(3, 1, 4)
    del data["usage"]["server_tool_use"]  # type: ignore[attr-defined]
    assert from_wire(data, _request(None), "up").usage == Usage(3, 1, 0)


async def test_openai_stream_relays_the_text_and_counts_the_search() -> None:
    async with _upstream("openai", Researched()) as up:
        events = await up.stream(_request())
        assert up.body["web_search_options"] == {}
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == Researched().text
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.usage == Usage(30, 12, 1)


# --- Anthropic: the web_search server tool ---------------------------------------------------


async def test_anthropic_sends_the_server_tool_and_reads_cited_sources() -> None:
    async with _upstream("anthropic", Researched(sources=REPEATED, searches=2)) as up:
        routed = await up.complete(_request())
        assert up.body["tools"] == [
            {
                "type": "web_search_20250305",
                "name": "web_search",
                "max_uses": 3,
                "blocked_domains": ["pinterest.com", "quora.com"],
            }
        ]
        assert "tool_choice" not in up.body
    answer = routed.completion
    assert answer.text == Researched().text
    assert answer.finish_reason == "stop"
    assert answer.sources == SOURCES
    assert answer.usage == Usage(30, 12, 2)  # usage.server_tool_use.web_search_requests
    assert routed.cost == pytest.approx((30 + 24) / 1e6 + 2 * PER_SEARCH)


async def test_anthropic_leaves_blocked_domains_out_when_there_are_none() -> None:
    async with _upstream("anthropic", Researched()) as up:
        await up.complete(_request(WebSearch()))
        assert up.body["tools"] == [
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
        ]


async def test_anthropic_puts_the_server_tool_beside_function_tools() -> None:
    request = _request(passthrough=(("tools", [WEATHER_TOOL]), ("tool_choice", "auto")))
    async with _upstream("anthropic", Researched()) as up:
        routed = await up.complete(request)
        assert [t.get("type", t["name"]) for t in up.body["tools"]] == [
            "get_weather",
            "web_search_20250305",
        ]
        assert up.body["tool_choice"] == {"type": "auto"}
    assert routed.completion.sources == SOURCES


async def test_anthropic_without_citations_gives_every_result_found() -> None:
    async with _upstream("anthropic", Researched(sources=REPEATED, cited=False)) as up:
        routed = await up.complete(_request())
    assert routed.completion.sources == SOURCES


async def test_anthropic_search_error_gives_the_text_and_no_sources() -> None:
    async with _upstream("anthropic", Researched(error="max_uses_exceeded")) as up:
        routed = await up.complete(_request())
    assert routed.completion.text == Researched().text
    assert routed.completion.sources == ()
    assert routed.completion.usage.web_searches == 1


async def test_anthropic_counts_search_blocks_when_usage_has_no_count() -> None:
    async with _upstream("anthropic", Researched(searches=3, usage_count=False)) as up:
        routed = await up.complete(_request())
    assert routed.completion.usage.web_searches == 3


async def test_anthropic_pause_turn_ends_with_the_text_so_far() -> None:
    async with _upstream("anthropic", Researched(text="Partial so far.", paused=True)) as up:
        routed = await up.complete(_request())
    answer = routed.completion
    assert (answer.text, answer.finish_reason) == ("Partial so far.", "stop")
    assert answer.sources == SOURCES


@pytest.mark.parametrize("cited", [True, False])
async def test_anthropic_stream_skips_server_tool_blocks_and_relays_the_text(cited: bool) -> None:
    async with _upstream("anthropic", Researched(searches=2, cited=cited)) as up:
        events = await up.stream(_request())
        assert up.body["tools"][0]["type"] == "web_search_20250305"
        assert up.body["stream"] is True
    assert all(isinstance(e, TextDelta | StreamEnd) for e in events)  # no tool call leaks
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == Researched().text
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert (end.finish_reason, end.usage) == ("stop", Usage(30, 12, 2))


@pytest.mark.parametrize(
    ("tool", "refusal"),
    [
        (
            {**web_search_tool(SEARCH), "allowed_domains": ["ssb.no"]},
            "Cannot specify both allowed_domains and blocked_domains",
        ),
        ({**web_search_tool(SEARCH), "type": "web_search_2025"}, "does not match any"),
        ({**web_search_tool(SEARCH), "name": "search"}, "Input should be 'web_search'"),
        ({**web_search_tool(SEARCH), "max_uses": 0}, "greater than 0"),
        ({**web_search_tool(SEARCH), "blocked_domains": "x.com"}, "a list of domains"),
        ({**web_search_tool(SEARCH), "queries": 2}, "Extra inputs are not permitted"),
    ],
)
def test_the_fake_anthropic_api_refuses_a_malformed_web_search_tool(
    tool: dict[str, Any], refusal: str
) -> None:
    body = {"model": UPSTREAM, "max_tokens": 10, "messages": [{"role": "user", "content": "q"}]}
    headers = {"anthropic-version": "2023-06-01"}
    assert anthropic_server.request_problem(headers, {**body, "tools": [tool]}) is not None
    assert refusal in str(anthropic_server.request_problem(headers, {**body, "tools": [tool]}))
    assert (
        anthropic_server.request_problem(headers, {**body, "tools": [web_search_tool(SEARCH)]})
        is None
    )


# --- Gemini: Grounding with Google Search ----------------------------------------------------


async def test_gemini_sends_google_search_and_reads_grounding_chunks() -> None:
    async with _upstream("gemini", Researched(sources=REPEATED, searches=2)) as up:
        routed = await up.complete(_request())
        assert up.body["tools"] == [{"googleSearch": {}}]  # no excludeDomains: not in Gemini's API
        assert "toolConfig" not in up.body
    answer = routed.completion
    assert answer.text == Researched().text
    assert answer.sources == SOURCES
    assert answer.usage == Usage(30, 12, 2)  # one per webSearchQueries entry
    assert routed.cost == pytest.approx((30 + 24) / 1e6 + 2 * PER_SEARCH)


async def test_gemini_puts_google_search_beside_function_declarations() -> None:
    request = _request(passthrough=(("tools", [WEATHER_TOOL]),))
    async with _upstream("gemini", Researched()) as up:
        await up.complete(request)
        tools = up.body["tools"]
    assert [list(t) for t in tools] == [["functionDeclarations"], ["googleSearch"]]
    assert tools[1] == {"googleSearch": {}}


async def test_gemini_stream_relays_the_text_and_counts_the_searches() -> None:
    async with _upstream("gemini", Researched(searches=3)) as up:
        events = await up.stream(_request())
        assert up.body["tools"] == [{"googleSearch": {}}]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == Researched().text
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.usage == Usage(30, 12, 3)


def test_the_fake_gemini_api_refuses_exclude_domains() -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "q"}]}]}
    tool = {"googleSearch": {"excludeDomains": ["pinterest.com"]}}
    assert "not supported" in str(gemini_server.request_problem({**body, "tools": [tool]}))
    assert gemini_server.request_problem({**body, "tools": [{"googleSearch": {}}]}) is None


# --- no web search: nothing sent, nothing counted --------------------------------------------


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "gemini"])
async def test_without_web_search_nothing_is_sent_or_counted(protocol: str) -> None:
    async with _upstream(protocol, Answer("plain")) as up:
        routed = await up.complete(_request(None))
        body = up.body
    assert "web_search_options" not in body
    assert "tools" not in body
    assert routed.completion.sources == ()
    assert routed.completion.usage.web_searches == 0


# --- the simulator ---------------------------------------------------------------------------


def _sim_call(search: WebSearch | None, question: str = QUESTION, **more: Any) -> ProviderCall:
    request = ChatRequest(
        model="sim", messages=(Message("user", question),), web_search=search, **more
    )
    return ProviderCall(request, "sim-model")


def _hosts(sources: tuple[Source, ...]) -> set[str]:
    return {urlsplit(s.url).hostname or "" for s in sources}


async def test_the_sim_searches_deterministically_on_made_up_domains() -> None:
    sim = SimProvider("sim", SimProfile())
    first = await sim.complete(_sim_call(WebSearch()))
    again = await sim.complete(_sim_call(WebSearch()))
    assert first == again
    assert 1 <= len(first.sources) <= 3
    assert _hosts(first.sources) == {"sim.example"}
    assert all(s.url.startswith("https://sim.example/many-people-live-oslo") for s in first.sources)
    assert all(s.title.startswith("SIMULATED: ") for s in first.sources)
    assert all(s.url in first.text for s in first.sources)  # the answer names them
    assert first.usage.web_searches == 1
    plain = await sim.complete(_sim_call(None))
    assert (plain.sources, plain.usage.web_searches) == ((), 0)
    assert "sim.example" not in plain.text


async def test_the_sim_gives_one_to_three_sources_across_questions() -> None:
    sim = SimProvider("sim", SimProfile())
    counts = set()
    for i in range(12):
        answer = await sim.complete(_sim_call(WebSearch(), f"Question number {i} about rivers"))
        counts.add(len(answer.sources))
        assert all(h.endswith(".example") for h in _hosts(answer.sources))
    assert counts <= {1, 2, 3}
    assert len(counts) > 1


@pytest.mark.parametrize(
    ("blocked", "hosts"),
    [
        (("sim.example",), {"sim-research.example"}),
        (("SIM.example", "sim-research.example"), {"sim-archive.example"}),
        (("example",), set()),  # every made-up domain is under it: none is returned
        (("*.example",), set()),
        (("example.com",), {"sim.example"}),
    ],
)
async def test_the_sim_never_returns_a_blocked_domain(
    blocked: tuple[str, ...], hosts: set[str]
) -> None:
    sim = SimProvider("sim", SimProfile())
    answer = await sim.complete(_sim_call(WebSearch(blocked_domains=blocked)))
    assert _hosts(answer.sources) == hosts
    assert answer.usage.web_searches == 1
    for domain in SIM_SEARCH_DOMAINS:
        if domain not in hosts:
            assert domain not in answer.text
    if not hosts:
        assert "no page outside the blocked domains" in answer.text


async def test_the_sim_stream_names_the_sources_and_counts_the_search() -> None:
    sim = SimProvider("sim", SimProfile())
    whole = await sim.complete(_sim_call(WebSearch()))
    events = [e async for e in sim.stream(_sim_call(WebSearch()))]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == whole.text
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.usage.web_searches == 1


async def test_the_sim_keeps_json_answers_json_and_tool_calls_unsearched() -> None:
    sim = SimProvider("sim", SimProfile())
    judged = await sim.complete(_sim_call(WebSearch(), json_output=True))
    json.loads(judged.text)
    assert judged.sources  # searched, named as sources only
    call = await sim.complete(
        _sim_call(WebSearch(), "weather in Oslo", passthrough=(("tools", [WEATHER_TOOL]),))
    )
    assert call.tool_calls
    assert (call.sources, call.usage.web_searches) == ((), 0)


# --- the helper fusion reads -------------------------------------------------------------------


def test_blocked_domains_applied_covers_every_configured_protocol() -> None:
    assert set(BLOCKED_DOMAINS_APPLIED) == set(typing.get_args(Protocol))
    assert {p for p, applied in BLOCKED_DOMAINS_APPLIED.items() if not applied} == set(
        BLOCKED_DOMAINS_REASON
    )
    assert [blocked_domains_applied(p) for p in ("anthropic", "sim", "openai", "gemini")] == [
        True,
        True,
        False,
        False,
    ]
    assert blocked_domains_reason("anthropic") is None
    assert "excludeDomains" in str(blocked_domains_reason("gemini"))
    assert "web_search_options" in str(blocked_domains_reason("openai"))
    assert not blocked_domains_applied("future")
    assert blocked_domains_reason("future") is not None


def test_sources_dedupe_by_url_in_order() -> None:
    got = dedupe_sources(
        [
            source("https://a.example/1"),
            source("https://b.example/2", "B"),
            source("https://a.example/1", "A, titled later"),
            source(None, "no url"),
            source("  ", "blank"),
            source("https://b.example/2", "B again"),
        ]
    )
    assert got == (
        Source("https://a.example/1", "A, titled later"),
        Source("https://b.example/2", "B"),
    )
    assert source("https://c.example", 7) == Source("https://c.example", "")


def test_host_blocked_covers_subdomains_only() -> None:
    assert host_blocked("docs.example.com", ["example.com"])
    assert host_blocked("example.com", ["Example.COM."])
    assert not host_blocked("notexample.com", ["example.com"])
    assert not host_blocked("example.com", ["docs.example.com", ""])
