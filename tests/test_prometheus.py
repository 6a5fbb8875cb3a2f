"""A real Prometheus server scrapes the sidecar; the series ops alert on exist."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.script import Status
from tests.helpers import sidecar

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="Debian's prometheus package is not installed (.ci/run installs it)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def prometheus(target: str, workdir: Path) -> AsyncIterator[str]:
    """Prometheus on 127.0.0.1, scraping `target` every second."""
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: router\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    assert PROMETHEUS is not None
    process = await asyncio.create_subprocess_exec(
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        with contextlib.suppress(ProcessLookupError):
            async with asyncio.timeout(10):
                await process.wait()


async def query(http: aiohttp.ClientSession, base: str, promql: str) -> list[dict[str, Any]]:
    async with http.get(f"{base}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success"
    return body["data"]["result"]  # type: ignore[no-any-return]


async def test_prometheus_scrapes_requests_and_breaker_state(tmp_path: Path) -> None:
    """A request counter and a breaker-state series appear in a real Prometheus."""
    async with sidecar() as s, aiohttp.ClientSession() as http:
        s.wall.script("up-model-a", Status(500))
        for _ in range(3):
            async with http.post(
                f"{s.base_url}/chat/completions",
                json={"model": "both", "messages": [{"role": "user", "content": "x"}]},
            ) as response:
                assert response.status == 200
        target = s.url.removeprefix("http://")
        async with prometheus(target, tmp_path) as base:
            requests: list[dict[str, Any]] = []
            breakers: list[dict[str, Any]] = []
            async with asyncio.timeout(40):
                while not (requests and breakers):
                    await asyncio.sleep(0.5)
                    with contextlib.suppress(aiohttp.ClientError):
                        requests = await query(
                            http, base, 'router_requests_total{target="both",outcome="ok"}'
                        )
                        breakers = await query(http, base, "router_breaker_state")
            assert float(requests[0]["value"][1]) == 3
            states = {b["metric"]["key"]: float(b["value"][1]) for b in breakers}
            assert states, breakers
            attempts = await query(
                http,
                base,
                'router_upstream_attempts_total{provider="up-a",outcome="provider_fault"}',
            )
            assert float(attempts[0]["value"][1]) >= 3
