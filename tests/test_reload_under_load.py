"""Policy hot reload under load: zero errors, and every request keeps a whole snapshot."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from router.app import create_app
from tests.fakes import openai_server
from tests.fakes.script import Answer, Wall
from tests.helpers import config_from_yaml, serve, two_provider_yaml


async def test_reloads_during_load_cause_no_errors(tmp_path: Path) -> None:
    """200 requests at concurrency 20 while the policy is reloaded (valid, invalid, truncated)."""
    policy = tmp_path / "us.yaml"
    policy.write_text('jurisdiction: us\nversion: "1"\ndefault: allow\nrules: []\n')
    wall = Wall()
    wall.script("up-model-a", Answer("ok"))
    async with serve(openai_server.make_app(wall)) as upstream:
        loaded = config_from_yaml(
            two_provider_yaml(str(upstream.make_url("")).rstrip("/"), policies=tmp_path)
        )
        app = create_app(loaded, environ={"TEST_KEY_A": "a", "TEST_KEY_B": "b"})
        async with serve(app) as server, aiohttp.ClientSession() as http:
            url = str(server.make_url("/v1/chat/completions"))
            versions: list[str] = []
            gate = asyncio.Semaphore(20)

            async def one(i: int) -> int:
                async with (
                    gate,
                    http.post(
                        url,
                        json={"model": "m-a", "messages": [{"role": "user", "content": str(i)}]},
                    ) as r,
                ):
                    await r.read()
                    versions.append(r.headers.get("X-Router-Policy-Version", ""))
                    return r.status

            async def reloader() -> None:
                texts = [
                    'jurisdiction: us\nversion: "2"\ndefault: allow\nrules: []\n',
                    "jurisdiction: us\nversion: [",  # invalid: keeps the last good
                    'jurisdiction: us\nversion: "3"\ndefault: al',  # truncated mid-write
                    'jurisdiction: us\nversion: "4"\ndefault: allow\nrules: []\n',
                ]
                for text in texts:
                    policy.write_text(text)
                    async with http.post(str(server.make_url("/admin/reload"))) as r:
                        await r.read()
                    await asyncio.sleep(0.02)

            statuses, _ = await asyncio.gather(
                asyncio.gather(*(one(i) for i in range(200))), reloader()
            )
    assert set(statuses) == {200}
    assert set(versions) <= {"us@1", "us@2", "us@4"}  # never a partly applied or invalid set
    assert "us@4" in versions or "us@2" in versions
