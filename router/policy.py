"""Per-jurisdiction policy: the rule model and its pure evaluation (no I/O).

A `Policy` is one jurisdiction's file, already validated (see `policy_loader`).
`decide` answers "may this model serve this jurisdiction today?" and names the
rule that decided; `evaluate` does it for a list of candidates under several
jurisdictions at once, where a model is allowed only if *every* jurisdiction
allows it (a request can narrow the sidecar's own jurisdiction, never widen it).

Semantics, all fail-closed:

- rules outside their effective dates are ignored (both dates are inclusive);
- deny overrides allow: the first active matching deny rule in file order decides,
  else the first active matching allow rule, else the policy's default
  (rule id ``default``);
- a model whose region is not a known region code is denied (``unknown_region``),
  an unknown jurisdiction denies everything (``unknown_jurisdiction``) and an
  unknown model id is denied (``unknown_model``);
- jurisdictions are stripped and lower-cased, model ids stripped, and matching is
  case-insensitive, so a case or whitespace variant never meets a less
  restrictive rule than the canonical form.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Literal

from router.catalog import CatalogModel
from router.config import JURISDICTION_RE
from router.errors import InvalidJurisdiction, Problem

Effect = Literal["allow", "deny"]

RULE_DEFAULT = "default"
RULE_UNKNOWN_REGION = "unknown_region"
RULE_UNKNOWN_JURISDICTION = "unknown_jurisdiction"
RULE_UNKNOWN_MODEL = "unknown_model"
RESERVED_RULE_IDS = frozenset(
    {RULE_DEFAULT, RULE_UNKNOWN_REGION, RULE_UNKNOWN_JURISDICTION, RULE_UNKNOWN_MODEL}
)

MAX_REQUEST_JURISDICTIONS = 8

# ISO 3166-1 alpha-2, lower-case (pinned: the 249 assigned codes), plus "eu".
# "uk" is deliberately absent: the ISO code of the United Kingdom is "gb".
_ISO_3166_ALPHA2 = (
    "ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bl bm bn bo "
    "bq br bs bt bv bw by bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj "
    "dk dm do dz ec ee eg eh er es et fi fj fk fm fo fr ga gb gd ge gf gg gh gi gl gm gn gp "
    "gq gr gs gt gu gw gy hk hm hn hr ht hu id ie il im in io iq ir is it je jm jo jp ke kg "
    "kh ki km kn kp kr kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc md me mf mg mh mk ml "
    "mm mn mo mp mq mr ms mt mu mv mw mx my mz na nc ne nf ng ni nl no np nr nu nz om pa pe "
    "pf pg ph pk pl pm pn pr ps pt pw py qa re ro rs ru rw sa sb sc sd se sg sh si sj sk sl "
    "sm sn so sr ss st sv sx sy sz tc td tf tg th tj tk tl tm tn to tr tt tv tw tz ua ug um "
    "us uy uz va vc ve vg vi vn vu wf ws ye yt za zm zw"
)
REGION_CODES: tuple[str, ...] = (*_ISO_3166_ALPHA2.split(), "eu")
_REGION_SET = frozenset(REGION_CODES)
_GLOB_CHARS = frozenset("*?[")


def is_known_region(code: str) -> bool:
    """True when `code` is a pinned region code (already lower-case, no whitespace)."""
    return code in _REGION_SET


def is_glob(pattern: str) -> bool:
    """True when a model pattern uses fnmatch wildcards."""
    return any(c in _GLOB_CHARS for c in pattern)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(value: str) -> str:
    """Strip and lower-case ASCII letters only: no non-ASCII character ever folds to ASCII."""
    return value.strip().translate(_ASCII_LOWER)


def _folded(values: Sequence[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(fold(v) for v in values)


@dataclass(frozen=True, slots=True)
class Match:
    """What a rule applies to. Every given field must match (AND); within a field, any value (OR).

    A field left as None is not a condition. Comparisons are case-insensitive.
    """

    models: tuple[str, ...] | None = None
    vendors: tuple[str, ...] | None = None
    providers: tuple[str, ...] | None = None
    origins: tuple[str, ...] | None = None
    regions: tuple[str, ...] | None = None
    regions_not_in: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None

    @property
    def is_empty(self) -> bool:
        """No field given: such a match would apply to every model (the loader forbids it)."""
        return all(
            v is None
            for v in (
                self.models,
                self.vendors,
                self.providers,
                self.origins,
                self.regions,
                self.regions_not_in,
                self.tags,
            )
        )

    def matches(self, model: CatalogModel) -> bool:
        """True when every given field matches `model`."""
        return (
            _models_match(self.models, model.id)
            and _in(self.vendors, model.vendor)
            and _in(self.providers, model.provider)
            and _in(self.origins, model.origin)
            and _in(self.regions, model.region)
            and _not_in(self.regions_not_in, model.region)
            and _tags_match(self.tags, model.tags)
        )


def _models_match(patterns: Sequence[str] | None, model_id: str) -> bool:
    if patterns is None:
        return True
    target = fold(model_id)
    return any(fnmatchcase(target, fold(p)) for p in patterns)


def _in(values: Sequence[str] | None, actual: str) -> bool:
    folded = _folded(values)
    return folded is None or fold(actual) in folded


def _not_in(values: Sequence[str] | None, actual: str) -> bool:
    folded = _folded(values)
    return folded is None or fold(actual) not in folded


def _tags_match(values: Sequence[str] | None, tags: frozenset[str]) -> bool:
    folded = _folded(values)
    return folded is None or not folded.isdisjoint(fold(t) for t in tags)


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a policy file."""

    id: str
    effect: Effect
    reason: str
    match: Match
    effective_from: date | None = None
    effective_until: date | None = None

    def active_on(self, today: date) -> bool:
        """True when `today` is inside the rule's dates (both bounds inclusive)."""
        if self.effective_from is not None and today < self.effective_from:
            return False
        return self.effective_until is None or today <= self.effective_until

    def applies(self, model: CatalogModel, today: date) -> bool:
        """Active today and matching `model`."""
        return self.active_on(today) and self.match.matches(model)


@dataclass(frozen=True, slots=True)
class Policy:
    """One jurisdiction's validated policy file."""

    jurisdiction: str
    version: str
    default: Effect
    rules: tuple[Rule, ...]
    source: str
    sha256: str
    description: str | None = None
    warnings: tuple[Problem, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether one model may serve one request, and which rule of which policy said so."""

    model_id: str
    allowed: bool
    rule_id: str
    reason: str
    jurisdiction: str
    policy_version: str | None
    policy_sha256: str | None

    @property
    def label(self) -> str:
        """`allowed` or `denied:<rule id>`, as in audit records."""
        return "allowed" if self.allowed else f"denied:{self.rule_id}"


@dataclass(frozen=True, slots=True, eq=False)
class PolicySet:
    """Every loaded jurisdiction's policy, and one version and hash for audit records."""

    policies: Mapping[str, Policy]
    version: str
    sha256: str
    # decisions already made against this set: (jurisdictions, model id, day) -> (model, decision)
    memo: dict[tuple[tuple[str, ...], str, date], tuple[CatalogModel, Decision]] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def of(cls, policies: Sequence[Policy]) -> PolicySet:
        """Build a set; jurisdictions must be unique."""
        by_code: dict[str, Policy] = {}
        for p in policies:
            if p.jurisdiction in by_code:
                raise ValueError(f"two policies for jurisdiction {p.jurisdiction!r}")
            by_code[p.jurisdiction] = p
        ordered = sorted(by_code)
        version = ",".join(f"{j}@{by_code[j].version}" for j in ordered)
        digest = hashlib.sha256(
            "".join(f"{j}\0{by_code[j].sha256}\n" for j in ordered).encode()
        ).hexdigest()
        return cls(MappingProxyType({j: by_code[j] for j in ordered}), version, digest)

    def get(self, jurisdiction: str) -> Policy | None:
        """The policy of a jurisdiction (normalized first), if loaded."""
        return self.policies.get(normalize_jurisdiction(jurisdiction))

    @property
    def jurisdictions(self) -> tuple[str, ...]:
        return tuple(self.policies)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(w for p in self.policies.values() for w in p.warnings)


def normalize_jurisdiction(code: str) -> str:
    """Strip and lower-case a jurisdiction code (ASCII letters only; no validation)."""
    return fold(code)


def decide(policy: Policy, model: CatalogModel, today: date) -> Decision:
    """One policy's decision on one model on `today`."""

    def made(allowed: bool, rule_id: str, reason: str) -> Decision:
        return Decision(
            model.id, allowed, rule_id, reason, policy.jurisdiction, policy.version, policy.sha256
        )

    region = fold(model.region)
    if not is_known_region(region):
        return made(False, RULE_UNKNOWN_REGION, f"provider region {model.region!r} is not known")
    active = [r for r in policy.rules if r.applies(model, today)]
    for effect in ("deny", "allow"):
        for rule in active:
            if rule.effect == effect:
                return made(effect == "allow", rule.id, rule.reason)
    return made(
        policy.default == "allow",
        RULE_DEFAULT,
        f"no rule matched; the {policy.jurisdiction} policy's default is {policy.default}",
    )


def _unknown_jurisdiction(model_id: str, jurisdiction: str) -> Decision:
    return Decision(
        model_id,
        False,
        RULE_UNKNOWN_JURISDICTION,
        f"no policy is loaded for jurisdiction {jurisdiction!r}",
        jurisdiction,
        None,
        None,
    )


def _unknown_model(model_id: str, jurisdiction: str) -> Decision:
    return Decision(
        model_id,
        False,
        RULE_UNKNOWN_MODEL,
        f"model {model_id!r} is not in the catalog",
        jurisdiction,
        None,
        None,
    )


def decide_all(
    policies: PolicySet, jurisdictions: Sequence[str], model: CatalogModel, today: date
) -> Decision:
    """The intersection: the first denying jurisdiction's decision, else the first allow."""
    codes = tuple(normalize_jurisdiction(j) for j in jurisdictions)
    if not codes:
        return _unknown_jurisdiction(model.id, "")
    allowed: Decision | None = None
    for code in codes:
        policy = policies.policies.get(code)
        decision = (
            _unknown_jurisdiction(model.id, code)
            if policy is None
            else decide(policy, model, today)
        )
        if not decision.allowed:
            return decision
        allowed = allowed or decision
    assert allowed is not None  # noqa: S101  # codes is not empty
    return allowed


MEMO_LIMIT = 4096


def decide_memo(
    policies: PolicySet, jurisdictions: tuple[str, ...], model: CatalogModel, today: date
) -> Decision:
    """`decide_all`, remembered on the policy set (a pure function of its arguments).

    The memo is bounded (callers choose jurisdictions) and dies with its set on reload.
    """
    key = (jurisdictions, model.id, today)
    hit = policies.memo.get(key)
    if hit is not None and hit[0] is model:
        return hit[1]
    decision = decide_all(policies, jurisdictions, model, today)
    if len(policies.memo) >= MEMO_LIMIT:
        policies.memo.clear()
    policies.memo[key] = (model, decision)
    return decision


@dataclass(frozen=True, slots=True)
class Eligibility:
    """The candidates a request may use, in order, and why the others may not."""

    allowed: tuple[CatalogModel, ...]
    excluded: tuple[Decision, ...]
    decisions: Mapping[str, Decision] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def allowed_ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.allowed)

    def decision(self, model_id: str) -> Decision | None:
        """The decision on a candidate (its id is stripped first)."""
        return self.decisions.get(model_id.strip())

    def is_allowed(self, model_id: str) -> bool:
        """True only for a candidate that was evaluated and allowed."""
        d = self.decision(model_id)
        return d is not None and d.allowed


def evaluate(
    policies: PolicySet,
    jurisdictions: Sequence[str],
    candidates: Sequence[CatalogModel | str],
    catalog_models: Mapping[str, CatalogModel],
    today: date,
) -> Eligibility:
    """Decide every candidate under every jurisdiction; duplicates keep their first place."""
    codes = tuple(normalize_jurisdiction(j) for j in jurisdictions)
    first = codes[0] if codes else ""
    allowed: list[CatalogModel] = []
    excluded: list[Decision] = []
    decisions: dict[str, Decision] = {}
    for candidate in candidates:
        if isinstance(candidate, str):
            model_id = candidate.strip()
            model = catalog_models.get(model_id)
        else:
            model_id, model = candidate.id, candidate
        if model_id in decisions:
            continue
        if model is None:
            decision = _unknown_model(model_id, first)
        else:
            decision = decide_all(policies, codes, model, today)
        decisions[model_id] = decision
        if decision.allowed and model is not None:
            allowed.append(model)
        else:
            excluded.append(decision)
    return Eligibility(tuple(allowed), tuple(excluded), MappingProxyType(decisions))


def normalize_jurisdictions(own: str, header: str | None) -> tuple[str, ...]:
    """The sidecar's own jurisdiction, then those of an `X-Router-Jurisdiction` header value.

    The header is a comma-separated list; empty elements are ignored (RFC 9110),
    codes are stripped and lower-cased, duplicates dropped. A malformed or
    non-ASCII code raises `InvalidRequest` (code ``invalid_jurisdiction``); a
    well-formed code with no policy is kept, and `evaluate` denies everything
    for it. The sidecar's own code must be well-formed (ValueError otherwise).
    """
    own_code = normalize_jurisdiction(own)
    if not _well_formed(own_code):
        raise ValueError(f"the sidecar's jurisdiction {own!r} is not a valid code")
    codes = [own_code]
    if header is None:
        return tuple(codes)
    items = [item for item in header.split(",") if item.strip()]
    if len(items) > MAX_REQUEST_JURISDICTIONS:
        raise InvalidJurisdiction(
            f"X-Router-Jurisdiction names more than {MAX_REQUEST_JURISDICTIONS} jurisdictions",
        )
    for item in items:
        code = normalize_jurisdiction(item)
        if not _well_formed(code):
            raise InvalidJurisdiction(
                f"X-Router-Jurisdiction: {item.strip()[:32]!r} is not a jurisdiction code "
                "(expected e.g. 'eu' or 'us-ca')",
            )
        if code not in codes:
            codes.append(code)
    return tuple(codes)


def _well_formed(code: str) -> bool:
    return code.isascii() and JURISDICTION_RE.fullmatch(code) is not None
