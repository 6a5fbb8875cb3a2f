"""The model catalog: what each model id means, where it runs, and what names a request may use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from router.config import (
    TIER_RANK,
    ModelConfig,
    ModelKind,
    PanelConfig,
    RouterConfig,
    StructuredOutput,
    Thinking,
)
from router.errors import RequestError, UnknownModel, WrongModelKind
from router.protocol_support import CAPABILITIES
from router.types import Price, Timeouts, Usage

ALL_CAPABILITIES = frozenset(CAPABILITIES)


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """One catalog entry, resolved against its provider."""

    id: str
    provider: str
    protocol: str
    upstream_id: str
    vendor: str
    origin: str
    region: str
    tier: str
    tags: frozenset[str]
    context_window: int
    max_output_tokens: int
    price: Price
    timeouts: Timeouts
    # what it can do (a model whose config lists none can do everything), and whether listed
    capabilities: frozenset[str] = ALL_CAPABILITIES
    capabilities_declared: bool = False
    structured_output: StructuredOutput = "tool"
    thinking: Thinking = "budget"
    kind: ModelKind = "chat"  # chat, or embedding (served on /v1/embeddings only)
    dimensions: int | None = None  # an embedding model's vector size, if configured

    @property
    def tier_rank(self) -> int:
        return TIER_RANK[self.tier]

    def lacking(self, needed: frozenset[str]) -> tuple[str, ...]:
        """The capabilities of `needed` this model does not have, in vocabulary order."""
        if not needed or needed <= self.capabilities:
            return ()
        return tuple(c for c in CAPABILITIES if c in needed and c not in self.capabilities)

    @property
    def capability_list(self) -> list[str]:
        """Its capabilities in vocabulary order, as `/v1/models` and `explain` show them."""
        return [c for c in CAPABILITIES if c in self.capabilities]

    def cost(self, usage: Usage) -> float:
        """USD for this usage at the catalog's price."""
        return self.price.cost(usage)


@dataclass(frozen=True, slots=True)
class Panel:
    """A fusion panel as configured."""

    name: str
    panelists: tuple[str, ...]
    judges: tuple[str, ...]
    synthesizers: tuple[str, ...]
    quorum: int
    substitutes: tuple[str, ...]
    deadline_s: float
    degrade: str
    hedge_after_s: float | None
    judge_prompt: str | None
    synthesizer_prompt: str | None
    independent_judging: bool = True
    max_substitute_tier: str | None = None
    max_cost_usd: float | None = None
    compare_with: str | None = None
    panelist_tools: tuple[str, ...] = ()
    blocked_domains: tuple[str, ...] = ()
    max_searches: int = 5

    @classmethod
    def from_config(cls, name: str, cfg: PanelConfig) -> Panel:
        seats = len(cfg.panelists)
        quorum = (
            cfg.quorum
            if cfg.quorum is not None
            else min(seats, 2 if seats <= 3 else seats // 2 + 1)
        )
        return cls(
            name=name,
            panelists=tuple(cfg.panelists),
            judges=tuple(cfg.judges),
            synthesizers=tuple(cfg.synthesizers),
            quorum=quorum,
            substitutes=tuple(cfg.substitutes),
            deadline_s=cfg.deadline_s,
            degrade=cfg.degrade,
            hedge_after_s=cfg.hedge_after_s,
            judge_prompt=cfg.judge_prompt,
            synthesizer_prompt=cfg.synthesizer_prompt,
            independent_judging=cfg.independent_judging,
            max_substitute_tier=cfg.max_substitute_tier,
            max_cost_usd=cfg.max_cost_usd,
            compare_with=cfg.compare_with,
            panelist_tools=tuple(cfg.panelist_tools),
            blocked_domains=tuple(cfg.blocked_domains),
            max_searches=cfg.max_searches,
        )


def capabilities_of(model: ModelConfig) -> frozenset[str]:
    """What a configured model can do: what it lists, or everything when it lists nothing (an
    embedding model: none of them)."""
    if model.kind == "embedding":
        return frozenset()
    return ALL_CAPABILITIES if model.capabilities is None else frozenset(model.capabilities)


FUSION_PREFIX = "fusion/"


@dataclass(frozen=True, slots=True)
class Catalog:
    """Models, routes and panels, looked up by the names requests use."""

    models: Mapping[str, CatalogModel]
    routes: Mapping[str, tuple[str, ...]]
    panels: Mapping[str, Panel]
    # requested names -> the model, route or panel serving them when they cannot be served
    model_map: Mapping[str, str] = field(default_factory=dict)
    # each kind's names (models and routes) and their chains, for its API's one lookup
    chat_chains: Mapping[str, tuple[str, ...]] = field(init=False)
    embedding_chains: Mapping[str, tuple[str, ...]] = field(init=False)

    def __post_init__(self) -> None:
        chains = {**{m: (m,) for m in self.models}, **self.routes}
        by_kind: dict[str, dict[str, tuple[str, ...]]] = {"chat": {}, "embedding": {}}
        for name, chain in chains.items():  # (a route's models are of one kind: config)
            kind = self.models[chain[0]].kind if chain and chain[0] in self.models else "chat"
            by_kind[kind][name] = chain
        object.__setattr__(self, "chat_chains", by_kind["chat"])  # (frozen: set once, here)
        object.__setattr__(self, "embedding_chains", by_kind["embedding"])

    @classmethod
    def from_config(cls, config: RouterConfig) -> Catalog:
        models = {}
        for model_id, m in config.models.items():
            provider = config.providers[m.provider]
            t = provider.timeouts
            models[model_id] = CatalogModel(
                id=model_id,
                provider=m.provider,
                protocol=provider.protocol,
                upstream_id=m.upstream_id,
                vendor=m.vendor,
                origin=m.origin.lower(),
                region=provider.region.lower(),
                tier=m.tier,
                tags=frozenset(m.tags),
                context_window=m.context_window,
                max_output_tokens=m.max_output_tokens,
                price=Price(
                    m.price.input_per_mtok,
                    m.price.output_per_mtok or 0.0,
                    m.price.per_web_search,
                ),
                timeouts=Timeouts(t.connect_s, t.first_byte_s, t.idle_s, t.total_s),
                capabilities=capabilities_of(m),
                capabilities_declared=m.capabilities is not None or m.kind == "embedding",
                structured_output=m.structured_output,
                thinking=m.thinking,
                kind=m.kind,
                dimensions=m.dimensions,
            )
        return cls(
            models=models,
            routes={alias: tuple(chain) for alias, chain in config.routes.items()},
            panels={name: Panel.from_config(name, p) for name, p in config.panels.items()},
            model_map=dict(config.model_map),
        )

    def chain_for(self, name: str) -> tuple[str, ...] | None:
        """The ordered model ids a single-model request may use, or None if `name` is unknown."""
        if name in self.models:
            return (name,)
        return self.routes.get(name)

    def kind_of(self, name: str) -> ModelKind | None:
        """What `name` serves (a model's or route's kind; a fusion panel chats), or None if it
        names nothing."""
        if name in self.chat_chains or name == "fusion" or self.panel_for(name) is not None:
            return "chat"
        return "embedding" if name in self.embedding_chains else None

    def not_served(self, name: str, serving: ModelKind) -> RequestError:
        """The error for `name` asked of the API serving `serving` models (it is not one of
        them): 400 `wrong_model_kind` when it names one of the other kind, else 404."""
        kind = self.kind_of(name)
        if kind is None or kind == serving:
            return UnknownModel(name)
        if name in self.models:
            what = "an embedding model" if kind == "embedding" else "a chat model"
        elif name in self.routes:
            what = f"a route of {kind} models"
        else:
            what = "a fusion panel of chat models"
        if serving == "embedding":
            return WrongModelKind(
                f"{name!r} is {what}; /v1/embeddings serves models of kind 'embedding' "
                "(GET /v1/models lists each model's kind)",
                kind=kind,
            )
        return WrongModelKind(
            f"{name!r} is {what}: it serves POST /v1/embeddings only (GET /v1/models lists "
            "each model's kind)",
            kind=kind,
        )

    def panel_for(self, name: str) -> Panel | None:
        """The panel named by `fusion/<panel>`, if any."""
        if name.startswith(FUSION_PREFIX):
            return self.panels.get(name[len(FUSION_PREFIX) :])
        return None
