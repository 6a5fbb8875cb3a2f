"""`demo`: start the sidecar in-process on the embedded default and show what it does, through real HTTP."""

from __future__ import annotations

import json
import time
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from router.app import create_app
from router.config import LoadedConfig, SimProfile, load_config


def with_sim_fault(loaded: LoadedConfig, provider: str, **changes: Any) -> LoadedConfig:
    """A copy of `loaded` whose simulated `provider` has a changed fault profile."""
    config = loaded.config
    current = config.providers[provider]
    profile = (current.sim or SimProfile()).model_copy(update=changes)
    providers = dict(config.providers)
    providers[provider] = current.model_copy(update={"sim": profile})
    return loaded.model_copy(update={"config": config.model_copy(update={"providers": providers})})


class _Printer:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def section(self, title: str) -> None:
        self()
        self(f"== {title} " + "=" * max(0, 70 - len(title)))


async def _post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[int, dict[str, str], Any, float]:
    started = time.perf_counter()
    async with session.post(url, json=body) as response:
        if body.get("stream"):
            text = ""
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunk = json.loads(line[6:])
                    for choice in chunk.get("choices", []):
                        text += choice.get("delta", {}).get("content") or ""
            data: Any = {"streamed_text": text}
        else:
            data = await response.json()
        return response.status, dict(response.headers), data, (time.perf_counter() - started) * 1000


async def run_demo(out: TextIO) -> int:
    """Send routed requests through a live sidecar while one simulated provider is down."""
    p = _Printer(out)
    loaded = with_sim_fault(load_config(None), "sim-anthropic", down=True)
    app = create_app(loaded, environ={})
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}/v1"
    p("fusion-router demo: the embedded default (simulated providers, example prices)")
    p(f"sidecar listening on {base}; provider sim-anthropic is DOWN for this demo")
    try:
        async with aiohttp.ClientSession() as session:
            p.section("1. a catalog model: gpt-5.5")
            status, headers, data, ms = await _post(
                session,
                f"{base}/chat/completions",
                {
                    "model": "gpt-5.5",
                    "messages": [
                        {"role": "user", "content": "What limits battery life in cold weather?"}
                    ],
                },
            )
            p(
                f"status {status} in {ms:.0f} ms, served by {headers.get('X-Router-Model')} at {headers.get('X-Router-Provider')}"
            )
            p(f"answer: {data['choices'][0]['message']['content']}")
            p(f"usage: {data['usage']}, cost ${data['router']['cost_usd']:.6f}")

            p.section(
                "2. route 'smart' = claude-fable-5 -> gpt-5.5 -> claude-opus-4.8, with Anthropic down"
            )
            status, headers, data, ms = await _post(
                session,
                f"{base}/chat/completions",
                {
                    "model": "smart",
                    "messages": [
                        {"role": "user", "content": "Summarise the causes of the 1929 crash."}
                    ],
                },
            )
            p(
                f"status {status} in {ms:.0f} ms; attempts: {headers.get('X-Router-Attempts')} ({headers.get('X-Router-Attempted')})"
            )
            for attempt in data["router"]["attempts"]:
                p(
                    f"  - {attempt['model']} at {attempt['provider']}: {attempt['outcome']} ({attempt['code']}) {attempt['duration_ms']} ms"
                )
            p(
                f"served by {headers.get('X-Router-Model')}: {data['choices'][0]['message']['content']}"
            )

            p.section("3. streaming from route 'fast'")
            status, headers, data, ms = await _post(
                session,
                f"{base}/chat/completions",
                {
                    "model": "fast",
                    "stream": True,
                    "messages": [{"role": "user", "content": "Name three uses of graphene."}],
                },
            )
            p(
                f"status {status} in {ms:.0f} ms from {headers.get('X-Router-Model')}: {data['streamed_text']}"
            )

            p.section("4. bad input gets a clear error, never a 5xx")
            for body in (
                {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
                {"model": "gpt-5.5", "messages": [], "api_base": "http://169.254.169.254"},
            ):
                status, _headers, data, _ms = await _post(session, f"{base}/chat/completions", body)
                p(f"status {status}: {data['error']['code']}: {data['error']['message']}")
    finally:
        await runner.cleanup()
    p()
    p("demo finished")
    return 0
