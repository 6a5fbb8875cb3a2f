"""Independent judging and tier ceilings for substitutes (issue 18): a substitute is never the
judge's or synthesizer's model while another exists, and never above the seat's tier (or the
panel's `max_substitute_tier`); on the fusion bed and on the embedded default's seed panels."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from router.app import create_app
from router.config import TIER_RANK, load_config
from router.demo import with_sim_fault
from tests.fakes.script import Status
from tests.fusion_setup import MODELS, fusion_sidecar, roles
from tests.helpers import serve

QUESTION = [{"role": "user", "content": "When was the bridge built?"}]
EU = {"X-Router-Jurisdiction": "eu"}
DEFAULT_TIERS = {
    "claude-fable-5": "frontier",
    "claude-mythos-5": "frontier",
    "gpt-5.5": "frontier",
    "claude-opus-4.8": "strong",
    "gemini-3-flash": "budget",
    "kimi-k2.6": "budget",
    "deepseek-v4-pro": "budget",
}


async def ask(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", json=body, headers=headers or {}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return (await resp.json())["fusion"]


def fusion_body(panel: str, **options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": f"fusion/{panel}", "messages": QUESTION}
    if options:
        body["fusion"] = options
    return body


def served_roles(fusion: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(the seated substitutes, the judge's and synthesizer's models)."""
    subs = {s["model"] for s in fusion["plan"]["seats"] if s["model"] not in (None, s["wanted"])}
    subs |= {s["substitute"] for s in fusion["substitutions"]}
    judging = {r["model"] for r in (fusion["judge"], fusion["synthesizer"]) if r and r["model"]}
    return subs, judging


def within_tier(fusion: dict[str, Any], tiers: dict[str, str], ceiling: str | None = None) -> None:
    for seat in fusion["plan"]["seats"]:
        if seat["model"] not in (None, seat["wanted"]):
            limit = TIER_RANK[ceiling or tiers[seat["wanted"]]]
            assert TIER_RANK[tiers[seat["model"]]] <= limit, seat
    for sub in fusion["substitutions"]:
        limit = TIER_RANK[ceiling or tiers[sub["failed"]]]
        assert TIER_RANK[tiers[sub["substitute"]]] <= limit, sub


BED_TIERS = {m: t for m, (_, _, t) in MODELS.items()}


# -- on the fusion bed -------------------------------------------------------------------------


async def test_a_substitute_never_climbs_above_the_seats_tier() -> None:
    """Two budget seats fail: sub1 (budget) takes one, sub2 (standard) is never called; the
    other seat stays empty and the panel still meets its quorum."""
    async with fusion_sidecar() as s:
        s.wall.script("up-m2", Status(500))
        s.wall.script("up-m3", Status(500))
        fusion = await ask(s.url, fusion_body("trio"))
        assert [seat["served"] for seat in fusion["seats"]] == ["m1", "sub1", None]
        assert "sub2" not in {m for _, m in roles(s.wall)}
        within_tier(fusion, BED_TIERS)
        assert fusion["synthesizer"]["model"] == "synth-m"


async def test_a_configured_ceiling_lets_a_substitute_climb_to_it() -> None:
    async with fusion_sidecar() as s:
        s.wall.script("up-m2", Status(500))
        s.wall.script("up-m3", Status(500))
        fusion = await ask(s.url, fusion_body("trio", max_substitute_tier="standard"))
        assert [seat["served"] for seat in fusion["seats"]] == ["m1", "sub1", "sub2"]
        within_tier(fusion, BED_TIERS, "standard")


async def test_an_explicit_substitute_above_the_tier_is_passed_over() -> None:
    """The panel's own pool obeys the ceiling too: sub2 (standard) is skipped for sub1."""
    async with fusion_sidecar() as s:
        s.wall.script("up-m2", Status(500))
        fusion = await ask(s.url, fusion_body("trio", substitutes=["sub2"]))
        assert [seat["served"] for seat in fusion["seats"]] == ["m1", "sub1", "m3"]
        assert "sub2" not in {m for _, m in roles(s.wall)}


async def test_the_only_substitute_being_the_judge_sits_and_the_judge_is_swapped() -> None:
    """sub1 is the request's first judge and the only budget substitute: it takes the failed
    seat, and judging goes to the next candidate (judge-m); the plan says so."""
    async with fusion_sidecar() as s:
        s.wall.script("up-m2", Status(500))
        fusion = await ask(s.url, fusion_body("trio", judges=["sub1", "judge-m"]))
        assert [seat["served"] for seat in fusion["seats"]] == ["m1", "sub1", "m3"]
        calls = roles(s.wall)
        assert ("judge", "judge-m") in calls
        assert ("judge", "sub1") not in calls
        assert fusion["judge"]["model"] == "judge-m"
        judges = fusion["plan"]["judges"]
        assert judges["candidates"] == ["judge-m"]
        assert any("sub1 -> judge-m" in line for line in judges["swapped"])
        assert any(
            e["model"] == "sub1" and "independent judging" in e["reason"]
            for e in judges["excluded"]
        )
        subs, judging = served_roles(fusion)
        assert not subs & judging


async def test_a_judge_candidate_is_not_picked_while_another_substitute_exists() -> None:
    """With the ceiling at strong, judge-m (strong) would rank like any model; it is a judge
    candidate, so the seat goes to another model and judge-m judges."""
    async with fusion_sidecar() as s:
        s.wall.script("up-m2", Status(500))
        s.wall.script("up-m3", Status(500))
        fusion = await ask(s.url, fusion_body("trio", max_substitute_tier="strong"))
        subs, judging = served_roles(fusion)
        assert subs
        assert not subs & judging
        assert not subs & {"judge-m", "synth-m", "synth-b"}
        assert fusion["judge"]["model"] == "judge-m"
        assert fusion["synthesizer"]["model"] == "synth-m"


async def test_without_independent_judging_the_old_choice_stands() -> None:
    async with fusion_sidecar() as s:
        s.wall.script("up-m2", Status(500))
        fusion = await ask(
            s.url, fusion_body("trio", judges=["sub1", "judge-m"], independent_judging=False)
        )
        assert [seat["served"] for seat in fusion["seats"]] == ["m1", "sub1", "m3"]
        assert ("judge", "sub1") in roles(s.wall)
        assert "swapped" not in fusion["plan"]["judges"]


async def test_a_configured_panelist_that_judges_stays_as_configured() -> None:
    """The operator's choice: judge-m both sits and judges; only substitutes are kept apart."""
    async with fusion_sidecar() as s:
        fusion = await ask(s.url, fusion_body("trio", panelists=["m1", "m2", "judge-m"]))
        assert [seat["served"] for seat in fusion["seats"]] == ["m1", "m2", "judge-m"]
        assert ("judge", "judge-m") in roles(s.wall)
        assert fusion["plan"]["judges"]["candidates"] == ["judge-m"]


async def test_the_panel_config_fields_are_read() -> None:
    """`independent_judging` and `max_substitute_tier` in the config file."""
    extra = "    independent_judging: false\n    max_substitute_tier: standard\n"
    async with fusion_sidecar(panel_extra=extra) as s:
        s.wall.script("up-m2", Status(500))
        s.wall.script("up-m3", Status(500))
        fusion = await ask(s.url, fusion_body("trio"))
        assert [seat["served"] for seat in fusion["seats"]] == ["m1", "sub1", "sub2"]


# -- on the embedded default's seed panels -----------------------------------------------------


SPARE = "gpt-5.5-mini"  # the embedded default's budget spare, on no panel


@asynccontextmanager
async def default_sidecar(down: str | None = None, *, spare: bool = False) -> AsyncIterator[str]:
    """A sidecar on the embedded default, `down` a simulated provider; without the budget
    spare unless `spare` (the seed's catalog: then no budget model is free)."""
    loaded = load_config(None)
    if not spare:
        config = loaded.config
        models = {k: v for k, v in config.models.items() if k != SPARE}
        loaded = loaded.model_copy(update={"config": config.model_copy(update={"models": models})})
    if down is not None:
        loaded = with_sim_fault(loaded, down, down=True)
    async with serve(create_app(loaded, environ={})) as server:
        yield str(server.make_url("")).rstrip("/")


async def test_budget_panel_with_kimi_down_gets_no_frontier_or_strong_substitute() -> None:
    """Kimi's provider is down: no budget model is free, so the seat stays empty (no Opus, no
    GPT-5.5 on a budget panel); Gemini and DeepSeek still meet the quorum."""
    async with default_sidecar("sim-moonshot") as url:
        fusion = await ask(url, fusion_body("budget"))
        assert [seat["served"] for seat in fusion["seats"]] == [
            "gemini-3-flash",
            None,
            "deepseek-v4-pro",
        ]
        assert fusion["substitutions"] == []
        within_tier(fusion, DEFAULT_TIERS)


async def test_budget_panel_with_kimi_down_takes_the_budget_spare() -> None:
    """With the embedded default's budget spare free, Kimi's seat goes to it, within its tier,
    and no judge or synthesizer is disturbed."""
    async with default_sidecar("sim-moonshot", spare=True) as url:
        fusion = await ask(url, fusion_body("budget"))
        assert [seat["served"] for seat in fusion["seats"]] == [
            "gemini-3-flash",
            SPARE,
            "deepseek-v4-pro",
        ]
        assert (fusion["judge"]["model"], fusion["synthesizer"]["model"]) == (
            "gpt-5.5",
            "claude-opus-4.8",
        )
        within_tier(fusion, {**DEFAULT_TIERS, SPARE: "budget"})


async def test_budget_panel_under_eu_plans_empty_seats_naming_the_tier_budget() -> None:
    """In the eu, Kimi and DeepSeek are denied; the only free models are above budget: both
    seats stay empty before any call, with the tier budget as the reason."""
    async with default_sidecar() as url:
        fusion = await ask(url, fusion_body("budget", degrade="best_single"), EU)
        seats = fusion["plan"]["seats"]
        assert [s["model"] for s in seats] == ["gemini-3-flash", None, None]
        for seat in seats[1:]:
            assert "no substitute within tier budget (at most budget)" in seat["reason"]


async def test_budget_panel_with_a_strong_ceiling_swaps_the_synthesizer() -> None:
    """Ceiling strong: Opus (strong) is the only substitute within it, and the budget panel's
    first synthesizer. It takes Kimi's seat; synthesis goes to GPT-5.5, and the plan says so."""
    async with default_sidecar("sim-moonshot") as url:
        fusion = await ask(url, fusion_body("budget", max_substitute_tier="strong"))
        assert [seat["served"] for seat in fusion["seats"]] == [
            "gemini-3-flash",
            "claude-opus-4.8",
            "deepseek-v4-pro",
        ]
        assert fusion["synthesizer"]["model"] == "gpt-5.5"
        assert fusion["judge"]["model"] == "gpt-5.5"
        subs, judging = served_roles(fusion)
        assert subs == {"claude-opus-4.8"}
        assert not subs & judging
        synth = fusion["plan"]["synthesizers"]
        assert synth["candidates"] == ["gpt-5.5"]
        assert any("claude-opus-4.8 -> gpt-5.5" in line for line in synth["swapped"])
        within_tier(fusion, DEFAULT_TIERS, "strong")


async def test_budget_panel_with_a_strong_ceiling_and_no_independence_self_synthesizes() -> None:
    async with default_sidecar("sim-moonshot") as url:
        fusion = await ask(
            url, fusion_body("budget", max_substitute_tier="strong", independent_judging=False)
        )
        assert fusion["seats"][1]["served"] == "claude-opus-4.8"
        assert fusion["synthesizer"]["model"] == "claude-opus-4.8"


async def test_frontier_panel_under_eu_never_seats_its_judge() -> None:
    """Fable 5 is denied in the eu; Opus (the judge and synthesizer) is not its substitute while
    another allowed model within the frontier tier exists."""
    async with default_sidecar() as url:
        fusion = await ask(url, fusion_body("frontier"), EU)
        seat = fusion["plan"]["seats"][0]
        assert seat["wanted"] == "claude-fable-5"
        assert "claude-fable-5 unavailable (policy eu" in seat["reason"]
        assert seat["model"] not in (None, "claude-opus-4.8", "claude-mythos-5")
        assert fusion["judge"]["model"] == "claude-opus-4.8"
        subs, judging = served_roles(fusion)
        assert not subs & judging
        within_tier(fusion, DEFAULT_TIERS)


async def test_frontier_panel_under_eu_without_independence_seats_opus() -> None:
    async with default_sidecar() as url:
        fusion = await ask(url, fusion_body("frontier", independent_judging=False), EU)
        assert fusion["plan"]["seats"][0]["model"] == "claude-opus-4.8"
        assert fusion["judge"]["model"] == "claude-opus-4.8"


async def test_frontier_panel_under_eu_with_no_other_model_forces_the_swap_in_the_plan() -> None:
    """Fable 5 and Gemini in the eu: only Opus and GPT-5.5 are free, both judging candidates.
    GPT-5.5 (same tier) sits, and leaves the judging roles to Opus, before any call."""
    async with default_sidecar() as url:
        fusion = await ask(
            url,
            fusion_body("frontier", panelists=["claude-fable-5", "gemini-3-flash"]),
            EU,
        )
        seat = fusion["plan"]["seats"][0]
        assert seat["model"] == "gpt-5.5"
        assert "independent judging" in seat["reason"]
        assert "judge is now claude-opus-4.8" in seat["reason"]
        assert "synthesizer is now claude-opus-4.8" in seat["reason"]
        assert fusion["plan"]["judges"]["candidates"] == ["claude-opus-4.8"]
        assert any("gpt-5.5 -> claude-opus-4.8" in x for x in fusion["plan"]["judges"]["swapped"])
        assert fusion["judge"]["model"] == "claude-opus-4.8"
        assert fusion["synthesizer"]["model"] == "claude-opus-4.8"
        subs, judging = served_roles(fusion)
        assert not subs & judging
