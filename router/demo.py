"""`demo`: the seed's story end to end, on the embedded default, through real HTTP.

It starts the sidecar in-process on 127.0.0.1 (port 0) with one simulated
provider down, then sends requests with a real HTTP client: the budget panel
(a panelist's provider is down, so the seat is substituted), the frontier
panel under the `eu` policy (Fable 5 is denied by the export directive and
substituted before anything is called), a routed request that fails over, and
bad input. It prints the plan, the policy decisions, the substitutions, the
judge's findings, the answer, cost against the solo models, per-stage
latency and the trace tree.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, TextIO

import aiohttp
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from router import logs, semconv
from router.app import create_app
from router.config import LoadedConfig, SimProfile, load_config
from router.state import SERVICES

DOWN_PROVIDER = "sim-moonshot"
QUESTION = "Which factors most limit the range of electric cars in winter, and what helps?"


def with_sim_fault(loaded: LoadedConfig, provider: str, **changes: Any) -> LoadedConfig:
    """A copy of `loaded` whose simulated `provider` has a changed fault profile."""
    config = loaded.config
    current = config.providers[provider]
    profile = (current.sim or SimProfile()).model_copy(update=changes)
    providers = dict(config.providers)
    providers[provider] = current.model_copy(update={"sim": profile})
    return loaded.model_copy(update={"config": config.model_copy(update={"providers": providers})})


async def start_sidecar(
    loaded: LoadedConfig,
    *,
    environ: Mapping[str, str] | None = None,
    span_exporter: InMemorySpanExporter | None = None,
) -> tuple[web.AppRunner, str]:
    """The sidecar for `loaded` serving in this process on 127.0.0.1 (a free port), and its
    base URL (`.../v1`); `environ` (default: none) is where key and token variables are read.
    The caller ends it with `runner.cleanup()`."""
    app = create_app(
        loaded, environ={} if environ is None else environ, span_exporter=span_exporter
    )
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/v1"


class _Out:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def section(self, title: str) -> None:
        self()
        self(f"== {title} " + "=" * max(0, 76 - len(title)))


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any, float]:
    started = time.perf_counter()
    async with session.post(url, json=body, headers=headers or {}) as response:
        if body.get("stream"):
            text, last = "", None
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunk = json.loads(line[6:])
                    last = chunk
                    for choice in chunk.get("choices", []):
                        text += choice.get("delta", {}).get("content") or ""
            data: Any = {"streamed_text": text, "last_chunk": last}
        else:
            data = await response.json()
        return response.status, dict(response.headers), data, (time.perf_counter() - started) * 1000


def _show_fusion(p: _Out, fusion: dict[str, Any], answer: str) -> None:
    p("plan (decided before any call):")
    for seat in fusion["plan"]["seats"]:
        p(
            f"  seat {seat['seat']}: {seat['wanted']:<16} -> {seat['model'] or 'EMPTY':<16} {seat['reason']}"
        )
    p("seats as served:")
    for seat in fusion["seats"]:
        subs = "; ".join(
            f"{s['failed']} failed ({s['code']}), substituted by {s['substitute']}"
            for s in seat["substitutions"]
        )
        p(
            f"  seat {seat['seat']}: {seat['served'] or '-':<16} {seat['status']:<9} {seat['latency_ms']:>7.1f} ms "
            f"${seat['cost_usd']:.6f}  {subs}"
        )
    judge = fusion["judge"]
    p(f"judge: {judge['model']} ({judge['status']})")
    findings = judge.get("findings") or {}
    for agreement in findings.get("agreements", []):
        p(f"  agrees:      {agreement}")
    for contradiction in findings.get("contradictions", []):
        p(f"  contradicts: {contradiction}")
    if findings.get("ranking"):
        p(f"  ranking:     {' > '.join(findings['ranking'])}")
    synth = fusion["synthesizer"]
    p(f"synthesizer: {synth['model']} ({synth['status']})")
    p(f"answer: {answer}")
    t = fusion["timings_ms"]
    p(
        f"timings: panel {t['panel']} ms, judge {t['judge']} ms, synthesis {t['synthesis']} ms, total {t['total']} ms"
    )
    p(
        f"upstream calls: {fusion['upstream_calls']}; degraded: {', '.join(fusion['degraded']) or 'no'}"
    )
    p(f"tokens: {fusion['usage']}")
    _show_cost(p, fusion["cost"])


def _show_cost(p: _Out, cost: dict[str, Any]) -> None:
    """The `cost` object: spend against the estimate, and the same question to one model."""
    cap = f", cap ${cost['max_cost_usd']}" if cost["max_cost_usd"] is not None else ""
    p(
        f"cost: ${cost['spent_usd']:.6f} spent (worst-case estimate ${cost['estimate_usd']:.4f}{cap})"
    )
    solo = cost.get("solo")
    if solo:
        p(
            f"      the same question to {solo['model']} alone: ${solo['cost_usd']:.6f} "
            f"-> this fusion cost {cost['vs_solo']:.0%} of it (example prices)"
        )
        per = cost["per_answer_token_usd"]
        p(
            f"      as answers grow long, each answer token costs the panel at most "
            f"${per['fusion'] * 1e6:.2f}/M against {solo['model']}'s ${per['solo'] * 1e6:.2f}/M "
            f"({cost['long_answers_vs_solo']:.0%})"
        )


def _trace_tree(spans: list[ReadableSpan], trace_id: int) -> list[str]:
    mine = [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
    children: dict[int | None, list[ReadableSpan]] = defaultdict(list)
    for span in mine:
        children[span.parent.span_id if span.parent else None].append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_time or 0):
            attrs = span.attributes or {}
            notes = [
                f"{k}={attrs[k]!s}"
                for k in (
                    semconv.ROUTER_FUSION_SEAT,
                    semconv.ROUTER_SUBSTITUTE_FOR,
                    semconv.ERROR_TYPE,
                )
                if k in attrs
            ]
            duration = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
            lines.append(f"{'  ' * depth}{span.name}  {duration:.1f} ms  {' '.join(notes)}")
            assert span.context is not None  # noqa: S101  # spans from our tracer carry a context
            walk(span.context.span_id, depth + 1)

    roots = [
        s
        for s in mine
        if s.parent is None
        or all(o.context and o.context.span_id != s.parent.span_id for o in mine)
    ]
    for root in roots:
        assert root.context is not None  # noqa: S101
        duration = ((root.end_time or 0) - (root.start_time or 0)) / 1e6
        lines.append(f"{root.name}  {duration:.1f} ms")
        walk(root.context.span_id, 1)
    return lines


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


async def _agent_turns(p: _Out, session: aiohttp.ClientSession, url: str) -> None:
    """A tool call and its result, a schema-bound answer, an image: what agents send."""
    ask = [{"role": "user", "content": "What is the weather in Oslo right now?"}]
    _s, _h, data, _ms = await _post(
        session, url, {"model": "gpt-5.5", "messages": ask, "tools": [WEATHER_TOOL]}
    )
    message = data["choices"][0]["message"]
    call = message["tool_calls"][0]
    p(f"  tool call: {call['function']['name']}({call['function']['arguments']})")
    result = {"role": "tool", "tool_call_id": call["id"], "content": '{"celsius": -3}'}
    _s, _h, data, _ms = await _post(
        session,
        url,
        {"model": "gpt-5.5", "messages": [*ask, message, result], "tools": [WEATHER_TOOL]},
    )
    p(f"  after the result: {data['choices'][0]['message']['content'][:90]}")
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "forecast",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "celsius": {"type": "integer"}},
                "required": ["city", "celsius"],
                "additionalProperties": False,
            },
        },
    }
    _s, _h, data, _ms = await _post(
        session, url, {"model": "gpt-5.5", "messages": ask, "response_format": schema}
    )
    p(f"  json_schema answer: {data['choices'][0]['message']['content']}")
    look = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": PIXEL}},
            ],
        }
    ]
    _s, _h, data, _ms = await _post(session, url, {"model": "gpt-5.5", "messages": look})
    p(f"  image: {data['choices'][0]['message']['content'][:90]}")


async def _research(p: _Out, session: aiohttp.ClientSession, url: str) -> None:
    """A research panel asked with a per-request cap: refused before any call with the
    `max_tokens` that fits, then answered with the sources each seat found."""
    ask = [{"role": "user", "content": "Which river is longer, the Nile or the Amazon?"}]
    capped = {"model": "fusion/research", "messages": ask, "fusion": {"max_cost_usd": 0.25}}
    status, _h, data, _ms = await _post(session, url, capped)
    error = data["error"]
    p(
        f"  max_cost_usd 0.25, no max_tokens: HTTP {status} {error['code']}; estimate "
        f"${error['estimate_usd']:.4f}; max_tokens {error['fits_max_tokens']} would fit"
    )
    status, _h, data, _ms = await _post(
        session, url, {**capped, "max_tokens": error["fits_max_tokens"]}
    )
    fusion = data["fusion"]
    p(f"  with max_tokens {error['fits_max_tokens']}: HTTP {status}")
    research = fusion["research"]
    p(f"  blocked domains: {', '.join(research['blocked_domains'])} (explain says per seat)")
    for seat in fusion["seats"]:
        p(f"  seat {seat['seat']}: {seat['served']}, {seat.get('web_searches', 0)} search(es):")
        for source in seat.get("sources", []):
            p(f"      {source['url']}  {source['title']}")
    p(f"  the judge read each answer with its sources; {len(fusion['sources'])} distinct pages")
    _show_cost(p, fusion["cost"])


async def run_demo(out: TextIO) -> int:
    """Run the whole story; returns the exit code."""
    logs.configure("error")
    p = _Out(out)
    exporter = InMemorySpanExporter()
    loaded = with_sim_fault(load_config(None), DOWN_PROVIDER, down=True)
    runner, base = await start_sidecar(loaded, span_exporter=exporter)
    app = runner.app
    url = f"{base}/chat/completions"
    question = [{"role": "user", "content": QUESTION}]
    p("fusion-router demo on the EMBEDDED DEFAULT: simulated providers, example prices, no network")
    p(
        f"sidecar on {base}, bound to jurisdiction 'us'; provider {DOWN_PROVIDER} (Kimi K2.6) is DOWN"
    )
    try:
        async with aiohttp.ClientSession() as session:
            p.section(
                "1. fusion/budget: Gemini 3 Flash + Kimi K2.6 + DeepSeek V4 Pro, Kimi's provider down"
            )
            status, headers, data, _ms = await _post(
                session, url, {"model": "fusion/budget", "messages": question}
            )
            p(
                f"HTTP {status}; X-Fusion-Seats: {headers.get('X-Fusion-Seats')}; X-Fusion-Substitutions: {headers.get('X-Fusion-Substitutions')}"
            )
            _show_fusion(p, data["fusion"], data["choices"][0]["message"]["content"])
            budget_cost = data["fusion"]["cost_usd"]
            first_request_id = headers.get("X-Request-Id")

            p.section("2. fusion/frontier under the eu policy (X-Router-Jurisdiction: eu)")
            status, headers, data, _ms = await _post(
                session,
                url,
                {"model": "fusion/frontier", "messages": question},
                {"X-Router-Jurisdiction": "eu"},
            )
            p(
                f"HTTP {status}; jurisdictions {headers.get('X-Router-Jurisdiction')}; policy {headers.get('X-Router-Policy-Version', '')[:60]}..."
            )
            p(f"policy exclusions: {headers.get('X-Router-Policy-Denied')}")
            _show_fusion(p, data["fusion"], data["choices"][0]["message"]["content"])

            p.section("3. the same question to solo models (cost comparison, us)")
            solo: dict[str, float] = {}
            for model in ("claude-fable-5", "gpt-5.5", "claude-opus-4.8"):
                status, _h, data, ms = await _post(
                    session, url, {"model": model, "messages": question}
                )
                solo[model] = data["router"]["cost_usd"]
                p(f"  {model:<16} HTTP {status} {ms:6.1f} ms  ${solo[model]:.6f}")
            p(
                f"  fusion/budget    ${budget_cost:.6f}  = {budget_cost / solo['claude-fable-5']:.0%} of Fable 5 solo "
                "(example prices; the simulated answers are short, so the judge and synthesizer prompts dominate)"
            )
            p("  the same panel with gpt-5.5 as judge and synthesizer (a per-request override):")
            cheaper = {"judges": ["gpt-5.5"], "synthesizers": ["gpt-5.5"]}
            status, _h, data, _ms = await _post(
                session, url, {"model": "fusion/budget", "messages": question, "fusion": cheaper}
            )
            _show_cost(p, data["fusion"]["cost"])
            p(
                "  published DRACO scores: Fable 5 alone 65.3%, budget panel 64.7% at about half its price, frontier 69.0%"
            )

            p.section(
                "4. route 'smart' = claude-fable-5 -> gpt-5.5 -> claude-opus-4.8, asked from the eu"
            )
            status, headers, data, _ms = await _post(
                session,
                url,
                {"model": "smart", "messages": question},
                {"X-Router-Jurisdiction": "eu"},
            )
            p(
                f"HTTP {status}: served by {headers.get('X-Router-Model')} at {headers.get('X-Router-Provider')}"
            )
            p(f"policy exclusions: {headers.get('X-Router-Policy-Denied')}")
            p("  a withdrawn model asked for directly, with no model_map entry: 403")
            status, _h, data, _ms = await _post(
                session,
                url,
                {"model": "claude-mythos-5", "messages": question},
                {"X-Router-Jurisdiction": "eu"},
            )
            p(f"  HTTP {status}: {data['error']['code']} (rule {data['error'].get('rule_id')})")
            p("  an Anthropic client (Claude Code's API) asks for claude-fable-5 from the eu:")
            status, headers, data, _ms = await _post(
                session,
                f"{base}/messages",
                {"model": "claude-fable-5", "max_tokens": 200, "messages": question},
                {"X-Router-Jurisdiction": "eu", "anthropic-version": "2023-06-01"},
            )
            p(
                f"  HTTP {status}: {data['type']} from {headers.get('X-Router-Model')}; "
                f"mapped from {headers.get('X-Router-Mapped-From')} "
                f"({headers.get('X-Router-Mapped-Why')}) by model_map"
            )

            p.section(
                "5. fusion/research: panelists search the web (SIMULATED pages), under a cost cap"
            )
            await _research(p, session, url)

            p.section("6. an agent's tools, a JSON schema and an image, on gpt-5.5 (simulated)")
            await _agent_turns(p, session, url)

            p.section("7. bad input gets a clear 4xx, never a 5xx")
            for body in (
                {"model": "no-such-model", "messages": question},
                {"model": "gpt-5.5", "messages": question, "api_base": "http://169.254.169.254"},
                {"model": "gpt-5.5", "messages": []},
            ):
                status, _h, data, _ms = await _post(session, url, body)
                p(f"  HTTP {status}: {data['error']['code']}: {data['error']['message']}")

            p.section("8. trace of request 1 (spans exported by OpenTelemetry)")
            app[SERVICES].telemetry.force_flush()
            trace_id = next(
                (
                    s.context.trace_id
                    for s in exporter.get_finished_spans()
                    if s.context
                    and (s.attributes or {}).get(semconv.ROUTER_REQUEST_ID) == first_request_id
                ),
                None,
            )
            if trace_id is not None:
                for line in _trace_tree(list(exporter.get_finished_spans()), trace_id):
                    p("  " + line)
    finally:
        await runner.cleanup()
    p()
    p(
        "demo finished: the answers kept coming with a provider down and a model withdrawn by policy."
    )
    return 0
