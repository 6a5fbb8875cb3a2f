"""Panelists that research (issue 18), asked through the `openai` SDK: `panelist_tools: [web_search]` turns on each seat's
provider search, sources come back per seat and in the `fusion` object, the judge and the
synthesizer read them, blocked domains are dropped where a protocol cannot apply them, and a
panelist that cannot search is substituted before any call."""

from __future__ import annotations

from typing import Any

from router.catalog import Catalog
from router.fusion.plan import plan_panel
from router.fusion.resolve import availability_for, research_of, research_plan, resolve_panel
from tests.fakes.script import Researched
from tests.fusion_setup import fusion_sidecar, role_of
from tests.helpers import ask_openai, config_from_yaml

ASK = [{"role": "user", "content": "How many people live in Oslo?"}]
RESEARCH = "    panelist_tools: [web_search]\n    blocked_domains: [blocked.example]"
PAGES = {
    "m1": (("https://ssb.no/oslo", "Statistics Norway"), ("https://wiki.example/oslo", "Oslo")),
    "m2": (("https://ssb.no/oslo", "Statistics Norway"), ("https://www.blocked.example/k", "K")),
    "m3": (("https://oslo.kommune.no/facts", "City of Oslo"),),
}


def script_research(wall: Any) -> None:
    for model, pages in PAGES.items():
        wall.script(f"up-{model}", Researched(f"{model}: about 700,000 people.", sources=pages))


async def test_a_research_panel_searches_and_the_judge_reads_its_sources() -> None:
    async with fusion_sidecar(panel_extra=RESEARCH) as s:
        script_research(s.wall)
        status, body = await ask_openai(s, {"model": "fusion/trio", "messages": ASK})
        assert status == 200, body
        fusion = body["fusion"]
        by_role: dict[str, list[dict[str, Any]]] = {}
        for call in s.wall.calls:
            by_role.setdefault(role_of(call), []).append(call.body)
        # only panelists search; the judge and the synthesizer do not
        assert [b.get("web_search_options") for b in by_role["panelist"]] == [{}] * 3
        assert all("web_search_options" not in b for b in by_role["judge"] + by_role["synthesizer"])
        seats = {seat["served"]: seat for seat in fusion["seats"]}
        assert [src["url"] for src in seats["m1"]["sources"]] == [u for u, _ in PAGES["m1"]]
        # a blocked domain's page: dropped (Chat Completions cannot apply the block), counted
        assert [src["url"] for src in seats["m2"]["sources"]] == ["https://ssb.no/oslo"]
        assert (seats["m2"]["blocked_sources"], seats["m1"]["blocked_sources"]) == (1, 0)
        assert all(seat["web_searches"] == 1 for seat in seats.values())
        # the fusion object: every page once, in seat order
        assert [src["url"] for src in fusion["sources"]] == [
            "https://ssb.no/oslo",
            "https://wiki.example/oslo",
            "https://oslo.kommune.no/facts",
        ]
        research = fusion["research"]
        assert research["blocked_domains"] == ["blocked.example"]
        assert {seat["blocked_domains"] for seat in research["seats"]} == {
            "not applied: Chat Completions' web_search_options has no domain filter"
        }
        # the judge and the synthesizer see each answer's sources, never the blocked page
        for role in ("judge", "synthesizer"):
            prompt = by_role[role][0]["messages"][-1]["content"]
            assert "Sources:" in prompt
            assert "<https://oslo.kommune.no/facts>" in prompt
            assert "blocked.example" not in prompt


async def test_a_panel_that_does_not_research_sends_no_search() -> None:
    async with fusion_sidecar() as s:
        status, body = await ask_openai(s, {"model": "fusion/trio", "messages": ASK})
        assert status == 200, body
        assert all("web_search_options" not in c.body for c in s.wall.calls)
        assert body["fusion"]["sources"] == []
        assert "research" not in body["fusion"]


async def test_research_can_be_turned_on_per_request() -> None:
    async with fusion_sidecar() as s:
        script_research(s.wall)
        body = {
            "model": "fusion/trio",
            "messages": ASK,
            "fusion": {"panelist_tools": ["web_search"]},
        }
        status, answer = await ask_openai(s, body)
        assert status == 200, answer
        panelists = [c.body for c in s.wall.calls if role_of(c) == "panelist"]
        assert [b.get("web_search_options") for b in panelists] == [{}] * 3
        assert answer["fusion"]["research"]["blocked_domains"] == []
        status, refused = await ask_openai(
            s, {**body, "fusion": {"panelist_tools": ["code_interpreter"]}}
        )
        assert (status, refused["error"]["param"]) == (400, "fusion.panelist_tools.0")


def _mixed_catalog(capabilities_m3: str) -> Catalog:
    """Three seats on three protocols (no server: planning and explain only)."""
    providers = "\n".join(
        f"  p-{proto}:\n    protocol: {proto}\n    base_url: https://{proto}.invalid/v1\n"
        "    region: us\n    api_key_env: KEY"
        for proto in ("openai", "anthropic", "gemini")
    )
    models = "\n".join(
        f"  {name}:\n    provider: p-{proto}\n    upstream_id: {name}\n    vendor: V{i}\n"
        f"    origin: us\n    tier: budget\n    context_window: 100000\n"
        f"    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}{extra}"
        for i, (name, proto, extra) in enumerate(
            [
                ("m1", "openai", ""),
                ("m2", "anthropic", ""),
                ("m3", "gemini", f"\n    capabilities: {capabilities_m3}"),
                ("spare", "anthropic", ""),
            ]
        )
    )
    yaml = f"""
jurisdiction: us
providers:
{providers}
models:
{models}
panels:
  look:
    panelists: [m1, m2, m3]
    synthesizers: [m2]
{RESEARCH}
"""
    return Catalog.from_config(config_from_yaml(yaml).config)


def test_research_says_per_protocol_where_blocked_domains_apply() -> None:
    catalog = _mixed_catalog("[tools, web_search]")
    panel = resolve_panel("fusion/look", None, catalog)
    told = research_plan(panel, ("m1", "m2", "m3"), catalog.models)
    assert told is not None
    applied = {seat["model"]: seat["blocked_domains"] for seat in told["seats"]}
    assert applied["m2"] == "applied"  # Anthropic's web_search tool takes blocked_domains
    assert applied["m1"].startswith("not applied: Chat Completions")
    assert applied["m3"].startswith("not applied: the Gemini API")


def test_a_panelist_that_cannot_search_is_substituted_before_any_call() -> None:
    """The planner sees the seats' needs (`web_search`, for a panel that researches): a
    panelist whose catalog entry lacks it gives its seat to one that has it."""
    catalog = _mixed_catalog("[tools]")
    panel = resolve_panel("fusion/look", None, catalog)
    assert research_of(panel) is not None
    everyone = availability_for(catalog.models, lambda _m: None, lambda _m: None)
    searchers = availability_for(
        catalog.models, lambda _m: None, lambda _m: None, frozenset({"web_search"})
    )
    plan = plan_panel(panel, catalog.models, everyone, searchers)
    seat = plan.seats[2]
    assert (seat.wanted, seat.model) == ("m3", "spare")
    assert "lacks 'web_search'" in seat.reason
    assert [s.model for s in plan.seats[:2]] == ["m1", "m2"]
