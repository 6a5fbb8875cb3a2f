"""A bounded load test (issue 3): 300 requests at concurrency 50, one provider hard down, one
failing 30%, half of them streaming. Every request ends exactly once; the dead provider's breaker
opens within 5 faults; upstream attempts stay close to one per request."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import aiohttp
import pytest

from router.app import create_app
from tests.fakes import openai_server
from tests.fakes.script import Answer, Flaky, Wall
from tests.helpers import TEST_POLICIES, config_from_yaml, serve

REQUESTS = 300
CONCURRENCY = 50


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_yaml(upstream: str, dead: int, rate: float) -> str:
    def provider(name: str, url: str) -> str:
        return f"""  {name}:
    protocol: openai
    base_url: {url}
    allow_http: true
    region: us
    breaker: {{failure_rate: {rate}}}
    timeouts: {{connect_s: 0.5, first_byte_s: 2, idle_s: 1, total_s: 10}}"""

    def model(name: str, prov: str) -> str:
        return f"""  {name}:
    provider: {prov}
    upstream_id: up-{name}
    vendor: V-{name}
    origin: us
    tier: strong
    context_window: 8000
    price: {{input_per_mtok: 1, output_per_mtok: 1}}"""

    return f"""
jurisdiction: us
policies: {TEST_POLICIES}
retry: {{transient_base_s: 0.005, transient_cap_s: 0.02}}
providers:
{provider("dead", f"http://127.0.0.1:{dead}/v1")}
{provider("flaky", f"{upstream}/v1")}
{provider("healthy", f"{upstream}/v1")}
models:
{model("m-dead", "dead")}
{model("m-flaky", "flaky")}
{model("m-healthy", "healthy")}
routes:
  mix: [m-dead, m-flaky, m-healthy]
"""


async def one(http: aiohttp.ClientSession, url: str, i: int) -> tuple[str, int, list[str]]:
    """One request; returns its single terminal outcome and the providers it attempted."""
    stream = i % 2 == 0
    body = {"model": "mix", "messages": [{"role": "user", "content": f"q{i}"}], "stream": stream}
    async with http.post(url, json=body) as response:
        attempted = [p for p in response.headers.get("X-Router-Attempted", "").split(",") if p]
        if not stream or response.status != 200:
            data = await response.json()
            if response.status == 200:
                assert data["choices"][0]["message"]["content"]
                return "success", response.status, attempted
            assert data["error"]["code"]
            return "error", response.status, attempted
        events = [line for line in (await response.read()).decode().split("\n\n") if line.strip()]
        if events[-1] == "data: [DONE]":
            return "success", response.status, attempted
        last = json.loads(events[-1].removeprefix("data: "))
        assert "error" in last  # an in-band error, never a silent cut
        return "error", response.status, attempted


@pytest.mark.parametrize(
    ("failure_rate", "max_ratio"),
    [(0.5, 1.6), (0.25, 1.25)],
    ids=["default_breaker", "tuned_breaker"],
)
async def test_bounded_load_with_a_dead_and_a_flaky_provider(
    failure_rate: float, max_ratio: float
) -> None:
    """With the default breaker (trips at 50% failures) the 30%-failing provider stays in the
    route and every third of its requests fails over (≈1.5 attempts per request); with
    `failure_rate: 0.25` its breaker opens too and traffic settles on the healthy provider."""
    wall = Wall()
    wall.script("up-m-flaky", Flaky(0.3, seed=7, answer=Answer("flaky but fine")))
    wall.script("up-m-healthy", Answer("healthy"))
    async with serve(openai_server.make_app(wall)) as upstream:
        app = create_app(
            config_from_yaml(
                load_yaml(str(upstream.make_url("")).rstrip("/"), closed_port(), failure_rate)
            ),
            environ={},
        )
        async with (
            serve(app) as server,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as http,
        ):
            url = str(server.make_url("/v1/chat/completions"))
            gate = asyncio.Semaphore(CONCURRENCY)

            async def bounded(i: int) -> tuple[str, int, list[str]]:
                async with gate:
                    return await one(http, url, i)

            async with asyncio.timeout(60):
                results: list[Any] = await asyncio.gather(*(bounded(i) for i in range(REQUESTS)))
            async with http.get(str(server.make_url("/admin/breakers"))) as response:
                board = {b["key"]: b for b in (await response.json())["breakers"]}
    outcomes = [r[0] for r in results]
    assert len(results) == REQUESTS  # every request ended, exactly once (gather returns one each)
    assert outcomes.count("success") + outcomes.count("error") == REQUESTS
    assert outcomes.count("success") >= REQUESTS * 0.99
    dead_attempts = sum(r[2].count("dead") for r in results if r[1] == 200)
    upstream_attempts = len(wall.calls) + dead_attempts
    assert board["dead/m-dead"]["state"] == "open"
    print(
        f"\nattempts per request: {upstream_attempts / REQUESTS:.3f} (dead provider: {dead_attempts})"
    )
    assert upstream_attempts / REQUESTS <= max_ratio
