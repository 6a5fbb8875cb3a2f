"""Served requests leave no reference cycles, so the collector's raised threshold costs no memory.

`fusion-router serve` raises the young generation's threshold to 20,000 (`router/cli.py`): the
collector then runs a few times a second instead of every few requests. That is free only while
a request's objects are freed by their reference counts; this checks it for the common paths,
with every span exported and without.
"""

from __future__ import annotations

import collections
import gc
from typing import Any

import aiohttp
import pytest

from tests.helpers import otlp_receiver, sidecar

QUESTION = [{"role": "user", "content": "hi"}]
BODIES: dict[str, dict[str, Any]] = {
    "whole": {"model": "m-a", "messages": QUESTION},
    "stream": {"model": "m-a", "messages": QUESTION, "stream": True},
    "route": {"model": "both", "messages": QUESTION},
    "refused": {"model": "m-a", "messages": "not a list"},
}


async def _cycles_per_request(url: str, body: dict[str, Any], count: int = 40) -> list[str]:
    """The types of the objects left in reference cycles by `count` requests of `body`."""
    async with aiohttp.ClientSession() as http:
        for _ in range(10):  # warm: first-use caches are not garbage
            async with http.post(url, json=body) as response:
                await response.read()
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(count):
                async with http.post(url, json=body) as response:
                    await response.read()
            gc.collect()
            found = [type(o).__qualname__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    return found


@pytest.mark.parametrize("traced", [False, True], ids=["untraced", "every-span"])
@pytest.mark.parametrize("case", sorted(BODIES))
async def test_a_served_request_leaves_no_reference_cycles(case: str, traced: bool) -> None:
    async with otlp_receiver() as (collector, _received):
        environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector} if traced else {}
        async with sidecar(environ=environ) as s:
            found = await _cycles_per_request(f"{s.url}/v1/chat/completions", BODIES[case])
    assert not found, collections.Counter(found).most_common(10)
