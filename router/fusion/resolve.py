"""Which panel a fusion request names, and whether a model can take a fusion role now."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from router.catalog import Catalog, CatalogModel, Panel
from router.config import PanelConfig
from router.errors import InvalidRequest, UnknownModel, UnsupportedParameter, WrongModelKind
from router.fusion.plan import Availability
from router.providers.web_search import blocked_domains_reason
from router.routing import Gate
from router.types import WebSearch

# every panel field a request may set in its `fusion` object (checked as the config is)
OVERRIDABLE = (
    "panelists",
    "judges",
    "synthesizers",
    "quorum",
    "substitutes",
    "deadline_s",
    "degrade",
    "hedge_after_s",
    "judge_prompt",
    "synthesizer_prompt",
    "independent_judging",
    "max_substitute_tier",
    "max_cost_usd",
    "compare_with",
    "panelist_tools",
    "blocked_domains",
    "max_searches",
)
_MEMBERS = ("panelists", "judges", "synthesizers", "substitutes")


def resolve_panel(model: str, options: Mapping[str, Any] | None, catalog: Catalog) -> Panel:
    """The configured panel named by `fusion/<name>`, with the request's overrides, or a
    panel the request names entirely (`model: "fusion"`)."""
    options = options or {}
    unknown = sorted(set(options) - set(OVERRIDABLE))
    if unknown:
        raise UnsupportedParameter(
            f"unsupported fusion option(s): {', '.join(unknown)}", param=f"fusion.{unknown[0]}"
        )
    if model == "fusion":
        base: dict[str, Any] = {}
        name = "custom"
    else:
        panel = catalog.panel_for(model)
        if panel is None:
            raise UnknownModel(model)
        name = panel.name
        base = {
            key: list(given) if isinstance(given, tuple) else given
            for key in OVERRIDABLE
            if (given := getattr(panel, key)) is not None
        }
    merged = {**base, **options}
    if "quorum" not in options and "panelists" in options:
        merged.pop("quorum", None)
    try:
        config = PanelConfig.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        path = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"fusion.{path}: {first['msg']}", param=f"fusion.{path}") from None
    for role in _MEMBERS:
        for i, model_id in enumerate(getattr(config, role)):
            member = catalog.models.get(model_id)
            if member is None:
                raise UnknownModel(model_id)
            if member.kind != "chat":
                raise WrongModelKind(
                    f"{model_id!r} is an embedding model: a fusion panel is for chat models",
                    kind=member.kind,
                    param=f"fusion.{role}[{i}]",
                )
    solo = catalog.models.get(config.compare_with) if config.compare_with else None
    if config.compare_with is not None and (solo is None or solo.kind != "chat"):
        raise InvalidRequest(
            f"fusion.compare_with: {config.compare_with!r} is not a chat model of the catalog",
            param="fusion.compare_with",
        )
    if config.quorum is not None and config.quorum > len(config.panelists):
        raise InvalidRequest("fusion.quorum is larger than the panel", param="fusion.quorum")
    return Panel.from_config(name, config)


def research_of(panel: Panel) -> WebSearch | None:
    """The panelists' web search, when the panel turns it on (`panelist_tools`)."""
    if "web_search" not in panel.panelist_tools:
        return None
    return WebSearch(blocked_domains=panel.blocked_domains, max_uses=panel.max_searches)


def research_plan(
    panel: Panel, seated: Iterable[str], models: Mapping[str, CatalogModel]
) -> dict[str, Any] | None:
    """What `explain` and the `fusion` object say of a panel's research: its tools, blocked
    domains, and per seated model whether its protocol applies the block (and why not)."""
    if research_of(panel) is None:
        return None
    seats = []
    for model_id in seated:
        protocol = models[model_id].protocol
        why_not = blocked_domains_reason(protocol)
        applied = "applied" if why_not is None else f"not applied: {why_not}"
        seats.append(
            {
                "model": model_id,
                "protocol": protocol,
                "blocked_domains": applied if panel.blocked_domains else "none listed",
            }
        )
    return {
        "tools": list(panel.panelist_tools),
        "blocked_domains": list(panel.blocked_domains),
        "max_searches": panel.max_searches,
        "seats": seats,
    }


def availability_for(
    models: Mapping[str, CatalogModel],
    gate: Gate,
    unavailable: Callable[[CatalogModel], str | None],
    needs: frozenset[str] = frozenset(),
) -> Availability:
    """Why a model cannot take a fusion role now (policy and its rule, unknown, an embedding
    model, a capability of `needs` the catalog says it lacks, or `unavailable`'s own reason:
    breaker open, cooling down after a 429), or None."""

    def availability(model_id: str) -> str | None:
        model = models.get(model_id)
        if model is None:
            return "not in the catalog"
        if model.kind != "chat":
            return "an embedding model"
        why = gate(model)
        if why is not None:
            return why
        lacking = model.lacking(needs)
        if lacking:
            return f"lacks {', '.join(repr(c) for c in lacking)}"
        return unavailable(model)

    return availability
