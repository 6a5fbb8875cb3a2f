"""The fault matrix F01-F27 of the reliability bar (section 5.2), one named test per fault.

Each fault is injected at provider A of a three-provider bed (A, B, C on one fake OpenAI
server, plus extra targets where a case needs them). Assertions are on the fake's call log
(who was called, how often, when) and on what the client got (status, error code, the
`X-Router-*` headers, stream content). Clocks are scaled down: first byte 1 s, stream idle
0.5 s, connect 0.5 s, breaker open 3 s, transient backoff 50-200 ms, throttle 200-500 ms.

Each test states the bar it checks; a gap in the router would show as a failing test here.
Beyond the bare matrix: F02/F03 over the OpenAI protocol with exactly one call on A, the
F14/F15/F17 failures (and an upstream in-band error) as the official `openai` SDK sees them,
a malformed first event (F19), and what every error response reports in its headers.
R2, the property over random failure schedules, lives in test_retry.py (on this bed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import socket
import ssl
import time
import tracemalloc
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.connector
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from router.app import create_app
from router.providers.base import MAX_RESPONSE_BYTES
from router.state import SERVICES
from router.upstream_http import Resolve, UpstreamClient
from tests.fakes import anthropic_server, openai_server
from tests.fakes.script import (
    Answer,
    CutStream,
    Delay,
    Endless,
    Hang,
    Huge,
    InBandError,
    Malformed,
    MalformedEvent,
    Redirect,
    Reset,
    StallStream,
    Status,
    Wall,
)
from tests.helpers import KEYS, TEST_POLICIES, config_from_yaml, serve

FIRST_BYTE_S = 1.0
IDLE_S = 0.5
CONNECT_S = 0.5
OPEN_S = 3
TIMEOUTS = (
    f"{{connect_s: {CONNECT_S}, first_byte_s: {FIRST_BYTE_S}, idle_s: {IDLE_S}, total_s: 10}}"
)
BREAKER = f"{{fail_max: 5, reset_timeout_s: {OPEN_S}}}"
RETRY = "{transient_base_s: 0.05, transient_cap_s: 0.2, throttle_base_s: 0.2, throttle_cap_s: 0.5}"
Q = [{"role": "user", "content": "q"}]


# --- the bed -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One catalog model on its own provider (`p<model>`), upstream id `up-<model>`."""

    model: str
    base_url: str | None = None  # None: the shared fake OpenAI server
    protocol: str = "openai"
    key_env: str | None = None
    context: int = 8000
    timeouts: str = TIMEOUTS
    breaker: str | None = None  # None: the bed's breaker settings

    @property
    def provider(self) -> str:
        return f"p{self.model}"

    @property
    def upstream(self) -> str:
        return f"up-{self.model}"


ABC = (Target("a", key_env="TEST_KEY_A"), Target("b", key_env="TEST_KEY_B"), Target("c"))
ROUTES: Mapping[str, Sequence[str]] = {"abc": ["a", "b", "c"], "ab": ["a", "b"]}


def matrix_yaml(
    upstream: str,
    targets: Sequence[Target],
    routes: Mapping[str, Sequence[str]],
    policies: Path = TEST_POLICIES,
    *,
    retry: str = RETRY,
    breaker: str = BREAKER,
) -> str:
    """A config with one provider per target (pattern of `tests.helpers.two_provider_yaml`)."""
    providers, models = [], []
    for t in targets:
        url = t.base_url or f"{upstream}/v1"
        lines = [f"  {t.provider}:", f"    protocol: {t.protocol}", f"    base_url: {url}"]
        if url.startswith("http://"):
            lines.append("    allow_http: true")
        lines.append("    region: us")
        if t.key_env:
            lines.append(f"    api_key_env: {t.key_env}")
        lines += [f"    breaker: {t.breaker or breaker}", f"    timeouts: {t.timeouts}"]
        providers.append("\n".join(lines))
        models.append(
            f"""  {t.model}:
    provider: {t.provider}
    upstream_id: {t.upstream}
    vendor: V-{t.model}
    origin: us
    tier: strong
    context_window: {t.context}
    price: {{input_per_mtok: 1, output_per_mtok: 1}}"""
        )
    route_lines = "\n".join(f"  {alias}: [{', '.join(chain)}]" for alias, chain in routes.items())
    nl = "\n"
    return f"""
jurisdiction: us
policies: {policies}
retry: {retry}
providers:
{nl.join(providers)}
models:
{nl.join(models)}
routes:
{route_lines}
"""


@dataclass
class Result:
    """What the client got for one request."""

    status: int
    headers: CIMultiDict[str]
    elapsed: float
    body: Any = None  # the JSON body (a completion or an error), None for an SSE stream
    events: list[Any] = field(default_factory=list)  # SSE data payloads, parsed; "[DONE]" kept
    times: list[float] = field(default_factory=list)  # monotonic arrival time of each event
    ended: float = 0.0  # monotonic time the response was complete
    raw: str = ""

    @property
    def attempts(self) -> int | None:
        value = self.headers.get("X-Router-Attempts")
        return int(value) if value is not None else None

    @property
    def attempted(self) -> list[str]:
        return [p for p in self.headers.get("X-Router-Attempted", "").split(",") if p]

    @property
    def model(self) -> str | None:
        return self.headers.get("X-Router-Model")

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1] == "[DONE]"

    @property
    def text(self) -> str:
        """The answer: the message of a completion, or the concatenated stream deltas."""
        if self.body is not None and "choices" in self.body:
            return str(self.body["choices"][0]["message"]["content"])
        return "".join(
            c.get("delta", {}).get("content") or ""
            for e in self.events
            if isinstance(e, dict)
            for c in e.get("choices", [])
        )

    @property
    def error(self) -> dict[str, Any] | None:
        """The JSON error, or the in-band error event that ended a stream."""
        if self.body is not None and "error" in self.body:
            return dict(self.body["error"])
        if self.events and isinstance(self.events[-1], dict) and "error" in self.events[-1]:
            return dict(self.events[-1]["error"])
        return None

    @property
    def attempt_codes(self) -> list[str]:
        """The per-attempt codes the router reported (completion extension or 502 body)."""
        if self.body is None:
            return []
        records = (self.body.get("router") or {}).get("attempts") or (
            self.body.get("error") or {}
        ).get("attempts", [])
        return [r["code"] for r in records if r["outcome"] != "skipped"]


@dataclass
class Bed:
    """A sidecar in front of the fake(s), its client session and the fake's call log."""

    url: str
    wall: Wall
    app: web.Application
    http: aiohttp.ClientSession

    def count(self, *models: str) -> tuple[int, ...]:
        """Calls the fake received per catalog model."""
        return tuple(len(self.wall.calls_to(f"up-{m}")) for m in models)

    async def post(
        self,
        model: str,
        *,
        stream: bool = False,
        usage: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Result:
        body: dict[str, Any] = {"model": model, "messages": Q, "stream": stream}
        if usage:
            body["stream_options"] = {"include_usage": True}
        started = time.monotonic()
        async with self.http.post(
            f"{self.url}/v1/chat/completions", json=body, headers=headers
        ) as response:
            result = Result(response.status, CIMultiDict(response.headers), 0.0)
            if response.content_type != "text/event-stream":
                result.raw = await response.text()
                result.body = json.loads(result.raw)
            else:
                chunks = []
                async for line in response.content:
                    chunks.append(line.decode())
                    text = line.decode().strip()
                    if not text.startswith("data:"):
                        continue
                    data = text.removeprefix("data:").strip()
                    result.times.append(time.monotonic())
                    try:
                        result.events.append(data if data == "[DONE]" else json.loads(data))
                    except ValueError:
                        result.events.append(("unparsable", data))
                result.raw = "".join(chunks)
        result.ended = time.monotonic()
        result.elapsed = result.ended - started
        return result

    async def breakers(self) -> dict[str, dict[str, Any]]:
        async with self.http.get(f"{self.url}/admin/breakers") as response:
            return {b["key"]: b for b in (await response.json())["breakers"]}

    async def metrics(self) -> str:
        async with self.http.get(f"{self.url}/metrics") as response:
            return await response.text()

    async def settled(self, within: float = 1.0) -> float:
        """Wait until the fake has no request in flight; returns how long that took."""
        started = time.monotonic()
        async with asyncio.timeout(within):
            while self.wall.active:
                await asyncio.sleep(0.01)
        return time.monotonic() - started


@asynccontextmanager
async def bed(
    targets: Sequence[Target] = ABC,
    routes: Mapping[str, Sequence[str]] = ROUTES,
    policies: Path = TEST_POLICIES,
    *,
    retry: str = RETRY,
    breaker: str = BREAKER,
    wall: Wall | None = None,
    client: UpstreamClient | None = None,
) -> AsyncIterator[Bed]:
    """Fake OpenAI server + sidecar; every target answers "from <model>" until scripted."""
    if wall is None:
        wall = Wall()
        for t in targets:
            wall.script(t.upstream, Answer(f"from {t.model}"))
    async with serve(openai_server.make_app(wall)) as upstream:
        root = str(upstream.make_url("")).rstrip("/")
        text = matrix_yaml(root, targets, routes, policies, retry=retry, breaker=breaker)
        app = create_app(config_from_yaml(text), environ=dict(KEYS), upstream_client=client)
        async with serve(app) as server, aiohttp.ClientSession() as http:
            yield Bed(str(server.make_url("")).rstrip("/"), wall, app, http)


def with_target(replacement: Target) -> tuple[Target, ...]:
    """ABC with the target of the same model replaced."""
    return tuple(replacement if t.model == replacement.model else t for t in ABC)


def gaps(wall: Wall, upstream: str) -> list[float]:
    calls = wall.calls_to(upstream)
    return [b.at - a.at for a, b in itertools.pairwise(calls)]


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- F01-F07: provider faults and throttling ---------------------------------------------------


async def test_f01_one_500_then_200_is_retried_once_after_a_jittered_backoff() -> None:
    """A single 5xx on the last (here: only) target gets one jittered retry on that target.
    (With another target ready, the router fails over instead: see F02.)"""
    async with bed() as s:
        s.wall.script("up-a", [Status(500), Answer("second try")])
        r = await s.post("a")
        assert (r.status, r.text) == (200, "second try")
        assert s.count("a", "b", "c") == (2, 0, 0)
        assert (r.attempts, r.attempted) == (2, ["pa", "pa"])
        assert r.attempt_codes == ["provider_unavailable", "ok"]
        (gap,) = gaps(s.wall, "up-a")
        assert 0 <= gap <= 0.05 + 0.1  # full jitter, retry 0: [0, min(cap, base)] = [0, 50 ms]
        assert r.elapsed < 1.0
        board = await s.breakers()
        assert (board["pa/a"]["state"], board["pa/a"]["fail_counter"]) == ("closed", 0)


async def test_f02_persistent_503_fails_over_to_b() -> None:
    """≤ 1 retry on A, then B; here the router fails over at once (A = 1)."""
    async with bed() as s:
        s.wall.script("up-a", Status(503, "unavailable"))
        r = await s.post("abc")
        assert r.status == 200
        assert (r.body["model"], r.model, r.text) == ("b", "b", "from b")
        a, b, c = s.count("a", "b", "c")
        assert a <= 2
        assert (b, c) == (1, 0)
        assert r.attempts is not None
        assert r.attempts <= 3
        assert r.attempts == a + b
        assert r.attempted == ["pa"] * a + ["pb"]
        assert (await s.breakers())["pa/a"]["fail_counter"] == a


async def test_f03_anthropic_529_overloaded_fails_over_like_a_503() -> None:
    """A 529 `overloaded_error` from an Anthropic-protocol provider is a provider fault."""
    anthropic_wall = Wall()
    anthropic_wall.script("up-a", Status(529, "Overloaded"))
    async with serve(anthropic_server.make_app(anthropic_wall)) as anthropic:
        root = str(anthropic.make_url("")).rstrip("/")
        async with bed(with_target(Target("a", base_url=root, protocol="anthropic"))) as s:
            r = await s.post("abc")
            assert (r.status, r.model, r.text) == (200, "b", "from b")
            assert len(anthropic_wall.calls_to("up-a")) <= 2
            assert anthropic_wall.calls[0].path == "/v1/messages"
            assert s.count("b", "c") == (1, 0)
            assert r.attempted[-1] == "pb"
            assert r.attempts is not None
            assert r.attempts <= 3
            assert r.body["router"]["attempts"][0]["status"] == 529
            assert (await s.breakers())["pa/a"]["fail_counter"] >= 1


@pytest.mark.parametrize("status", [503, 529], ids=["503", "529_openai"])
async def test_f02_f03_openai_5xx_with_b_ready_calls_a_exactly_once(status: int) -> None:
    """Stronger than the bar's A ≤ 2: with B ready, a 503 (and a 529 over the OpenAI protocol,
    not only Anthropic's) fails over at once, one call on A, two attempts in all."""
    async with bed() as s:
        s.wall.script("up-a", Status(status, "overloaded"))
        r = await s.post("ab")
        assert (r.status, r.body["model"], r.model) == (200, "b", "b")
        assert s.count("a", "b") == (1, 1)
        assert (r.attempts, r.attempted) == (2, ["pa", "pb"])


async def test_f04_retry_after_2_cools_a_down_and_fails_over_or_waits_when_alone() -> None:
    """With B allowed: A is cooled for 2 s and never called inside that window; requests fail
    over at once. With A alone (here: C on its own), the router waits the 2 s out (gap ≥ 1.8 s)."""
    async with bed() as s:
        s.wall.script("up-a", [Status(429, "slow down", retry_after="2"), Answer("a is back")])
        s.wall.script("up-c", [Status(429, "slow down", retry_after="2"), Answer("c waited")])
        alone = asyncio.create_task(s.post("c"))  # C alone: the wait fits the deadline
        for _ in range(4):  # t ≈ 0, 0.45, 0.9, 1.35: inside A's cooldown
            r = await s.post("ab")
            assert (r.status, r.model) == (200, "b")
            assert r.elapsed < 0.5  # failed over now, never waited on A
            await asyncio.sleep(0.45)
        assert s.count("a") == (1,)
        first_a = s.wall.calls_to("up-a")[0].at
        await asyncio.sleep(max(0.0, first_a + 2.05 - time.monotonic()))
        r = await s.post("ab")  # the cooldown is over: A is called again
        assert (r.status, r.model, r.text) == (200, "a", "a is back")
        (gap_a,) = gaps(s.wall, "up-a")
        assert gap_a >= 1.8  # never 2 A-attempts in any 1.5 s window
        waited = await alone
        assert (waited.status, waited.text) == (200, "c waited")
        (gap_c,) = gaps(s.wall, "up-c")
        assert 1.8 <= gap_c < 2.5
        assert (waited.attempts, waited.attempted) == (2, ["pc", "pc"])


async def test_f05_retry_after_3600_is_not_waited_for() -> None:
    """A alone: 429 to the client with Retry-After capped at 300, A = 1, no wait. A stays
    cooled for min(RA, 300 s), so a route skips it without calling."""
    async with bed() as s:
        s.wall.script("up-a", Status(429, "slow down", retry_after="3600"))
        r = await s.post("a")
        assert r.status == 429
        assert r.body["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 300
        assert r.elapsed < 0.5
        assert s.count("a") == (1,)
        r = await s.post("ab")
        assert (r.status, r.model) == (200, "b")
        assert s.count("a", "b") == (1, 1)
        assert r.attempted == ["pb"]
        router = s.app[SERVICES].runtime.router
        assert router is not None
        assert 299 <= router.cooldowns.remaining("pa/a") <= 300
        assert (await s.breakers())["pa/a"]["fail_counter"] == 0  # throttling is not a fault
        r = await s.post("a")  # alone and cooling down: 429 again, without a call
        assert (r.status, r.body["error"]["code"]) == (429, "rate_limited")
        assert 290 <= int(r.headers["Retry-After"]) <= 300
        assert s.count("a") == (1,)


async def test_f06_429_without_retry_after_backs_off_at_most_twice_on_a() -> None:
    """Persistent 429 without Retry-After: with B ready, fail over at once (A = 1); A alone is
    tried at most twice, with one throttle backoff (≤ 200 ms here) in between."""
    async with bed() as s:
        s.wall.script("up-a", Status(429, "slow down"))
        r = await s.post("abc")
        assert (r.status, r.model) == (200, "b")
        assert s.count("a", "b", "c") == (1, 1, 0)
        assert r.attempts == 2
        r = await s.post("a")
        assert s.count("a") == (3,)  # 2 attempts for this request
        assert (r.status, r.body["error"]["code"]) == (429, "rate_limited")
        assert "Retry-After" not in r.headers  # the upstream gave no hint; none is invented
        (_, gap) = gaps(s.wall, "up-a")
        assert gap <= 0.2 + 0.1
        assert r.elapsed < 3
        assert (await s.breakers())["pa/a"]["fail_counter"] == 0


async def test_f07_exhausted_quota_is_not_retried_and_a_stays_out_for_300_s() -> None:
    async with bed() as s:
        s.wall.script(
            "up-a", Status(429, "You exceeded your current quota", code="insufficient_quota")
        )
        for _ in range(3):
            r = await s.post("ab")
            assert (r.status, r.model) == (200, "b")
        assert s.count("a", "b") == (1, 3)
        router = s.app[SERVICES].runtime.router
        assert router is not None
        assert router.cooldowns.remaining("pa/a") >= 299
        assert (await s.breakers())["pa/a"]["fail_counter"] == 0


async def test_f07_exhausted_quota_raises_the_alert_metric() -> None:
    async with bed() as s:
        s.wall.script("up-a", Status(429, "quota", code="insufficient_quota"))
        await s.post("ab")
        text = await s.metrics()
        assert "quota_exhausted" in text
        assert (
            max(
                metric_value(text, name, provider="pa")
                for name in (
                    "router_provider_quota_exhausted_total",
                    "provider_quota_exhausted_total",
                )
            )
            == 1
        )


# --- F08-F11: caller faults and credentials ------------------------------------------------


@pytest.mark.parametrize(
    "status", [400, 422, 404, 413], ids=["400_invalid", "422_unprocessable", "404", "413"]
)
async def test_f08_invalid_request_is_neither_retried_nor_failed_over(status: int) -> None:
    async with bed() as s:
        s.wall.script("up-a", Status(status, "bad field 'frobnicate'"))
        r = await s.post("abc")
        assert r.status == status
        assert r.body["error"]["code"] == "upstream_rejected"
        assert set(r.body["error"]) >= {"message", "type", "code", "param"}  # OpenAI shape
        assert "frobnicate" not in r.raw  # the upstream's raw message is not passed on
        assert s.count("a", "b", "c") == (1, 0, 0)
        board = await s.breakers()
        assert (board["pa/a"]["fail_counter"], board["pa/a"]["window_calls"]) == (0, 0)


async def test_f09_context_length_is_a_400_when_no_larger_model_is_on_the_route() -> None:
    async with bed() as s:
        s.wall.script("up-a", Status(400, "maximum context length", code="context_length_exceeded"))
        r = await s.post("ab")  # B has the same window as A
        assert r.status == 400
        assert r.body["error"]["code"] == "context_length_exceeded"
        assert s.count("a", "b") == (1, 0)
        assert (await s.breakers())["pa/a"]["fail_counter"] == 0


async def test_f09_context_length_moves_only_to_a_larger_context_model() -> None:
    targets = (*ABC, Target("big", context=64000))
    async with bed(targets, routes={"abig": ["a", "b", "big"]}) as s:
        s.wall.script("up-a", Status(400, "maximum context length", code="context_length_exceeded"))
        r = await s.post("abig")
        assert (r.status, r.model) == (200, "big")
        assert s.count("a", "b", "big") == (1, 0, 1)


async def test_f09_context_length_moves_to_the_larger_context_model_next_in_line() -> None:
    targets = (*ABC, Target("big", context=64000))
    async with bed(targets, routes={"abig": ["a", "big", "b"]}) as s:
        s.wall.script("up-a", Status(400, "maximum context length", code="context_length_exceeded"))
        r = await s.post("abig")
        assert (r.status, r.model) == (200, "big")
        assert s.count("a", "big", "b") == (1, 1, 0)
        assert (await s.breakers())["pa/a"]["fail_counter"] == 0


async def test_f10_content_policy_refusal_is_propagated_without_failover() -> None:
    async with bed() as s:
        s.wall.script("up-a", Status(400, "flagged", code="content_policy_violation"))
        r = await s.post("abc")
        assert r.status == 400
        assert r.body["error"]["code"] == "content_policy"
        assert s.count("a", "b", "c") == (1, 0, 0)
        assert (await s.breakers())["pa/a"]["fail_counter"] == 0


@pytest.mark.parametrize("status", [401, 403])
async def test_f11_rejected_key_fails_over_counts_a_fault_and_never_leaks(status: int) -> None:
    key = KEYS["TEST_KEY_A"]
    async with bed() as s:
        s.wall.script("up-a", Status(status, f"Incorrect API key provided: {key}"))
        r = await s.post("abc")
        assert (r.status, r.model) == (200, "b")
        assert s.count("a", "b") == (1, 1)  # no retry on the rejected credential
        assert r.attempt_codes == ["provider_auth_failed", "ok"]
        r_alone = await s.post("a")
        assert r_alone.status == 502
        assert s.count("a") == (2,)  # one attempt per request
        for result in (r, r_alone):
            assert key not in result.raw
            assert key not in repr(dict(result.headers))
        assert s.wall.calls[0].headers["Authorization"] == f"Bearer {key}"  # it was sent
        assert (await s.breakers())["pa/a"]["fail_counter"] == 2


# --- F12-F15: the clocks ---------------------------------------------------------------------


async def test_f12_silent_provider_is_cut_at_first_byte_and_never_retried() -> None:
    async with bed() as s:
        s.wall.script("up-a", Hang(30))
        r = await s.post("abc")
        assert (r.status, r.model) == (200, "b")
        assert s.count("a", "b", "c") == (1, 1, 0)
        assert r.elapsed < FIRST_BYTE_S + 0.5
        assert r.attempt_codes == ["provider_timeout", "ok"]
        r = await s.post("a")  # alone: the silent route is not retried
        assert r.status in (502, 504)
        assert s.count("a") == (2,)
        assert r.elapsed < FIRST_BYTE_S + 0.5
        await s.settled(1.0)  # the sidecar hung up on the silent upstream


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_f13a_first_byte_inside_the_clock_is_a_success(stream: bool) -> None:
    async with bed() as s:
        s.wall.script("up-a", Delay(0.7 * FIRST_BYTE_S, Answer("late but fine")))
        r = await s.post("abc", stream=stream)
        assert (r.status, r.model, r.text) == (200, "a", "late but fine")
        assert s.count("a", "b") == (1, 0)
        assert r.elapsed >= 0.7 * FIRST_BYTE_S
        if stream:
            assert r.done


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_f13b_first_byte_past_the_clock_fails_over(stream: bool) -> None:
    async with bed() as s:
        s.wall.script("up-a", Delay(5, Answer("too late")))
        r = await s.post("abc", stream=stream)
        assert (r.status, r.model, r.text) == (200, "b", "from b")
        assert s.count("a", "b") == (1, 1)
        assert FIRST_BYTE_S <= r.elapsed < FIRST_BYTE_S + 0.5
        if stream:
            assert r.done
        await s.settled(1.0)


async def test_f14_slow_stream_after_the_first_byte_ends_in_an_in_band_error() -> None:
    """A token every 1 s (> idle 0.5 s): bytes already went out, so no transparent retry; an
    in-band error follows within idle + 0.5 s of the last token, never a success."""
    async with bed() as s:
        s.wall.script("up-a", Answer("a b c d e", chunk_delay=2 * IDLE_S))
        r = await s.post("abc", stream=True)
        assert (r.status, r.model) == (200, "a")
        assert r.text == "a"  # the first token reached the client
        assert not r.done
        assert r.error is not None
        assert r.error["code"] == "provider_timeout"
        last_token = r.times[-2]
        assert r.ended - last_token <= IDLE_S + 0.5
        assert s.count("a", "b", "c") == (1, 0, 0)
        await s.settled(1.0)


async def test_f15_stall_after_tokens_ends_in_an_in_band_error_and_the_process_stays_healthy() -> (
    None
):
    async with bed() as s:
        s.wall.script("up-a", StallStream(after=3, seconds=30))
        r = await s.post("abc", stream=True)
        assert (r.status, r.model) == (200, "a")
        assert r.text == "one two three "
        assert not r.done
        assert r.error is not None
        assert r.error["code"] == "provider_timeout"
        assert r.ended - r.times[-2] <= IDLE_S + 1.0
        assert s.count("a", "b") == (1, 0)
        await s.settled(1.0)  # the stalled upstream connection was closed
        async with s.http.get(f"{s.url}/healthz") as response:
            assert response.status == 200
        r = await s.post("b")
        assert r.status == 200


async def test_f15_mid_stream_faults_count_against_the_breaker() -> None:
    async with bed() as s:
        s.wall.script("up-a", StallStream(after=1, seconds=30))
        r = await s.post("a", stream=True)
        assert r.error is not None
        assert (await s.breakers())["pa/a"]["fail_counter"] == 1
        s.wall.script("up-a", Answer("whole"))
        r = await s.post("a", stream=True)  # a stream that reaches its end is a success
        assert (r.done, r.text) == (True, "whole")
        assert (await s.breakers())["pa/a"]["fail_counter"] == 0


async def test_f15_a_provider_that_always_cuts_mid_stream_trips_its_breaker() -> None:
    async with bed() as s:
        s.wall.script("up-a", [CutStream(after=1)] * 5)
        for _ in range(5):
            r = await s.post("ab", stream=True)
            assert (r.status, r.model) == (200, "a")  # failover ends at the first byte
            assert r.error is not None
        assert (await s.breakers())["pa/a"]["state"] == "open"
        r = await s.post("ab", stream=True)  # now skipped without a call
        assert (r.status, r.model, r.done) == (200, "b", True)
        assert s.count("a") == (5,)


# --- F16-F21: transport and stream faults ----------------------------------------------------


async def test_f16_reset_before_headers_is_retried_or_failed_over() -> None:
    async with bed() as s:
        s.wall.script("up-a", Reset())
        r = await s.post("abc")
        assert (r.status, r.model) == (200, "b")
        assert s.count("a") <= (2,)
        assert r.attempt_codes[0] == "provider_unavailable"
        s.wall.script("up-c", [Reset(), Answer("after the reset")])
        r = await s.post("c")  # alone: one retry on the same target
        assert (r.status, r.text) == (200, "after the reset")
        assert s.count("c") == (2,)


async def test_f17_reset_mid_stream_is_an_in_band_error_never_a_truncated_success() -> None:
    async with bed() as s:
        s.wall.script("up-a", CutStream(after=2, abort=True))
        r = await s.post("abc", stream=True)
        assert (r.status, r.model) == (200, "a")
        assert r.text == "one two "
        assert not r.done
        assert r.error is not None
        assert r.error["code"] in ("provider_unavailable", "stream_truncated")
        assert s.count("a", "b") == (1, 0)  # no transparent retry after the first byte
        assert r.ended - r.times[-2] < 0.5


@pytest.mark.parametrize(
    "behaviour",
    [
        Answer("a b c d e", chunk_delay=3 * IDLE_S),
        StallStream(after=2, seconds=30),
        CutStream(after=2),
        InBandError(after=2),
    ],
    ids=["f14_slow_stream", "f15_stall", "f17_cut", "upstream_in_band_error"],
)
async def test_f14_f15_f17_failure_after_the_first_byte_raises_in_the_openai_sdk(
    behaviour: Any,
) -> None:
    """Seen through the official SDK: a stream that breaks after text went out (slow, stalled,
    cut, or an upstream in-band error) raises `openai.APIError`, never ends as a success, and
    is never retried on B."""
    async with bed() as s:
        s.wall.script("up-a", behaviour)
        started = time.monotonic()
        async with openai.AsyncOpenAI(
            base_url=f"{s.url}/v1", api_key="unused", max_retries=0
        ) as client:
            stream = await client.chat.completions.create(model="ab", messages=Q, stream=True)  # type: ignore[arg-type]
            text: list[str] = []

            async def drain() -> None:
                async for chunk in stream:
                    text.extend(c.delta.content or "" for c in chunk.choices)

            with pytest.raises(openai.APIError):
                await drain()
        assert text  # the first bytes did reach the client
        assert time.monotonic() - started < 3.5
        assert s.count("a", "b") == (1, 0)  # no transparent retry after the first byte
        async with s.http.get(f"{s.url}/healthz") as response:
            assert response.status == 200


async def test_f18_malformed_json_body_fails_over_and_never_reaches_the_client() -> None:
    async with bed() as s:
        s.wall.script("up-a", Malformed())
        r = await s.post("abc")
        assert (r.status, r.model) == (200, "b")
        assert r.attempt_codes == ["provider_malformed", "ok"]
        assert "not json" not in r.raw
        assert (await s.breakers())["pa/a"]["fail_counter"] == 1
        r = await s.post("a")  # no alternative: 502, still no garbage
        assert r.status == 502
        assert r.body["error"]["code"] == "all_providers_failed"
        assert "not json" not in r.raw


async def test_f19_one_malformed_event_never_reaches_the_client() -> None:
    """Whatever the router does with the bad event, the caller gets valid SSE only, the stream
    ends with `[DONE]` or an in-band error, and the process stays healthy."""
    async with bed() as s:
        s.wall.script("up-a", MalformedEvent(at=2))
        r = await s.post("abc", stream=True)
        assert r.status == 200
        assert all(e == "[DONE]" or isinstance(e, dict) for e in r.events)  # every event parses
        assert "not json" not in r.raw
        assert r.done or r.error is not None
        async with s.http.get(f"{s.url}/healthz") as response:
            assert response.status == 200


async def test_f19_one_malformed_event_is_skipped_and_the_stream_completes() -> None:
    async with bed() as s:
        s.wall.script("up-a", MalformedEvent(at=2, answer=Answer("one two three four")))
        r = await s.post("abc", stream=True)
        assert (r.status, r.model) == (200, "a")
        assert r.done
        assert r.text == "one two three four"
        assert metric_value(await s.metrics(), "router_sse_malformed_total", provider="pa") == 1
        assert (await s.breakers())["pa/a"]["fail_counter"] == 0


async def test_f19_a_stream_of_malformed_events_still_fails() -> None:
    async with bed() as s:  # skip_malformed_events: 1 (the default); the second one fails
        s.wall.script("up-a", MalformedEvent(at=1, repeat=2, answer=Answer("one two three")))
        r = await s.post("abc", stream=True)
        assert (r.status, r.model) == (200, "a")
        assert not r.done
        assert r.error is not None
        assert r.error["code"] == "provider_malformed"
        assert "not json" not in r.raw


async def test_f19_malformed_first_event_fails_over_and_never_reaches_the_client() -> None:
    """The only event of A's stream is not JSON: nothing went out yet, so the router fails over."""
    async with bed() as s:
        s.wall.script("up-a", Malformed())
        r = await s.post("ab", stream=True)
        assert (r.status, r.model, r.text) == (200, "b", "from b")
        assert r.done
        assert "not json" not in r.raw


async def test_f20_truncated_stream_fails_over_before_the_first_byte_and_errors_after() -> None:
    from structlog.testing import capture_logs

    async with bed() as s:
        s.wall.script("up-a", CutStream(after=0))
        r = await s.post("abc", stream=True)
        assert (r.status, r.model, r.text) == (200, "b", "from b")
        assert r.done
        assert s.count("a", "b") == (1, 1)
        s.wall.script("up-a", CutStream(after=2))  # clean close, no finish_reason, no [DONE]
        with capture_logs() as logs:
            r = await s.post("abc", stream=True)
        assert (r.status, r.model, r.text) == (200, "a", "one two ")
        assert not r.done
        assert r.error is not None
        assert r.error["code"] == "stream_truncated"
        assert s.count("a", "b") == (2, 1)
        completed = [e for e in logs if e["event"] == "request.completed"]
        assert completed[-1]["stream_truncated"] is True
        text = await s.metrics()
        assert metric_value(text, "router_stream_truncated_total", provider="pa") == 1


async def test_f21_finish_reason_without_done_is_a_prompt_success_with_usage() -> None:
    async with bed() as s:
        s.wall.script(
            "up-a", Answer("all there", input_tokens=5, output_tokens=2, done_marker=False)
        )
        r = await s.post("a", stream=True, usage=True)
        assert (r.status, r.text) == (200, "all there")
        assert r.done
        assert r.elapsed < 0.5
        usage = next(e["usage"] for e in r.events if isinstance(e, dict) and e.get("usage"))
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (5, 2)
        assert s.count("a") == (1,)


# --- F22-F25: DNS, TLS, redirects, size --------------------------------------------------------


def injected_resolver(mode: str, lookups: list[str]) -> Resolve:
    """Answers `*.invalid` itself (NXDOMAIN, or silence for `mode="timeout"`); counts lookups.
    No query ever leaves the process for those names."""

    async def resolve(host: str, port: int) -> str:
        if host.endswith(".invalid"):
            lookups.append(host)
            if mode == "timeout":
                await asyncio.sleep(2.0)
            raise OSError(socket.EAI_NONAME, "Name or service not known")
        return host

    return resolve


@pytest.mark.parametrize("mode", ["nxdomain", "timeout"])
async def test_f22_dns_failure_fails_over_at_once_with_one_lookup(mode: str) -> None:
    lookups: list[str] = []
    client = UpstreamClient(resolve=injected_resolver(mode, lookups))
    targets = (*ABC, Target("d", base_url="http://provider-a.invalid/v1"))
    async with bed(targets, routes={"db": ["d", "b"]}, client=client) as s:
        r = await s.post("db")
        assert (r.status, r.model) == (200, "b")
        assert r.attempted == ["pd", "pb"]
        expected = "provider_unavailable" if mode == "nxdomain" else "provider_timeout"
        assert r.attempt_codes == [expected, "ok"]
        assert lookups == ["provider-a.invalid"]  # ≤ 1 resolver call per request
        assert s.wall.calls_to("up-d") == []  # no TCP connection anywhere
        assert r.elapsed < (0.5 if mode == "nxdomain" else CONNECT_S + 0.5)


async def test_f23_untrusted_certificate_fails_over_and_never_downgrades() -> None:
    import trustme

    ca = trustme.CA()  # a CA the router has never heard of
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    tls_wall = Wall()
    tls = TestServer(openai_server.make_app(tls_wall), host="127.0.0.1", port=0)
    await tls.start_server(ssl=context)
    try:
        a = Target("a", base_url=f"https://127.0.0.1:{tls.port}/v1", key_env="TEST_KEY_A")
        async with bed(with_target(a)) as s:
            r = await s.post("abc")
            assert (r.status, r.model) == (200, "b")
            assert r.attempt_codes == ["provider_unavailable", "ok"]
            assert r.attempted == ["pa", "pb"]
            assert (await s.breakers())["pa/a"]["fail_counter"] == 1
    finally:
        await tls.close()
    assert tls_wall.calls == []  # the handshake failed: nothing was sent, in the clear or not


@pytest.mark.parametrize("status", [307, 302, 308])
async def test_f24_redirect_is_not_followed_and_is_a_provider_fault(status: int) -> None:
    elsewhere_wall = Wall()
    async with serve(openai_server.make_app(elsewhere_wall)) as elsewhere, bed() as s:
        location = str(elsewhere.make_url("/v1/chat/completions"))
        s.wall.script("up-a", Redirect(location, status=status))
        r = await s.post("abc")
        assert (r.status, r.model) == (200, "b")
        assert r.attempt_codes == ["provider_unavailable", "ok"]
        assert r.body["router"]["attempts"][0]["status"] == status
        assert s.count("a", "b") == (1, 1)
        assert (await s.breakers())["pa/a"]["fail_counter"] == 1
    assert elsewhere_wall.calls == []  # no request, so no credential either


# read_json reads the whole body under one idle clock: give it room, tracemalloc is slow
SLOW_BODY = dataclasses.replace(
    ABC[0], timeouts="{connect_s: 0.5, first_byte_s: 1, idle_s: 10, total_s: 20}"
)


async def oversized_peak(s: Bed) -> tuple[Result, int]:
    """Post to `abc` with A answering a 48 MiB body; the traced heap peak during the request."""
    s.wall.script("up-a", Huge(size=3 * MAX_RESPONSE_BYTES))
    tracemalloc.start()
    try:
        r = await s.post("abc")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return r, peak


async def test_f25_oversized_body_is_aborted_at_the_cap_and_fails_over() -> None:
    """A 48 MiB body is cut at the 16 MiB cap, never buffered whole, and is a provider fault."""
    async with bed(with_target(SLOW_BODY)) as s:
        r, peak = await oversized_peak(s)
        assert (r.status, r.model) == (200, "b")
        assert r.attempt_codes[0] == "response_too_large"
        assert peak < 2.5 * MAX_RESPONSE_BYTES  # bounded by the cap, not by the body (3x cap)
        assert (await s.breakers())["pa/a"]["fail_counter"] == 1
        await s.settled(1.0)


async def test_f25_oversized_body_costs_less_than_twice_the_cap() -> None:
    async with bed(with_target(SLOW_BODY)) as s:
        _, peak = await oversized_peak(s)
        assert peak < 2 * MAX_RESPONSE_BYTES


async def test_f25_endless_stream_before_any_event_is_cut_at_the_cap_and_fails_over() -> None:
    async with bed() as s:
        s.wall.script("up-a", Endless(events=False))
        r = await s.post("abc", stream=True)
        assert (r.status, r.model, r.text) == (200, "b", "from b")
        assert r.done
        assert s.count("a", "b") == (1, 1)
        await s.settled(1.0)  # the endless upstream was hung up on


async def test_f25_endless_stream_after_the_first_event_ends_in_an_in_band_error() -> None:
    async with bed() as s:
        s.wall.script("up-a", Endless(events=True, chunk_bytes=256 * 1024))
        r = await s.post("abc", stream=True)
        assert (r.status, r.model) == (200, "a")
        assert not r.done
        assert r.error is not None
        assert r.error["code"] == "response_too_large"
        assert len(r.text) <= MAX_RESPONSE_BYTES
        assert s.count("a", "b") == (1, 0)
        await s.settled(1.0)


async def test_f25_oversized_response_has_the_error_class_response_too_large() -> None:
    async with bed() as s:
        s.wall.script("up-a", Huge())
        r = await s.post("abc")
        assert r.attempt_codes[0] == "response_too_large"


# --- F26-F27: everything down, client gone ---------------------------------------------------


async def test_f26_every_allowed_target_down_gives_503_with_retry_after_and_never_a_denied_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "us.yaml").write_text(
        'jurisdiction: us\nversion: "t-1"\ndefault: allow\nrules:\n'
        "  - id: no-x\n    effect: deny\n    reason: test\n    match:\n      models: [x]\n"
    )
    targets = (*ABC, Target("x"))
    async with bed(targets, routes={"all": ["a", "x", "b", "c"]}, policies=tmp_path) as s:
        for m in ("a", "b", "c", "x"):
            s.wall.script(f"up-{m}", Status(503))
        results = []
        for _ in range(6):
            before = len(s.wall.calls)
            r = await s.post("all")
            results.append(r)
            assert len(s.wall.calls) - before <= 3  # attempts per request
            assert r.elapsed < 3 * 0.2 + 0.5  # ≤ 3 attempts' worth of time
            if r.status == 503:
                break
            assert (r.status, r.body["error"]["code"]) == (502, "all_providers_failed")
        assert results[-1].status == 503
        assert len(results) <= 6
        assert max(s.count("a", "b", "c")) <= 5  # the breakers opened within 5 faults
        before = len(s.wall.calls)
        r = await s.post("all")
        assert r.status == 503
        assert r.body["error"]["code"] == "all_upstreams_unavailable"
        assert 1 <= int(r.headers["Retry-After"]) <= OPEN_S + 1
        assert len(s.wall.calls) == before  # open breakers: nobody was called
        assert s.count("x") == (0,)  # policy beats availability: never the denied target
        board = await s.breakers()
        assert {board[k]["state"] for k in ("pa/a", "pb/b", "pc/c")} == {"open"}
        # the denied target is listed from startup (every configured target is), never tried
        assert (board["px/x"]["state"], board["px/x"]["fail_counter"]) == ("closed", 0)


async def test_f27_client_disconnect_mid_stream_closes_the_upstream_within_a_second() -> None:
    from structlog.testing import capture_logs

    async with bed() as s:
        s.wall.script("up-a", Answer(" ".join(["w"] * 200), chunk_delay=0.05))
        with capture_logs() as logs:
            response = await s.http.post(
                f"{s.url}/v1/chat/completions",
                json={"model": "abc", "messages": Q, "stream": True},
            )
            for _ in range(3):  # the role chunk and the first tokens arrived
                await response.content.readline()
            assert s.wall.active == 1
            response.close()  # the client goes away mid-stream
            took = await s.settled(1.0)
        assert took <= 1.0
        assert s.wall.cancelled == 1
        assert s.count("a", "b", "c") == (1, 0, 0)  # nothing retried on the client's behalf
        board = await s.breakers()
        assert (board["pa/a"]["state"], board["pa/a"]["fail_counter"]) == ("closed", 0)
        assert board["pa/a"]["window_failures"] == 0  # the cancel is neutral, not a fault
        await asyncio.sleep(0.05)  # the handler's log line follows its cancellation
        completed = [e for e in logs if e["event"] == "request.completed"]
        assert completed
        assert completed[-1].get("client_cancelled") is True


# --- beyond the matrix: what every error response reports --------------------------------------


async def test_error_responses_report_their_attempts_in_headers() -> None:
    async with bed() as s:
        for m in ("a", "b"):
            s.wall.script(f"up-{m}", Status(503))
        r = await s.post("ab")
        assert r.status == 502
        assert r.attempts == len(s.wall.calls)  # A once, B twice (its one jittered retry)
        assert r.attempted == ["p" + c.model.removeprefix("up-") for c in s.wall.calls]


async def test_a_caller_fault_and_an_unavailable_route_report_their_attempts_too() -> None:
    async with bed() as s:
        s.wall.script("up-a", Status(400, "bad field"))
        r = await s.post("abc")
        assert r.status == 400
        assert (r.attempts, r.attempted) == (1, ["pa"])
        r = await s.post("nope")  # never routed: no attempt headers at all
        assert r.status == 404
        assert "X-Router-Attempts" not in r.headers


async def test_a_demoted_target_is_tried_after_the_healthy_ones_and_still_serves() -> None:
    """A fails 3 of 10 calls (under the 50% trip rate): demoted, so the route starts at B; when
    B fails too, A still answers; when the demotion ends, A is first again."""
    breaker = "{fail_max: 5, reset_timeout_s: 3, demote_for_s: 1}"
    async with bed(breaker=breaker) as s:
        ok, bad = Answer("from a"), Status(503)
        s.wall.script("up-a", [bad, ok, ok, bad, ok, ok, bad, ok, ok, ok, bad])
        for _ in range(11):
            await s.post("ab")  # a fault on A fails over to B: one A call per request
        assert s.count("a") == (11,)
        board = await s.breakers()
        assert (board["pa/a"]["state"], board["pa/a"]["window_failures"]) == ("closed", 4)
        assert board["pa/a"]["demoted_for_s"] > 0
        r = await s.post("abc")
        assert (r.status, r.model, r.attempted) == (200, "b", ["pb"])
        s.wall.script("up-a", Answer("from a"))
        s.wall.script("up-b", Status(503))
        s.wall.script("up-c", Status(503))
        r = await s.post("abc")  # B and C fail: the demoted A is the third attempt
        assert (r.status, r.model, r.attempted) == (200, "a", ["pb", "pc", "pa"])
        await asyncio.sleep(1.1)
        r = await s.post("abc")
        assert (r.status, r.model, r.attempted) == (200, "a", ["pa"])
