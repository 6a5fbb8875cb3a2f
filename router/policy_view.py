"""One request's view of policy: the pinned snapshot, the effective jurisdictions, every decision.

A request pins the policy set in force when it arrives. Every later outcall
(fallback, retry, fusion seat, substitute, judge, synthesizer) must be allowed
by the pinned set *and* by the set in force at that moment (`gate`), so a
tightening reload takes effect at once and a loosening one only for new
requests. Decisions are memoized per request; the audit fields (policy
version and hash, effective jurisdictions, each exclusion and its rule) go
into the response headers, the log line and the trace.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from router.catalog import CatalogModel
from router.errors import NoEligibleModel, PolicyDenied
from router.policy import Decision, PolicySet, decide_memo, normalize_jurisdictions
from router.policy_loader import PolicyStore

_EPOCH_DAY = date(1970, 1, 1).toordinal()


@functools.lru_cache(maxsize=2)
def _day(days_since_epoch: int) -> date:
    return date.fromordinal(_EPOCH_DAY + days_since_epoch)


def today_utc() -> date:
    """Today's UTC date (one `date` object per day, not one per request)."""
    return _day(int(time.time() // 86400))


@functools.lru_cache(maxsize=256)
def _jurisdictions(own: str, header: str | None) -> tuple[str, ...]:
    """`normalize_jurisdictions`, memoized: a sidecar sees few distinct header values."""
    return normalize_jurisdictions(own, header)


@dataclass
class PolicyView:
    """Policy as one request sees it."""

    store: PolicyStore
    pinned: PolicySet
    jurisdictions: tuple[str, ...]
    models: Mapping[str, CatalogModel]
    today: date
    _memo: dict[str, Decision] = field(default_factory=dict)
    consulted: dict[str, Decision] = field(default_factory=dict)

    @classmethod
    def for_request(
        cls, store: PolicyStore, own: str, header: str | None, models: Mapping[str, CatalogModel]
    ) -> PolicyView:
        """Pin the current set; the header may only narrow the sidecar's own jurisdiction."""
        return cls(store, store.current, _jurisdictions(own, header), models, today_utc())

    def decision(self, model: CatalogModel) -> Decision:
        """The pinned set's decision on `model` (memoized)."""
        found = self._memo.get(model.id)
        if found is None:
            found = decide_memo(self.pinned, self.jurisdictions, model, self.today)
            self._memo[model.id] = found
        return found

    def gate(self, model: CatalogModel) -> str | None:
        """Why `model` may not be called now (pinned ∩ current), or None. Never raises."""
        decision = self.decision(model)
        self.consulted.setdefault(model.id, decision)
        if not decision.allowed:
            return (
                f"policy {decision.jurisdiction}@{decision.policy_version} rule {decision.rule_id}"
            )
        current = self.store.current
        if current is not self.pinned:
            now = decide_memo(current, self.jurisdictions, model, self.today)
            if not now.allowed:
                self.consulted[model.id] = now
                return (
                    f"policy {now.jurisdiction}@{now.policy_version} rule {now.rule_id} (reloaded)"
                )
        return None

    def allowed_chain(self, requested: str, chain: Sequence[CatalogModel]) -> list[CatalogModel]:
        """The allowed part of a chain; 403 when policy leaves nothing, naming the rule."""
        allowed = [m for m in chain if self.gate(m) is None]
        if allowed:
            return allowed
        first = self.decision(chain[0]) if chain else None
        if first is None:
            raise NoEligibleModel(f"{requested!r} has no target")
        raise PolicyDenied(
            f"{requested!r} is not allowed in jurisdiction {first.jurisdiction!r} "
            f"(policy version {first.policy_version}, rule {first.rule_id}: {first.reason})",
            rule_id=first.rule_id,
        )

    def exclusions(self) -> list[Decision]:
        return [d for d in self.consulted.values() if not d.allowed]

    def headers(self) -> dict[str, str]:
        """Audit headers for the response."""
        headers = {
            "X-Router-Jurisdiction": ",".join(self.jurisdictions),
            "X-Router-Policy-Version": self.pinned.version,
            "X-Router-Policy-Hash": self.pinned.sha256[:16],
        }
        denied = self.exclusions()
        if denied:
            headers["X-Router-Policy-Denied"] = ",".join(
                f"{d.model_id}={d.rule_id}" for d in denied
            )
        return headers

    def log_fields(self) -> dict[str, object]:
        return {
            "jurisdictions": list(self.jurisdictions),
            "policy_version": self.pinned.version,
            "policy_sha256": self.pinned.sha256,
            "policy_decisions": [f"{d.model_id}:{d.label}" for d in self.consulted.values()],
        }


def decisions_table(decisions: Iterable[Decision]) -> list[dict[str, object]]:
    """Decisions as plain dicts (explain, the fusion object)."""
    return [
        {
            "model": d.model_id,
            "allowed": d.allowed,
            "rule": d.rule_id,
            "reason": d.reason,
            "jurisdiction": d.jurisdiction,
            "policy_version": d.policy_version,
        }
        for d in decisions
    ]
