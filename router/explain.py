"""`explain`: the plan a request would get and every policy and breaker decision, without calling anything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from router.catalog import FUSION_PREFIX, Catalog, CatalogModel
from router.errors import UnknownModel
from router.fusion.plan import plan_panel
from router.fusion.resolve import availability_for, resolve_panel
from router.policy_view import PolicyView


def _decision(
    view: PolicyView, model: CatalogModel, unavailable: Callable[[CatalogModel], str | None]
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
    }


def explain(
    model: str,
    catalog: Catalog,
    view: PolicyView,
    unavailable: Callable[[CatalogModel], str | None] = lambda _m: None,
) -> dict[str, Any]:
    """The plan for `model` (a catalog model, a route or `fusion/<panel>`) as a plain dict."""
    head: dict[str, Any] = {
        "model": model,
        "jurisdictions": list(view.jurisdictions),
        "policy_version": view.pinned.version,
        "policy_sha256": view.pinned.sha256,
        "date": view.today.isoformat(),
    }
    if model == "fusion" or model.startswith(FUSION_PREFIX):
        panel = resolve_panel(model, None, catalog)
        availability = availability_for(
            catalog.models, view.gate, lambda m: unavailable(m) is not None
        )
        plan = plan_panel(panel, catalog.models, availability)
        roles = (
            set(panel.panelists) | set(panel.judges) | set(panel.synthesizers) | set(plan.seated)
        )
        head.update(
            kind="fusion",
            plan=plan.as_dict(),
            decisions=[
                _decision(view, catalog.models[m], unavailable)
                for m in sorted(roles)
                if m in catalog.models
            ],
        )
        return head
    chain = catalog.chain_for(model)
    if chain is None:
        raise UnknownModel(model)
    decisions = [_decision(view, catalog.models[m], unavailable) for m in chain]
    usable = [
        d["model"]
        for d in decisions
        if d["policy"] == "allowed" and d["availability"] == "available"
    ]
    head.update(
        kind="model" if model in catalog.models else "route",
        chain=decisions,
        would_try=usable,
        outcome="routable"
        if usable
        else (
            "policy_denied"
            if all(d["policy"] != "allowed" for d in decisions)
            else "all_unavailable"
        ),
    )
    return head


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
        lines.append("decisions:")
    else:
        lines.append(
            f"would try, in order: {', '.join(result['would_try']) or 'nothing'} -> {result['outcome']}"
        )
        lines.append("chain:")
    for d in result.get("decisions") or result.get("chain") or []:
        lines.append(
            f"  {d['model']:<20} {d['policy']:<40} {d['availability']:<12} "
            f"[{d['provider']}, region {d['region']}, origin {d['origin']}] {d['reason']}"
        )
    return "\n".join(lines)
