"""Seat a fusion panel before anything is called: substitutes for unavailable panelists, with reasons.

Pure functions. A panelist is unavailable when policy denies it, its breaker
is open, or it is not in the catalog; its seat then goes to a substitute from
the panel's explicit pool, else from the catalog, chosen by: policy-allowed
and available, not already seated, same or nearest capability tier, most
shared tags, a vendor not yet on the panel (diversity), then cheaper. Every
choice carries its reason; the plan is what `explain` shows for a panel.

Two rules bound the choice (`SubstituteRules`). Tier ceiling: a substitute's tier is
at most the replaced seat's (or the panel's `max_substitute_tier`); a seat with no
substitute within it stays empty. Independent judging (default on): a substitute is
never a judge or synthesizer candidate while any other substitute exists; when one
must be, it leaves those roles, which go to the next candidate not on the panel
(`independent_roles`), and the plan says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from router.catalog import CatalogModel, Panel
from router.config import TIER_RANK

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
class SubstituteRules:
    """What bounds a substitute: a tier ceiling, and the models it should not be (the request's
    judge and synthesizer candidates, when judging is independent)."""

    max_tier: str | None = None  # None: the tier of the seat it replaces
    avoid: frozenset[str] = frozenset()
    independent: bool = True

    def ceiling(self, wanted: CatalogModel | None) -> int:
        if self.max_tier is not None:
            return TIER_RANK[self.max_tier]
        return wanted.tier_rank if wanted is not None else 0


@dataclass(frozen=True, slots=True)
class RolePlan:
    """Judge or synthesizer candidates in order, and the ones excluded with why."""

    candidates: tuple[str, ...]
    excluded: tuple[tuple[str, str], ...]
    swapped: tuple[str, ...] = ()  # independent judging: why a candidate gave way, to whom

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "candidates": list(self.candidates),
            "excluded": [{"model": m, "reason": r} for m, r in self.excluded],
        }
        if self.swapped:
            out["swapped"] = list(self.swapped)
        return out


@dataclass(frozen=True, slots=True)
class FusionPlan:
    """Everything decided before the first upstream call."""

    panel: str
    seats: tuple[SeatPlan, ...]
    judges: RolePlan
    synthesizers: RolePlan
    quorum: int
    pool: tuple[str, ...] = ()
    rules: SubstituteRules = SubstituteRules()

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
    rules: SubstituteRules | None = None,
) -> tuple[CatalogModel, str] | None:
    """The best usable substitute for `wanted_id`, or None. Never a denied or open model; with
    `rules`, never above the tier ceiling, and one of `rules.avoid` only when nothing else is."""
    wanted = models.get(wanted_id)
    ceiling = rules.ceiling(wanted) if rules is not None else None
    avoid = rules.avoid if rules is not None else frozenset()

    def usable(model: CatalogModel) -> bool:
        return (
            model.id not in taken
            and (ceiling is None or model.tier_rank <= ceiling)
            and availability(model.id) is None
        )

    for allow_roles in (False, True) if avoid else (True,):

        def fits(model: CatalogModel, allow_roles: bool = allow_roles) -> bool:
            return usable(model) and (allow_roles or model.id not in avoid)

        for model_id in explicit_pool:
            model = models.get(model_id)
            if model is not None and fits(model):
                return model, _reason_for(wanted, model, seated_vendors, explicit=True)
        pool = [m for m in models.values() if m.id not in explicit_pool and fits(m)]
        ranked = rank_substitutes(wanted, pool, seated_vendors)
        if ranked:
            return ranked[0], _reason_for(wanted, ranked[0], seated_vendors, explicit=False)
    return None


def independent_roles(
    plan: FusionPlan,
    substitutes: Iterable[tuple[int, str, str]],
    models: Mapping[str, CatalogModel],
    availability: Availability,
) -> FusionPlan:
    """The plan with judge and synthesizer candidates that are seated substitutes
    (`(seat, wanted, substitute)`) swapped out, for the next candidate not on the panel (the
    catalog's nearest-tier available model when the configured list runs out). Unchanged when
    judging is not independent or no substitute is a candidate."""
    if not plan.rules.independent:
        return plan
    seated_by = {sub: (seat, wanted) for seat, wanted, sub in substitutes}
    on_panel = set(plan.seated) | {s.wanted for s in plan.seats} | set(seated_by)

    def swap(role: RolePlan) -> RolePlan:
        gone = [m for m in role.candidates if m in seated_by]
        if not gone:
            return role
        kept = [m for m in role.candidates if m not in seated_by]
        kept.sort(key=lambda m: m in on_panel)  # the next candidate not on the panel comes first
        if not kept or kept[0] in on_panel:
            first = models.get(gone[0])
            tier = first.tier_rank if first is not None else 0
            spare = [
                m
                for m in models.values()
                if m.id not in on_panel and m.kind == "chat" and availability(m.id) is None
            ]
            spare.sort(key=lambda m: (abs(m.tier_rank - tier), -m.tier_rank, _price(m), m.id))
            kept = [spare[0].id, *kept] if spare else kept
        to = kept[0] if kept else "none available"
        excluded, swapped = list(role.excluded), list(role.swapped)
        for model_id in gone:
            seat, wanted = seated_by[model_id]
            why = f"seated as substitute for {wanted} (seat {seat}); independent judging"
            excluded.append((model_id, why))
            swapped.append(f"{model_id} -> {to}: {why}")
        return RolePlan(tuple(kept), tuple(excluded), tuple(swapped))

    return replace(
        plan,
        judges=swap(plan.judges),
        synthesizers=swap(plan.synthesizers),
    )


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
    judges = _role(panel.judges, judge_and_synthesis)
    synthesizers = _role(panel.synthesizers, judge_and_synthesis)
    rules = SubstituteRules(
        max_tier=panel.max_substitute_tier,
        avoid=(
            frozenset(judges.candidates) | frozenset(synthesizers.candidates)
            if panel.independent_judging
            else frozenset()
        ),
        independent=panel.independent_judging,
    )
    seats: list[SeatPlan] = []
    forced: dict[int, list[str]] = {}  # seat -> the roles its substitute had to leave
    taken = set(panel.panelists)  # configured panelists are never substitutes for each other
    vendors = {models[p].vendor for p in panel.panelists if p in models and availability(p) is None}
    for index, wanted in enumerate(panel.panelists[:MAX_SEATS]):
        why = availability(wanted) if wanted in models else "not in the catalog"
        if why is None:
            seats.append(SeatPlan(index, wanted, wanted, "as configured"))
            continue
        pool = panel.substitutes
        picked = pick_substitute(wanted, models, pool, taken, vendors, availability, rules)
        if picked is None:
            above = pick_substitute(wanted, models, pool, taken, vendors, availability)
            ceiling = rules.ceiling(models.get(wanted))
            tier = next(t for t, r in TIER_RANK.items() if r == ceiling)
            none = (
                f"no substitute within tier budget (at most {tier})"
                if above is not None
                else "no usable substitute"
            )
            seats.append(SeatPlan(index, wanted, None, f"{why}; {none}"))
            continue
        model, reason = picked
        taken.add(model.id)
        vendors.add(model.vendor)
        if model.id in rules.avoid:
            forced[index] = [
                role
                for role, plan in (("judge", judges), ("synthesizer", synthesizers))
                if model.id in plan.candidates
            ]
        seats.append(
            SeatPlan(index, wanted, model.id, f"{wanted} unavailable ({why}); {model.id} {reason}")
        )
    plan = FusionPlan(
        panel=panel.name,
        seats=tuple(seats),
        judges=judges,
        synthesizers=synthesizers,
        quorum=min(panel.quorum, len(seats)),
        pool=panel.substitutes,
        rules=rules,
    )
    subs = [(s.index, s.wanted, s.model) for s in seats if s.model is not None and s.substituted]
    plan = independent_roles(plan, subs, models, judge_and_synthesis)
    now = {
        "judge": plan.judges.candidates[0] if plan.judges.candidates else "none",
        "synthesizer": plan.synthesizers.candidates[0] if plan.synthesizers.candidates else "none",
    }

    def told(seat: SeatPlan) -> SeatPlan:
        if seat.index not in forced:
            return seat
        moved = ", ".join(f"{role} is now {now[role]}" for role in forced[seat.index])
        note = f"; no other substitute, so it left the judging roles (independent judging: {moved})"
        return replace(seat, reason=seat.reason + note)

    return replace(plan, seats=tuple(told(s) for s in plan.seats))
