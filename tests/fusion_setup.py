"""A fusion test bed: eight models on five OpenAI-protocol providers, all on one fake server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from router.app import create_app
from router.fusion.prompts import JUDGE_SYSTEM, SYNTHESIZER_SYSTEM
from tests.fakes import openai_server
from tests.fakes.script import Answer, Call, Wall
from tests.helpers import TEST_POLICIES, Sidecar, config_from_yaml, serve

MODELS = {
    # id: (provider, vendor, tier)
    "m1": ("pa", "V1", "budget"),
    "m2": ("pb", "V2", "budget"),
    "m3": ("pc", "V3", "budget"),
    "sub1": ("pd", "V4", "budget"),
    "sub2": ("pe", "V5", "standard"),
    "judge-m": ("pd", "V6", "strong"),
    "synth-m": ("pe", "V7", "strong"),
    "synth-b": ("pa", "V8", "strong"),
}


def fusion_yaml(upstream: str, *, first_byte_s: float = 1.0, panel_extra: str = "") -> str:
    providers = "\n".join(
        f"""  {p}:
    protocol: openai
    base_url: {upstream}/v1
    allow_http: true
    region: us
    breaker: {{fail_max: 50, rate_min_calls: 1000}}
    timeouts: {{connect_s: 1, first_byte_s: {first_byte_s}, idle_s: 1, total_s: 5}}"""
        for p in ("pa", "pb", "pc", "pd", "pe")
    )
    models = "\n".join(
        f"""  {m}:
    provider: {p}
    upstream_id: up-{m}
    vendor: {v}
    origin: us
    tier: {t}
    context_window: 100000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}"""
        for m, (p, v, t) in MODELS.items()
    )
    return f"""
jurisdiction: us
policies: {TEST_POLICIES}
retry: {{transient_base_s: 0.01, transient_cap_s: 0.02}}
providers:
{providers}
models:
{models}
panels:
  trio:
    panelists: [m1, m2, m3]
    judges: [judge-m]
    synthesizers: [synth-m, synth-b]
    quorum: 2
    deadline_s: 10
{panel_extra}
"""


JUDGE_REPLY = json.dumps(
    {
        "agreements": ["[A1] and [A2] agree on the core claim."],
        "contradictions": ["[A3] contradicts [A1] on the date."],
        "errors": {"[A3]": ["wrong date"]},
        "ranking": ["[A1]", "[A2]", "[A3]"],
    }
)


def role_of(call: Call) -> str:
    """Which fusion role a recorded upstream call played."""
    system = call.body["messages"][0]["content"]
    if not isinstance(system, str):  # a list of parts: a user's, so a panelist's
        return "panelist"
    if system == JUDGE_SYSTEM:
        return "judge"
    if system.startswith(SYNTHESIZER_SYSTEM):
        return "synthesizer"
    return "panelist"


def roles(wall: Wall) -> list[tuple[str, str]]:
    return [(role_of(c), c.model.removeprefix("up-")) for c in wall.calls]


@asynccontextmanager
async def fusion_sidecar(
    environ: dict[str, str] | None = None, span_exporter: Any = None, **kwargs: object
) -> AsyncIterator[Sidecar]:
    wall = Wall()
    for m in MODELS:
        wall.script(f"up-{m}", Answer(f"answer from {m}"))
    wall.script("up-judge-m", Answer(JUDGE_REPLY))
    async with serve(openai_server.make_app(wall)) as upstream:
        loaded = config_from_yaml(fusion_yaml(str(upstream.make_url("")).rstrip("/"), **kwargs))  # type: ignore[arg-type]
        app = create_app(loaded, environ=environ or {}, span_exporter=span_exporter)
        async with serve(app) as server:
            s = Sidecar(str(server.make_url("")).rstrip("/"), wall, app)
            try:
                yield s
            finally:
                for c in s.clients:
                    await c.close()
