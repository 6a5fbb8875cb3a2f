"""The fault matrix (reliability bar 5.2): each fault at provider A, asserted on the fake's
call log (who was called, how often, when) and on what the client got."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from router.app import create_app
from tests.fakes import openai_server
from tests.fakes.script import (
    Answer,
    CutStream,
    Delay,
    Hang,
    InBandError,
    Malformed,
    Reset,
    StallStream,
    Status,
    Wall,
)
from tests.helpers import KEYS, TEST_POLICIES, Sidecar, config_from_yaml, serve

Q = [{"role": "user", "content": "q"}]


def faults_yaml(upstream: str) -> str:
    def provider(name: str, url: str, key: str = "") -> str:
        key_line = f"\n    api_key_env: {key}" if key else ""
        return f"""  {name}:
    protocol: openai
    base_url: {url}
    allow_http: true
    region: us{key_line}
    breaker: {{fail_max: 5, reset_timeout_s: 3}}
    timeouts: {{connect_s: 0.5, first_byte_s: 1, idle_s: 0.5, total_s: 10}}"""

    def model(name: str, prov: str, context: int = 8000) -> str:
        return f"""  {name}:
    provider: {prov}
    upstream_id: up-{name}
    vendor: V-{name}
    origin: us
    tier: strong
    context_window: {context}
    price: {{input_per_mtok: 1, output_per_mtok: 1}}"""

    providers = "\n".join(
        [
            provider("pa", f"{upstream}/v1", "TEST_KEY_A"),
            provider("pb", f"{upstream}/v1", "TEST_KEY_B"),
            provider("pc", f"{upstream}/v1"),
            provider("pdns", "http://nonexistent.invalid/v1"),
        ]
    )
    models = "\n".join(
        [model("ma", "pa"), model("mb", "pb"), model("mc", "pc", 64000), model("md", "pdns")]
    )
    return f"""
jurisdiction: us
policies: {TEST_POLICIES}
retry: {{transient_base_s: 0.01, transient_cap_s: 0.05, throttle_base_s: 0.05, throttle_cap_s: 0.1}}
providers:
{providers}
models:
{models}
routes:
  ab: [ma, mb]
  abc: [ma, mb, mc]
  ac: [ma, mc]
  dns: [md, mb]
"""


@asynccontextmanager
async def bed(extra_app: web.Application | None = None) -> AsyncIterator[Sidecar]:
    wall = Wall()
    for m in ("ma", "mb", "mc"):
        wall.script(f"up-{m}", Answer(f"from {m}"))
    async with serve(openai_server.make_app(wall)) as upstream:
        app = create_app(
            config_from_yaml(faults_yaml(str(upstream.make_url("")).rstrip("/"))),
            environ=dict(KEYS),
        )
        async with serve(app) as server:
            s = Sidecar(str(server.make_url("")).rstrip("/"), wall, app)
            try:
                yield s
            finally:
                for c in s.clients:
                    await c.close()


def count(s: Sidecar, model: str) -> int:
    return len(s.wall.calls_to(f"up-{model}"))


async def post(s: Sidecar, model: str, stream: bool = False) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as http:
        body = {"model": model, "messages": Q, "stream": stream}
        async with http.post(f"{s.base_url}/chat/completions", json=body) as response:
            if stream:
                return response.status, dict(response.headers), (await response.read()).decode()
            return response.status, dict(response.headers), await response.json()


async def breakers(s: Sidecar) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{s.url}/admin/breakers") as response:
        return {b["key"]: b for b in (await response.json())["breakers"]}


async def test_f01_one_500_is_retried_once_on_the_same_target() -> None:
    """On the last (here: only) target, a 5xx gets one jittered retry."""
    async with bed() as s:
        s.wall.script("up-ma", [Status(500), Answer("second try")])
        started = time.monotonic()
        status, _headers, body = await post(s, "ma")
        assert (status, body["choices"][0]["message"]["content"]) == (200, "second try")
        assert (count(s, "ma"), count(s, "mb")) == (2, 0)
        assert time.monotonic() - started < 1.0
        assert (await breakers(s))["pa/ma"]["fail_counter"] == 0


@pytest.mark.parametrize("status", [503, 529], ids=["f02_503", "f03_529"])
async def test_f02_f03_persistent_5xx_fails_over_at_once(status: int) -> None:
    """With another target ready, a 5xx fails over at once (A ≤ 2 in the bar; we make it 1)."""
    async with bed() as s:
        s.wall.script("up-ma", Status(status, "overloaded"))
        code, headers, body = await post(s, "ab")
        assert code == 200
        assert body["model"] == "mb"
        assert (count(s, "ma"), count(s, "mb")) == (1, 1)
        assert headers["X-Router-Attempts"] == "2"


async def test_f04_retry_after_cools_the_target_and_fails_over_at_once() -> None:
    async with bed() as s:
        s.wall.script("up-ma", Status(429, "slow down", retry_after="2"))
        for _ in range(3):
            code, headers, _ = await post(s, "ab")
            assert code == 200
            assert headers["X-Router-Model"] == "mb"
        assert count(s, "ma") == 1  # cooled down for 2 s: not called again inside the window


async def test_f05_long_retry_after_on_the_only_target_is_a_429_with_capped_retry_after() -> None:
    async with bed() as s:
        s.wall.script("up-ma", Status(429, "slow down", retry_after="3600"))
        code, headers, body = await post(s, "ma")
        assert code == 429
        assert body["error"]["code"] == "rate_limited"
        assert 1 <= int(headers["Retry-After"]) <= 300
        assert count(s, "ma") == 1
        code, headers, body = await post(s, "ma")  # cooling down: refused without a call
        assert (code, body["error"]["code"]) == (429, "rate_limited")
        assert 290 <= int(headers["Retry-After"]) <= 300
        assert count(s, "ma") == 1


async def test_f06_429_without_retry_after_backs_off_once_on_the_last_target() -> None:
    async with bed() as s:
        s.wall.script("up-ma", Status(429, "slow down"))
        code, headers, _ = await post(s, "ab")
        assert (code, headers["X-Router-Model"]) == (200, "mb")
        assert count(s, "ma") == 1  # another target was ready: failed over at once
        code, headers, body = await post(s, "ma")
        assert code == 429  # throttled on every attempt: the caller is told to slow down
        assert body["error"]["code"] == "rate_limited"
        assert "Retry-After" not in headers  # the upstream gave no hint; we do not invent one
        calls = s.wall.calls_to("up-ma")
        assert len(calls) == 3  # alone, it was tried twice, with a throttle backoff between
        assert 0 <= calls[2].at - calls[1].at < 3


async def test_f07_exhausted_quota_is_not_retried_and_cools_for_minutes() -> None:
    async with bed() as s:
        s.wall.script(
            "up-ma", Status(429, "You exceeded your current quota", code="insufficient_quota")
        )
        for _ in range(2):
            code, headers, _ = await post(s, "ab")
            assert (code, headers["X-Router-Model"]) == (200, "mb")
        assert count(s, "ma") == 1


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [
        (Status(400, "bad field"), "upstream_rejected"),
        (Status(422, "unprocessable"), "upstream_rejected"),
        (
            Status(400, "maximum context length exceeded", code="context_length_exceeded"),
            "context_length_exceeded",
        ),
        (Status(400, "flagged", code="content_policy_violation"), "content_policy"),
    ],
    ids=["f08_400", "f08_422", "f09_context", "f10_content_policy"],
)
async def test_f08_f09_f10_caller_faults_are_neither_retried_nor_failed_over(
    behaviour: Status, code: str
) -> None:
    async with bed() as s:
        s.wall.script("up-ma", behaviour)
        status, _headers, body = await post(s, "ab")
        assert status == behaviour.status
        assert body["error"]["code"] == code
        assert (count(s, "ma"), count(s, "mb")) == (1, 0)
        assert (await breakers(s))["pa/ma"]["fail_counter"] == 0


async def test_f09_context_length_moves_to_a_larger_context_model_of_the_route() -> None:
    async with bed() as s:
        s.wall.script(
            "up-ma", Status(400, "maximum context length exceeded", code="context_length_exceeded")
        )
        status, headers, _ = await post(s, "ac")
        assert (status, headers["X-Router-Model"]) == (200, "mc")
        assert count(s, "ma") == 1


async def test_f11_rejected_key_fails_over_and_never_leaks() -> None:
    async with bed() as s:
        s.wall.script("up-ma", Status(401, "invalid key " + KEYS["TEST_KEY_A"]))
        status, headers, body = await post(s, "ab")
        assert (status, headers["X-Router-Model"]) == (200, "mb")
        assert count(s, "ma") == 1
        assert KEYS["TEST_KEY_A"] not in repr(body) + repr(headers)


async def test_f12_silent_provider_is_cut_at_first_byte_and_not_retried() -> None:
    async with bed() as s:
        s.wall.script("up-ma", Hang(30))
        started = time.monotonic()
        status, headers, _ = await post(s, "ab")
        elapsed = time.monotonic() - started
        assert (status, headers["X-Router-Model"]) == (200, "mb")
        assert count(s, "ma") == 1
        assert elapsed < 1 + 0.5 + 0.5


async def test_f13a_first_byte_inside_the_clock_is_a_success() -> None:
    async with bed() as s:
        s.wall.script("up-ma", Delay(0.6, Answer("late but fine")))
        status, headers, _ = await post(s, "ab")
        assert (status, headers["X-Router-Model"]) == (200, "ma")
        assert count(s, "ma") == 1


async def test_f13b_first_byte_past_the_clock_fails_over() -> None:
    async with bed() as s:
        s.wall.script("up-ma", Delay(5, Answer("too late")))
        started = time.monotonic()
        status, headers, _ = await post(s, "ab")
        assert (status, headers["X-Router-Model"]) == (200, "mb")
        assert count(s, "ma") == 1
        assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(
    "behaviour",
    [
        Answer("a b c d e", chunk_delay=1.5),
        StallStream(after=2, seconds=30),
        CutStream(after=2),
        InBandError(after=2),
    ],
    ids=["f14_slow_stream", "f15_stall", "f17_cut", "inband_error"],
)
async def test_f14_f15_f17_failure_after_first_byte_is_an_error_never_a_success(
    behaviour: Any,
) -> None:
    async with bed() as s:
        s.wall.script("up-ma", behaviour)
        started = time.monotonic()
        async with s.openai() as client:
            stream = await client.chat.completions.create(model="ab", messages=Q, stream=True)  # type: ignore[arg-type]
            text: list[str] = []

            async def drain() -> None:
                async for chunk in stream:
                    text.extend(c.delta.content or "" for c in chunk.choices)

            with pytest.raises(openai.APIError):
                await drain()
        assert text  # the first bytes did reach the client
        assert time.monotonic() - started < 3.5
        assert count(s, "mb") == 0  # no transparent retry after the first byte
        async with aiohttp.ClientSession() as http, http.get(f"{s.url}/healthz") as response:
            assert response.status == 200


async def test_f16_reset_before_headers_is_retried_or_failed_over() -> None:
    async with bed() as s:
        s.wall.script("up-ma", Reset())
        status, _headers, _ = await post(s, "ab")
        assert status == 200
        assert count(s, "ma") <= 2


@pytest.mark.parametrize("stream", [False, True], ids=["f18_body", "f19_first_event"])
async def test_f18_f19_malformed_answer_fails_over_and_garbage_never_reaches_the_client(
    stream: bool,
) -> None:
    async with bed() as s:
        s.wall.script("up-ma", Malformed())
        status, headers, body = await post(s, "ab", stream=stream)
        assert (status, headers["X-Router-Model"]) == (200, "mb")
        assert "not json" not in repr(body)


async def test_f20_truncated_stream_before_any_byte_fails_over() -> None:
    async with bed() as s:
        s.wall.script("up-ma", CutStream(after=0))
        status, headers, body = await post(s, "ab", stream=True)
        assert (status, headers["X-Router-Model"]) == (200, "mb")
        assert body.rstrip().endswith("data: [DONE]")


async def test_f21_finish_reason_without_done_marker_completes_promptly() -> None:
    async with bed() as s:
        s.wall.script("up-ma", Answer("all there", done_marker=False))
        started = time.monotonic()
        status, _headers, body = await post(s, "ma", stream=True)
        assert status == 200
        assert body.rstrip().endswith("data: [DONE]")
        assert "all" in body
        assert time.monotonic() - started < 0.5


async def test_f22_dns_failure_fails_over_at_once() -> None:
    async with bed() as s:
        status, headers, body = await post(s, "dns")
        assert (status, headers["X-Router-Model"]) == (200, "mb")
        assert next(a["code"] for a in body["router"]["attempts"]) == "provider_unavailable"


async def test_f24_redirects_are_not_followed() -> None:
    other = Wall()
    async with serve(openai_server.make_app(other)) as elsewhere, bed() as s:
        target = str(elsewhere.make_url("/v1/chat/completions"))

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(target)

        s.wall.script("up-ma", Status(307, "moved"))
        status, headers, _ = await post(s, "ab")
        assert (status, headers["X-Router-Model"]) == (200, "mb")
        assert other.calls == []
        assert redirect  # the fake answers 307 itself; the sidecar never follows


async def test_f26_every_target_down_opens_breakers_then_503_with_retry_after() -> None:
    async with bed() as s:
        for m in ("ma", "mb"):
            s.wall.script(f"up-{m}", Status(503))
        statuses = []
        for _ in range(8):
            status, _headers, body = await post(s, "ab")
            statuses.append(status)
            if status == 503:
                break
            assert body["error"]["code"] == "all_providers_failed"
        assert statuses[-1] == 503  # the breakers opened after a few failing requests
        assert count(s, "ma") <= 5  # within 5 faults
        before = len(s.wall.calls)
        status, headers, body = await post(s, "ab")
        assert status == 503
        assert body["error"]["code"] == "all_upstreams_unavailable"
        assert int(headers["Retry-After"]) >= 1
        assert len(s.wall.calls) == before  # open breakers: nobody was called
        states = await breakers(s)
        assert states["pa/ma"]["state"] == "open"


async def test_f27_client_disconnect_mid_stream_cancels_upstream_without_a_breaker_fault() -> None:
    async with bed() as s:
        s.wall.script("up-ma", Answer(" ".join(["w"] * 200), chunk_delay=0.05))
        async with aiohttp.ClientSession() as http:
            response = await http.post(
                f"{s.base_url}/chat/completions",
                json={"model": "ma", "messages": Q, "stream": True},
            )
            await response.content.readline()
            response.close()  # the client goes away mid-stream
        async with asyncio.timeout(1.0):
            while s.wall.active:
                await asyncio.sleep(0.02)
        assert s.wall.cancelled == 1
        assert (await breakers(s))["pa/ma"]["fail_counter"] == 0


async def test_f25_oversized_response_is_cut_at_the_cap_and_fails_over() -> None:
    """A body past the 16 MiB cap is a provider fault: aborted, never buffered whole, failed over."""
    from tests.fakes.script import Huge

    async with bed() as s:
        s.wall.script("up-ma", Huge())
        status, headers, body = await post(s, "ab")
        assert (status, headers["X-Router-Model"]) == (200, "mb")
        assert body["router"]["attempts"][0]["code"] == "response_too_large"


async def test_f23_untrusted_tls_certificate_fails_over_and_never_downgrades() -> None:
    """A provider whose certificate the router does not trust is a provider fault; the router
    fails over and never retries without verification (the fake sees no plaintext request)."""
    import ssl

    import trustme

    ca = trustme.CA()  # a CA the router has never heard of
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    tls_wall = Wall()
    tls_server = TestServer(openai_server.make_app(tls_wall), host="127.0.0.1", port=0)
    await tls_server.start_server(ssl=server_context)
    try:
        wall = Wall()
        wall.script("up-mb", Answer("from mb"))
        async with serve(openai_server.make_app(wall)) as upstream:
            plain = str(upstream.make_url("")).rstrip("/")
            text = faults_yaml(plain).replace(
                f"base_url: {plain}/v1\n    allow_http: true\n    region: us\n    api_key_env: TEST_KEY_A",
                f"base_url: https://127.0.0.1:{tls_server.port}/v1\n    region: us\n    api_key_env: TEST_KEY_A",
            )
            app = create_app(config_from_yaml(text), environ=dict(KEYS))
            async with serve(app) as server, aiohttp.ClientSession() as http:
                body = {"model": "ab", "messages": Q}
                async with http.post(
                    str(server.make_url("/v1/chat/completions")), json=body
                ) as response:
                    assert response.status == 200
                    assert response.headers["X-Router-Model"] == "mb"
                    data = await response.json()
        assert data["router"]["attempts"][0]["code"] == "provider_unavailable"
        assert tls_wall.calls == []  # the handshake failed: no request was ever sent in the clear
    finally:
        await tls_server.close()


FAULTS = [
    Answer("ok"),
    Status(500),
    Status(503),
    Status(429),
    Status(429, retry_after="1"),
    Status(400),
    Hang(3),
    Malformed(),
    Reset(),
    CutStream(after=0),
]


def test_r2_any_failure_schedule_keeps_the_attempt_cap_and_the_deadline() -> None:
    """R2: whatever each target does, a request makes ≤ 3 upstream calls and ends by its deadline."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        st.fixed_dictionaries(
            {
                m: st.lists(st.sampled_from(FAULTS), min_size=1, max_size=3)
                for m in ("ma", "mb", "mc")
            }
        ),
        st.booleans(),
    )
    def check(schedule: dict[str, list[Any]], stream: bool) -> None:
        async def run() -> None:
            async with bed() as s, aiohttp.ClientSession() as http:
                for model, behaviours in schedule.items():
                    s.wall.script(f"up-{model}", behaviours)
                started = time.monotonic()
                body = {"model": "abc", "messages": Q, "stream": stream}
                async with http.post(
                    f"{s.base_url}/chat/completions",
                    json=body,
                    headers={"X-Router-Deadline-Ms": "1500"},
                ) as response:
                    await response.read()
                    assert response.status in (200, 400, 429, 502, 503, 504)
                assert time.monotonic() - started < 1.5 + 0.5
                assert len(s.wall.calls) <= 3

        asyncio.run(run())

    check()
