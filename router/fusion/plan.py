"""Seat a fusion panel before anything is called: substitutes for unavailable panelists, with reasons.

Pure functions. A panelist is unavailable when policy denies it, its breaker
is open, or it is not in the catalog; its seat then goes to a substitute from
the panel's explicit pool, else from the catalog, chosen by: policy-allowed
and available, not already seated, same or nearest capability tier, most
shared tags, a vendor not yet on the panel (diversity), then cheaper. Every
choice carries its reason; the plan is what `explain` shows for a panel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from router.catalog import CatalogModel, Panel

MAX_SEATS = 5
MAX_SUBSTITUTIONS = 2
MAX_UPSTREAM_CALLS = 8

# model id -> why it cannot be used now (policy rule, breaker open), or None when usable
Availability = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class SeatPlan:
    """One seat: who was wanted, who sits, and why."""

    index: int
    wanted: str
    model: str | None
    reason: str

    @property
    def substituted(self) -> bool:
        return self.model is not None and self.model != self.wanted

    def as_dict(self) -> dict[str, object]:
        return {
            "seat": self.index,
            "wanted": self.wanted,
            "model": self.model,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class RolePlan:
    """Judge or synthesizer candidates in order, and the ones excluded with why."""

    candidates: tuple[str, ...]
    excluded: tuple[tuple[str, str], ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "candidates": list(self.candidates),
            "excluded": [{"model": m, "reason": r} for m, r in self.excluded],
        }


@dataclass(frozen=True, slots=True)
class FusionPlan:
    """Everything decided before the first upstream call."""

    panel: str
    seats: tuple[SeatPlan, ...]
    judges: RolePlan
    synthesizers: RolePlan
    quorum: int
    pool: tuple[str, ...] = ()

    @property
    def seated(self) -> tuple[str, ...]:
        return tuple(s.model for s in self.seats if s.model is not None)

    def as_dict(self) -> dict[str, object]:
        return {
            "panel": self.panel,
            "quorum": self.quorum,
            "seats": [s.as_dict() for s in self.seats],
            "judges": self.judges.as_dict(),
            "synthesizers": self.synthesizers.as_dict(),
        }


def _price(model: CatalogModel) -> float:
    return model.price.input_per_mtok + model.price.output_per_mtok


def rank_substitutes(
    wanted: CatalogModel | None,
    candidates: Iterable[CatalogModel],
    seated_vendors: set[str],
) -> list[CatalogModel]:
    """Catalog candidates best-first: nearest tier, shared tags, new vendor, cheaper."""
    tier = wanted.tier_rank if wanted else 0
    tags = wanted.tags if wanted else frozenset()

    def key(m: CatalogModel) -> tuple[int, int, int, int, float, str]:
        return (
            abs(m.tier_rank - tier),
            0 if m.tier_rank <= tier else 1,  # on a tie prefer not to climb tiers (cost)
            -len(m.tags & tags),
            1 if m.vendor in seated_vendors else 0,
            _price(m),
            m.id,
        )

    return sorted(candidates, key=key)


def _reason_for(
    wanted: CatalogModel | None, chosen: CatalogModel, seated_vendors: set[str], explicit: bool
) -> str:
    parts = ["from the panel's substitute pool" if explicit else "from the catalog"]
    if wanted is not None:
        parts.append("same tier" if chosen.tier == wanted.tier else f"nearest tier ({chosen.tier})")
        shared = sorted(chosen.tags & wanted.tags)
        if shared:
            parts.append("shares " + ",".join(shared))
    parts.append("new vendor" if chosen.vendor not in seated_vendors else "vendor already seated")
    return "; ".join(parts)


def pick_substitute(
    wanted_id: str,
    models: Mapping[str, CatalogModel],
    explicit_pool: Sequence[str],
    taken: set[str],
    seated_vendors: set[str],
    availability: Availability,
) -> tuple[CatalogModel, str] | None:
    """The best usable substitute for `wanted_id`, or None. Never a denied or open model."""
    wanted = models.get(wanted_id)
    for model_id in explicit_pool:
        model = models.get(model_id)
        if model is not None and model_id not in taken and availability(model_id) is None:
            return model, _reason_for(wanted, model, seated_vendors, explicit=True)
    pool = [
        m
        for m in models.values()
        if m.id not in taken and m.id not in explicit_pool and availability(m.id) is None
    ]
    ranked = rank_substitutes(wanted, pool, seated_vendors)
    if not ranked:
        return None
    return ranked[0], _reason_for(wanted, ranked[0], seated_vendors, explicit=False)


def _role(candidates: Sequence[str], availability: Availability) -> RolePlan:
    usable, excluded = [], []
    for model_id in candidates:
        why = availability(model_id)
        if why is None:
            usable.append(model_id)
        else:
            excluded.append((model_id, why))
    return RolePlan(tuple(usable), tuple(excluded))


def plan_panel(
    panel: Panel,
    models: Mapping[str, CatalogModel],
    availability: Availability,
    seat_availability: Availability | None = None,
) -> FusionPlan:
    """Seat every panelist, substituting the unavailable ones before anything is called.
    `seat_availability` judges panelists and their substitutes (what they are asked needs
    capabilities the judge's and synthesizer's requests may not); `availability` by default."""
    judge_and_synthesis = availability
    availability = seat_availability or availability
    seats: list[SeatPlan] = []
    taken = set(panel.panelists)  # configured panelists are never substitutes for each other
    vendors = {models[p].vendor for p in panel.panelists if p in models and availability(p) is None}
    for index, wanted in enumerate(panel.panelists[:MAX_SEATS]):
        why = availability(wanted) if wanted in models else "not in the catalog"
        if why is None:
            seats.append(SeatPlan(index, wanted, wanted, "as configured"))
            continue
        picked = pick_substitute(wanted, models, panel.substitutes, taken, vendors, availability)
        if picked is None:
            seats.append(SeatPlan(index, wanted, None, f"{why}; no usable substitute"))
            continue
        model, reason = picked
        taken.add(model.id)
        vendors.add(model.vendor)
        seats.append(
            SeatPlan(index, wanted, model.id, f"{wanted} unavailable ({why}); {model.id} {reason}")
        )
    return FusionPlan(
        panel=panel.name,
        seats=tuple(seats),
        judges=_role(panel.judges, judge_and_synthesis),
        synthesizers=_role(panel.synthesizers, judge_and_synthesis),
        quorum=min(panel.quorum, len(seats)),
        pool=panel.substitutes,
    )
