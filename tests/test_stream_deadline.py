"""The request deadline over a served stream: `StreamDeadline` alone, then through a sidecar."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from router.app import create_app
from router.stream_deadline import StreamDeadline
from tests.helpers import TEST_POLICIES, config_from_yaml, serve


async def test_an_open_stream_is_cancelled_at_its_deadline_and_knows_it() -> None:
    loop = asyncio.get_running_loop()
    clock = StreamDeadline(loop, time.monotonic() + 0.05)
    loop.call_soon(clock.arm)
    await asyncio.sleep(0)  # the handler's first wait: the timer is armed here
    clock.open()
    started = time.monotonic()
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        assert clock.ours()
    else:
        raise AssertionError("the deadline did not cancel the wait")
    assert time.monotonic() - started < 1
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]  # uncancelled


async def test_before_the_stream_opens_the_deadline_only_marks_itself() -> None:
    loop = asyncio.get_running_loop()
    clock = StreamDeadline(loop, time.monotonic() + 0.01)
    clock.arm()
    await asyncio.sleep(0.05)  # passes the deadline while "opening": no cancellation here
    assert clock.expired
    assert clock.open() is True  # opening late reports it; the caller ends the stream
    await asyncio.sleep(0)  # and nothing cancels the task behind its back
    assert not clock.ours()


async def test_a_stream_that_failed_to_open_leaves_no_timer() -> None:
    """open_stream can raise before its first wait: the queued `arm` must then do nothing."""
    loop = asyncio.get_running_loop()
    clock = StreamDeadline(loop, time.monotonic() + 0.02)
    loop.call_soon(clock.arm)
    clock.disarm()  # the failed open, before the loop ran the callback
    await asyncio.sleep(0.06)
    assert not clock.expired


async def test_another_cancellation_is_not_the_deadline_s() -> None:
    async def handler() -> bool:
        clock = StreamDeadline(asyncio.get_running_loop(), time.monotonic() + 0.05)
        clock.open()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return clock.ours()
        return True

    task = asyncio.create_task(handler())
    await asyncio.sleep(0.01)
    task.cancel()  # the client went away, before the deadline
    assert await task is False


async def test_a_disarmed_deadline_never_fires() -> None:
    clock = StreamDeadline(asyncio.get_running_loop(), time.monotonic() + 0.01)
    clock.open()
    clock.disarm()
    await asyncio.sleep(0.05)
    assert not clock.expired


SIM_YAML = f"""
jurisdiction: us
policies: {TEST_POLICIES}
providers:
  slow-sim:
    protocol: sim
    region: us
    sim: {{latency_ms: 0, chunk_ms: 3000}}
models:
  slow:
    provider: slow-sim
    upstream_id: slow-1
    vendor: VendorA
    origin: us
    tier: strong
    context_window: 8000
    max_output_tokens: 1000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
"""


async def test_a_stream_that_outlives_its_deadline_ends_with_an_in_band_error() -> None:
    """The simulated provider is not self-clocked: only the stream deadline can stop it."""
    app = create_app(config_from_yaml(SIM_YAML), environ={})
    async with serve(app) as server, aiohttp.ClientSession() as http:
        started = time.monotonic()
        async with http.post(
            server.make_url("/v1/chat/completions"),
            json={"model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-Router-Deadline-Ms": "300"},
        ) as response:
            assert response.status == 200
            events = [
                json.loads(line[6:])
                for line in (await response.read()).decode().split("\n\n")
                if line.startswith("data: {")
            ]
        elapsed = time.monotonic() - started
    assert events[0]["choices"][0]["delta"]["content"]  # the first word came through
    assert events[-1]["error"]["code"] == "deadline_exceeded"
    assert elapsed < 1.5  # the provider would have taken 3 s for its next word
