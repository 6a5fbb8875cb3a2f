"""The request deadline over a served stream, through a sidecar: the relay ends it at the deadline."""

from __future__ import annotations

import json
import time

import aiohttp

from router.app import create_app
from tests.helpers import TEST_POLICIES, config_from_yaml, serve

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
    """A provider that streams slower than the deadline: the relay ends the stream in-band."""
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
