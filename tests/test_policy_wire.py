"""Policy properties checked at the wire (P1, P2, P5, P7, P9): the fake upstream records every
call, and no failure pattern, jurisdiction header or reload sends one where policy forbids."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.app import create_app
from router.errors import ConfigError
from tests.fakes import openai_server
from tests.fakes.script import Answer, Hang, Status, Wall
from tests.helpers import config_from_yaml, serve

# model id -> (provider, region, vendor, tags)
MODELS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "us-a": ("p-us", "us", "VA", ()),
    "us-b": ("p-us", "us", "VB", ("export_restricted",)),
    "eu-a": ("p-eu", "de", "VC", ()),
    "eu-b": ("p-eu", "de", "VD", ("export_restricted",)),
    "cn-a": ("p-cn", "cn", "VE", ()),
    "cn-b": ("p-cn", "cn", "VF", ()),
}
JURISDICTIONS = ("us", "eu", "no", "gb")


def config_yaml(upstream: str, policies: Path) -> str:
    providers = "\n".join(
        f"""  {p}:
    protocol: openai
    base_url: {upstream}/v1
    allow_http: true
    region: {region}
    timeouts: {{connect_s: 1, first_byte_s: 0.3, idle_s: 0.3, total_s: 2}}"""
        for p, region in (("p-us", "us"), ("p-eu", "de"), ("p-cn", "cn"))
    )
    models = "\n".join(
        f"""  {m}:
    provider: {p}
    upstream_id: up-{m}
    vendor: {v}
    origin: us
    tier: budget
    tags: [{", ".join(t)}]
    context_window: 10000
    price: {{input_per_mtok: 1, output_per_mtok: 1}}"""
        for m, (p, _r, v, t) in MODELS.items()
    )
    return f"""
jurisdiction: us
policies: {policies}
retry: {{transient_base_s: 0.001, transient_cap_s: 0.002, throttle_base_s: 0.001, throttle_cap_s: 0.002}}
providers:
{providers}
models:
{models}
routes:
  everything: [us-a, us-b, eu-a, eu-b, cn-a, cn-b]
panels:
  wide:
    panelists: [us-a, eu-a, cn-a]
    judges: [us-b, eu-b]
    synthesizers: [cn-b, us-a]
    quorum: 1
    degrade: best_single
"""


def policy_yaml(
    jurisdiction: str, denied_models: set[str], denied_regions: set[str], version: int
) -> str:
    rules = []
    if denied_models:
        rules.append(
            f"  - id: deny-models\n    effect: deny\n    reason: test\n    match:\n      models: [{', '.join(sorted(denied_models))}]"
        )
    if denied_regions:
        rules.append(
            f"  - id: deny-regions\n    effect: deny\n    reason: test\n    match:\n      regions: [{', '.join(sorted(denied_regions))}]"
        )
    body = "\n".join(rules) if rules else "  []"
    sep = "\n" if rules else " "
    return (
        f'jurisdiction: {jurisdiction}\nversion: "{version}"\ndefault: allow\nrules:{sep}{body}\n'
    )


def denied(policy: dict[str, tuple[set[str], set[str]]], jurisdictions: list[str]) -> set[str]:
    """The oracle: models any effective jurisdiction denies (by id or region)."""
    out: set[str] = set()
    for j in jurisdictions:
        if j not in policy:
            return set(MODELS)
        models, regions = policy[j]
        out |= models | {m for m, (_p, region, _v, _t) in MODELS.items() if region in regions}
    return out


policies_strategy = st.fixed_dictionaries(
    {
        j: st.tuples(
            st.sets(st.sampled_from(sorted(MODELS))), st.sets(st.sampled_from(["us", "de", "cn"]))
        )
        for j in JURISDICTIONS
    }
)
behaviour = st.sampled_from(
    [Answer("ok"), Status(500), Status(503), Status(429, retry_after="1"), Status(400), Hang(5)]
)
request_strategy = st.tuples(
    st.sampled_from(["us-a", "us-b", "eu-a", "cn-b", "everything", "fusion/wide"]),
    st.lists(st.sampled_from(["eu", " EU ", "No", "gb", "zz", "us"]), max_size=2),
    st.booleans(),
)


def write_policies(
    folder: Path, policy: dict[str, tuple[set[str], set[str]]], version: int
) -> None:
    for j, (models, regions) in policy.items():
        (folder / f"{j}.yaml").write_text(policy_yaml(j, models, regions, version))


async def scenario(
    policy: dict[str, tuple[set[str], set[str]]],
    schedule: dict[str, Any],
    requests: list[tuple[str, list[str], bool]],
    tightened: dict[str, tuple[set[str], set[str]]] | None,
) -> None:
    wall = Wall()
    for model, b in schedule.items():
        wall.script(f"up-{model}", b)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_policies(folder, policy, 1)
        async with serve(openai_server.make_app(wall)) as upstream:
            loaded = config_from_yaml(config_yaml(str(upstream.make_url("")).rstrip("/"), folder))
            app = create_app(loaded, environ={})
            async with serve(app) as server, aiohttp.ClientSession() as http:
                url = str(server.make_url("/v1/chat/completions"))
                for index, (model, header, stream) in enumerate(requests):
                    if tightened is not None and index == len(requests) // 2:
                        write_policies(folder, tightened, 2)
                        async with http.post(str(server.make_url("/admin/reload"))) as r:
                            assert r.status == 200
                        policy = tightened
                    effective = ["us", *[h.strip().lower() for h in header]]
                    forbidden = denied(policy, effective)
                    before = len(wall.calls)
                    headers = {"X-Router-Jurisdiction": ",".join(header)} if header else {}
                    body = {
                        "model": model,
                        "messages": [{"role": "user", "content": "q"}],
                        "stream": stream,
                    }
                    async with http.post(url, json=body, headers=headers) as response:
                        await response.read()
                        assert response.status < 500 or response.status in (502, 503, 504)
                        if any(j not in policy for j in effective):
                            assert response.status == 403
                    called = {c.model.removeprefix("up-") for c in wall.calls[before:]}
                    assert not (called & forbidden), (
                        model,
                        effective,
                        called & forbidden,
                    )  # P1, P3, P5, P7


@settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    policy=policies_strategy,
    schedule=st.dictionaries(st.sampled_from(sorted(MODELS)), behaviour),
    requests=st.lists(request_strategy, min_size=1, max_size=4),
)
def test_p1_no_call_reaches_a_denied_target_under_any_failure_pattern(
    policy: dict[str, tuple[set[str], set[str]]],
    schedule: dict[str, Any],
    requests: list[tuple[str, list[str], bool]],
) -> None:
    """P1/P3/P7/P9: whatever fails, whatever the header says (any case or spacing), no call
    goes to a model or region denied for the request's effective jurisdictions."""
    asyncio.run(scenario(policy, schedule, requests, None))


@settings(
    max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    policy=policies_strategy,
    tightened=policies_strategy,
    requests=st.lists(request_strategy, min_size=2, max_size=4),
)
def test_p5_reloads_take_effect_for_every_later_call(
    policy: dict[str, tuple[set[str], set[str]]],
    tightened: dict[str, tuple[set[str], set[str]]],
    requests: list[tuple[str, list[str], bool]],
) -> None:
    """P5: after a reload, no call goes to a target the new policy denies."""
    asyncio.run(scenario(policy, {}, requests, tightened))


def test_p2_no_valid_policy_means_no_app_and_no_call(tmp_path: Path) -> None:
    """P2: a missing or invalid policy for the sidecar's jurisdiction stops startup."""
    (tmp_path / "eu.yaml").write_text(policy_yaml("eu", set(), set(), 1))
    loaded = config_from_yaml(config_yaml("http://127.0.0.1:9", tmp_path))
    with pytest.raises(ConfigError):
        create_app(loaded, environ={})
    (tmp_path / "us.yaml").write_text("jurisdiction: us\nversion: 1\ndefault: allow\nrules: [\n")
    with pytest.raises(ConfigError):
        create_app(loaded, environ={})
