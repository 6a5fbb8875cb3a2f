"""`explain`: the plan a request would get and every policy, breaker and capability decision,
without calling anything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from router.catalog import FUSION_PREFIX, Catalog, CatalogModel
from router.errors import InvalidRequest, MissingCapability, UnknownModel
from router.fusion.plan import plan_panel
from router.fusion.resolve import availability_for, research_of, research_plan, resolve_panel
from router.policy_view import PolicyView
from router.protocol_support import CAPABILITIES


def needs_of(query: str) -> frozenset[str]:
    """The `needs` of an explain query (`tools,vision`): capability names, each one known."""
    names = frozenset(n.strip() for n in query.split(",") if n.strip())
    unknown = sorted(names - set(CAPABILITIES))
    if unknown:
        raise InvalidRequest(
            f"unknown capability {unknown[0]!r} in 'needs' (known: {', '.join(CAPABILITIES)})",
            param="needs",
        )
    return names


def _decision(
    view: PolicyView,
    model: CatalogModel,
    unavailable: Callable[[CatalogModel], str | None],
    needs: frozenset[str],
) -> dict[str, Any]:
    decision = view.decision(model)
    return {
        "model": model.id,
        "provider": model.provider,
        "region": model.region,
        "vendor": model.vendor,
        "origin": model.origin,
        "tier": model.tier,
        "policy": decision.label,
        "rule": decision.rule_id,
        "reason": decision.reason,
        "jurisdiction": decision.jurisdiction,
        "availability": unavailable(model) or "available",
        "capabilities": model.capability_list,
        "capabilities_declared": model.capabilities_declared,
        "lacks": list(model.lacking(needs)),
    }


def explain(
    model: str,
    catalog: Catalog,
    view: PolicyView,
    unavailable: Callable[[CatalogModel], str | None] = lambda _m: None,
    needs: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The plan for `model` (a catalog model, a route or `fusion/<panel>`) as a plain dict,
    for a request that `needs` these capabilities (`protocol_support.CAPABILITIES`): a target
    that lacks one is skipped, as routing skips it."""
    head: dict[str, Any] = {
        "model": model,
        "needs": [c for c in CAPABILITIES if c in needs],
        "jurisdictions": list(view.jurisdictions),
        "policy_version": view.pinned.version,
        "policy_sha256": view.pinned.sha256,
        "date": view.today.isoformat(),
    }
    if model == "fusion" or model.startswith(FUSION_PREFIX):
        panel = resolve_panel(model, None, catalog)
        availability = availability_for(catalog.models, view.gate, unavailable)
        seat_needs = needs | ({"web_search"} if research_of(panel) else set())
        seat_availability = availability_for(catalog.models, view.gate, unavailable, seat_needs)
        plan = plan_panel(panel, catalog.models, availability, seat_availability)
        roles = (
            set(panel.panelists) | set(panel.judges) | set(panel.synthesizers) | set(plan.seated)
        )
        head.update(
            kind="fusion",
            plan=plan.as_dict(),
            research=research_plan(panel, plan.seated, catalog.models),
            decisions=[
                _decision(view, catalog.models[m], unavailable, needs)
                for m in sorted(roles)
                if m in catalog.models
            ],
        )
        return head
    chain = catalog.chain_for(model)
    if chain is None:
        raise UnknownModel(model)
    decisions = [_decision(view, catalog.models[m], unavailable, needs) for m in chain]
    head.update(
        kind="model" if model in catalog.models else "route",
        chain=decisions,
        would_try=[d["model"] for d in decisions if _usable(d)],
        outcome=_outcome(decisions),
    )
    return head


def _usable(decision: dict[str, Any]) -> bool:
    """Whether routing would call this target now."""
    return (
        decision["policy"] == "allowed"
        and not decision["lacks"]
        and decision["availability"] == "available"
    )


def _outcome(decisions: list[dict[str, Any]]) -> str:
    """What a request for the chain would get: `routable`, or why not (the error's code, for
    one that lacks capabilities: `model_lacks_capability`)."""
    allowed = [d for d in decisions if d["policy"] == "allowed"]
    if any(_usable(d) for d in allowed):
        return "routable"
    if not allowed:
        return "policy_denied"
    if all(d["lacks"] for d in allowed):
        return MissingCapability.code
    return "all_unavailable"


def render_text(result: dict[str, Any]) -> str:
    """A human-readable rendering for the CLI."""
    lines = [
        f"{result['model']} ({result['kind']}) under jurisdiction(s) {', '.join(result['jurisdictions'])}, "
        f"policy {result['policy_version']} (sha256 {result['policy_sha256'][:16]}), date {result['date']}"
    ]
    if result["kind"] == "fusion":
        plan = result["plan"]
        lines.append(f"panel {plan['panel']}, quorum {plan['quorum']}")
        for seat in plan["seats"]:
            lines.append(
                f"  seat {seat['seat']}: {seat['wanted']} -> {seat['model'] or 'EMPTY'}  ({seat['reason']})"
            )
        for role in ("judges", "synthesizers"):
            r = plan[role]
            excluded = ", ".join(f"{e['model']} ({e['reason']})" for e in r["excluded"]) or "none"
            lines.append(f"  {role}: {', '.join(r['candidates']) or 'NONE'}; excluded: {excluded}")
        research = result.get("research")
        if research:
            blocked = ", ".join(research["blocked_domains"]) or "none"
            lines.append(
                f"  research: {', '.join(research['tools'])}, up to {research['max_searches']} "
                f"searches a panelist; blocked domains: {blocked}"
            )
            for seat in research["seats"]:
                lines.append(
                    f"    {seat['model']} ({seat['protocol']}): blocked domains "
                    f"{seat['blocked_domains']}"
                )
        lines.append("decisions:")
    else:
        if result["needs"]:
            lines.append(f"for a request that needs: {', '.join(result['needs'])}")
        lines.append(
            f"would try, in order: {', '.join(result['would_try']) or 'nothing'} -> {result['outcome']}"
        )
        lines.append("chain:")
    for d in result.get("decisions") or result.get("chain") or []:
        lines.append(
            f"  {d['model']:<20} {d['policy']:<40} {d['availability']:<12} "
            f"[{d['provider']}, region {d['region']}, origin {d['origin']}] {d['reason']}"
        )
        lines.append(f"  {'':<20} {_capability_line(d)}")
    return "\n".join(lines)


def _capability_line(decision: dict[str, Any]) -> str:
    """A target's capabilities, and what it lacks (it is skipped) for the request explained."""
    declared = decision["capabilities_declared"]
    can = ", ".join(decision["capabilities"]) or "text only"
    line = f"capabilities: {can}" + ("" if declared else " (not declared: all assumed)")
    if decision["lacks"]:
        line += f"; skipped: lacks {', '.join(decision['lacks'])} ({MissingCapability.code})"
    return line
