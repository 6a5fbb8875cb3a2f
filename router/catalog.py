"""The model catalog: what each model id means, where it runs, and what names a request may use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from router.config import (
    TIER_RANK,
    ModelConfig,
    PanelConfig,
    RouterConfig,
    StructuredOutput,
    Thinking,
)
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
        )


def capabilities_of(model: ModelConfig) -> frozenset[str]:
    """What a configured model can do: what it lists, or everything when it lists nothing."""
    return ALL_CAPABILITIES if model.capabilities is None else frozenset(model.capabilities)


FUSION_PREFIX = "fusion/"


@dataclass(frozen=True, slots=True)
class Catalog:
    """Models, routes and panels, looked up by the names requests use."""

    models: Mapping[str, CatalogModel]
    routes: Mapping[str, tuple[str, ...]]
    panels: Mapping[str, Panel]

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
                price=Price(m.price.input_per_mtok, m.price.output_per_mtok),
                timeouts=Timeouts(t.connect_s, t.first_byte_s, t.idle_s, t.total_s),
                capabilities=capabilities_of(m),
                capabilities_declared=m.capabilities is not None,
                structured_output=m.structured_output,
                thinking=m.thinking,
            )
        return cls(
            models=models,
            routes={alias: tuple(chain) for alias, chain in config.routes.items()},
            panels={name: Panel.from_config(name, p) for name, p in config.panels.items()},
        )

    def chain_for(self, name: str) -> tuple[str, ...] | None:
        """The ordered model ids a single-model request may use, or None if `name` is unknown."""
        if name in self.models:
            return (name,)
        return self.routes.get(name)

    def panel_for(self, name: str) -> Panel | None:
        """The panel named by `fusion/<panel>`, if any."""
        if name.startswith(FUSION_PREFIX):
            return self.panels.get(name[len(FUSION_PREFIX) :])
        return None
