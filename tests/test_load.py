"""The bounded load test of issue 3 (reliability bar 5.7, L2/L3/L6 at CI scale).

400 requests at concurrency 50 through the sidecar, half of them streaming, on the route
`mix: [dead, flaky, healthy]`:

- `dead` is hard down: its base_url is a closed port on 127.0.0.1 (connection refused);
- `flaky` answers 503 on a seeded 30% of calls;
- `healthy` always answers.

Checked at the wire: every request ends exactly once (a complete success with its terminal
marker, or a well-formed JSON error / in-band SSE error), the dead provider's breaker opens on
its 5th fault (no attempt on it starts after that), and upstream attempts per request stay at
or below 1.25. The fake cannot see attempts on a closed port, so the dead provider's attempts
are counted from the sidecar's `X-Router-Attempted` headers and error bodies, and cross-checked
against a recorder wrapped around the sidecar's provider object.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

from router.state import SERVICES
from router.types import Completion, ProviderCall, StreamEvent
from tests.fakes.script import Answer, Flaky, Wall
from tests.test_fault_matrix import Bed, Result, Target, bed

REQUESTS = 400
CONCURRENCY = 50
FLAKY_RATE = 0.3
RETRY = "{transient_base_s: 0.005, transient_cap_s: 0.02}"  # budget: the defaults (20%, 10/s)


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound to port 0, read, closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Recorder:
    """Wraps one of the sidecar's provider objects; records (start, end) of every attempt."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.protocol = inner.protocol
        self.spans: list[tuple[float, float]] = []

    async def complete(self, call: ProviderCall, /) -> Completion:
        started = time.monotonic()
        try:
            return await self.inner.complete(call)  # type: ignore[no-any-return]
        finally:
            self.spans.append((started, time.monotonic()))

    async def stream(self, call: ProviderCall, /) -> AsyncIterator[StreamEvent]:
        started = time.monotonic()
        try:
            async for event in self.inner.stream(call):
                yield event
        finally:
            self.spans.append((started, time.monotonic()))


def outcome(r: Result, stream: bool) -> str:
    """The request's single terminal outcome; raises if it ended in any other way."""
    if r.status != 200 or not stream:
        assert r.body is not None, r.raw  # a JSON body, never a bare reset or an empty answer
        if r.status == 200:
            assert r.text
            assert r.body["choices"][0]["finish_reason"] == "stop"
            return "success"
        assert r.body["error"]["code"]
        return "error"
    assert all(e == "[DONE]" or isinstance(e, dict) for e in r.events)  # only valid events
    if r.done:
        assert r.events.count("[DONE]") == 1
        assert r.text
        finishes = [
            c["finish_reason"]
            for e in r.events[:-1]
            for c in e.get("choices", [])
            if c.get("finish_reason")
        ]
        assert finishes == ["stop"]
        return "success"
    assert r.error is not None, r.raw  # an in-band error closes the stream: never a silent cut
    assert r.error["code"]
    assert "[DONE]" not in r.events
    return "error"


def dead_attempts(r: Result) -> int:
    """Attempts on the dead provider, from the headers (or the 502 body)."""
    if r.attempted:
        return r.attempted.count("pdead")
    attempts = ((r.body or {}).get("error") or {}).get("attempts", [])
    return sum(1 for a in attempts if a["provider"] == "pdead" and a["outcome"] != "skipped")


async def run_load(
    breaker: str, flaky_breaker: str | None = None
) -> tuple[Bed, list[Result], Recorder, dict[str, Any]]:
    """Runs the load inside a fresh bed (`flaky_breaker`: the flaky provider's own breaker
    settings); returns the bed (closed), results, recorder, board."""
    wall = Wall()
    wall.script("up-flaky", Flaky(FLAKY_RATE, seed=7, answer=Answer("flaky but fine")))
    wall.script("up-healthy", Answer("healthy"))
    targets = (
        Target("dead", base_url=f"http://127.0.0.1:{closed_port()}/v1"),
        Target("flaky", breaker=flaky_breaker),
        Target("healthy"),
    )
    routes = {"mix": ["dead", "flaky", "healthy"]}
    async with bed(targets, routes, wall=wall, breaker=breaker, retry=RETRY) as s:
        providers = s.app[SERVICES].runtime.providers
        recorder = Recorder(providers["pdead"])
        providers["pdead"] = recorder  # type: ignore[assignment]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> Result:
            async with gate:
                return await s.post("mix", stream=i % 2 == 0)

        async with asyncio.timeout(30):
            results = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
        board = await s.breakers()
    return s, results, recorder, board


def check_common(s: Bed, results: list[Result], recorder: Recorder, board: dict[str, Any]) -> int:
    """Zero lost requests and the dead breaker's behaviour; returns the upstream attempts."""
    assert len(results) == REQUESTS  # gather returns exactly one result per request
    for i, r in enumerate(results):
        outcome(r, i % 2 == 0)  # each ended once: complete success or well-formed error
        assert r.attempts is None or r.attempts <= 3
    dead = sum(dead_attempts(r) for r in results)
    assert dead == len(recorder.spans)  # what the sidecar reported is what it did
    # the dead breaker opened on its 5th fault: no attempt on it started after that fault ended
    ends = sorted(end for _, end in recorder.spans)
    assert len(ends) >= 5
    opened = ends[4]
    assert [start for start, _ in recorder.spans if start > opened] == []
    assert opened - min(start for start, _ in recorder.spans) <= 1.0  # L3: and within 1 s
    assert board["pdead/dead"]["state"] == "open"
    assert board["phealthy/healthy"]["state"] == "closed"
    return len(s.wall.calls) + dead


def successes(results: list[Result]) -> int:
    return sum(outcome(r, i % 2 == 0) == "success" for i, r in enumerate(results))


async def test_load_with_a_dead_and_a_30_percent_flaky_provider_on_default_breakers() -> None:
    """L2/L3 at CI scale with the default breaker settings: the dead provider's breaker opens on
    its 5th fault; the 30%-failing one stays closed (30% < the 50% trip rate) but is demoted
    behind the healthy one, so traffic settles there: <= 1.25 upstream attempts per request and
    >= 99.9% success."""
    s, results, recorder, board = await run_load("{fail_max: 5, reset_timeout_s: 30}")
    upstream_attempts = check_common(s, results, recorder, board)
    ratio = upstream_attempts / REQUESTS
    flaky = board["pflaky/flaky"]
    print(
        f"\nattempts per request {ratio:.3f}; on the dead provider: {len(recorder.spans)}; "
        f"on the flaky one: {len(s.wall.calls_to('up-flaky'))}"
    )
    assert flaky["state"] == "closed"
    assert flaky["demoted_for_s"] > 0
    assert successes(results) >= math.ceil(0.999 * REQUESTS)
    assert ratio <= 1.25


async def test_without_demotion_a_30_percent_flaky_first_choice_costs_its_failures() -> None:
    """The control: `demote_rate: 0` keeps the flaky provider first, and each of its failures
    costs a second attempt (about 1 + 0.3 per request), which is what demotion removes."""
    s, results, recorder, board = await run_load(
        "{fail_max: 5, reset_timeout_s: 30, demote_rate: 0}",
        # the flaky provider's breaker never trips here: with 50 requests in flight, five of its
        # failures can end in a row on a busy machine, and an open breaker would skip the very
        # attempts this control counts
        flaky_breaker="{fail_max: 1000, failure_rate: 1.0, reset_timeout_s: 30, demote_rate: 0}",
    )
    upstream_attempts = check_common(s, results, recorder, board)
    assert board["pflaky/flaky"]["demoted_for_s"] == 0
    assert successes(results) >= math.ceil(0.99 * REQUESTS)
    assert upstream_attempts / REQUESTS > 1.25
