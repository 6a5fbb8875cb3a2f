"""The pure policy engine: `decide`, `evaluate`, `normalize_jurisdictions`, and their properties."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.catalog import CatalogModel
from router.errors import InvalidRequest
from router.policy import (
    REGION_CODES,
    RESERVED_RULE_IDS,
    Decision,
    Match,
    Policy,
    PolicySet,
    Rule,
    decide,
    evaluate,
    normalize_jurisdictions,
)
from router.types import Price, Timeouts

TODAY = date(2026, 11, 28)


def model(
    model_id: str,
    *,
    provider: str = "p-us",
    vendor: str = "Acme",
    origin: str = "us",
    region: str = "us",
    tags: Sequence[str] = (),
) -> CatalogModel:
    return CatalogModel(
        id=model_id,
        provider=provider,
        protocol="sim",
        upstream_id=model_id,
        vendor=vendor,
        origin=origin,
        region=region,
        tier="standard",
        tags=frozenset(tags),
        context_window=1000,
        max_output_tokens=100,
        price=Price(1.0, 1.0),
        timeouts=Timeouts(),
    )


def rule(
    rule_id: str,
    effect: str,
    *,
    start: date | None = None,
    until: date | None = None,
    **match: Sequence[str],
) -> Rule:
    fields: dict[str, Any] = {k: tuple(v) for k, v in match.items()}
    return Rule(
        id=rule_id,
        effect=effect,  # type: ignore[arg-type]
        reason=f"reason of {rule_id}",
        match=Match(**fields),
        effective_from=start,
        effective_until=until,
    )


def policy(jurisdiction: str, default: str, *rules: Rule, version: str = "1") -> Policy:
    return Policy(
        jurisdiction=jurisdiction,
        version=version,
        default=default,  # type: ignore[arg-type]
        rules=tuple(rules),
        source=f"{jurisdiction}.yaml",
        sha256=f"sha-{jurisdiction}",
    )


FABLE = model("claude-fable-5", vendor="Anthropic", tags=["export_restricted", "reasoning"])
GPT = model("gpt-5.5", vendor="OpenAI", provider="p-openai")
KIMI = model("kimi-k2.6", vendor="Moonshot AI", provider="p-cn", origin="cn", region="cn")
CATALOG = {m.id: m for m in (FABLE, GPT, KIMI)}

DIRECTIVE = rule(
    "us-export-directive-2026-06",
    "deny",
    start=date(2026, 6, 15),
    models=["claude-fable-5", "claude-mythos-5"],
)
RESIDENCY = rule("eu-data-residency", "deny", regions_not_in=["eu", "us"])
POLICIES = PolicySet.of(
    [
        policy("us", "allow"),
        policy("eu", "allow", DIRECTIVE, RESIDENCY),
        policy("cn", "deny", DIRECTIVE, rule("domestic", "allow", origins=["cn"])),
    ]
)


# --- decide --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "default", "target", "allowed", "rule_id"),
    [
        # deny beats allow, whatever the order
        (
            [rule("a", "allow", vendors=["Anthropic"]), rule("d", "deny", tags=["reasoning"])],
            "allow",
            FABLE,
            False,
            "d",
        ),
        (
            [rule("d", "deny", tags=["reasoning"]), rule("a", "allow", vendors=["Anthropic"])],
            "deny",
            FABLE,
            False,
            "d",
        ),
        # the first matching deny in file order decides
        (
            [rule("d1", "deny", vendors=["Anthropic"]), rule("d2", "deny", tags=["reasoning"])],
            "allow",
            FABLE,
            False,
            "d1",
        ),
        # the first matching allow, when no deny matches
        (
            [rule("a1", "allow", models=["gpt-*"]), rule("a2", "allow", vendors=["OpenAI"])],
            "deny",
            GPT,
            True,
            "a1",
        ),
        # no match: the default, named 'default'
        ([rule("d", "deny", vendors=["Nobody"])], "allow", GPT, True, "default"),
        ([rule("a", "allow", vendors=["Nobody"])], "deny", GPT, False, "default"),
        ([], "deny", GPT, False, "default"),
        # globs, case-insensitive
        ([rule("g", "deny", models=["CLAUDE-*"])], "allow", FABLE, False, "g"),
        ([rule("g", "deny", models=["gpt-?.5"])], "allow", GPT, False, "g"),
        ([rule("g", "deny", models=["[ck]*"])], "allow", GPT, True, "default"),
        ([rule("g", "deny", models=["claude"])], "allow", FABLE, True, "default"),
        # regions and regions_not_in
        ([rule("r", "deny", regions=["cn"])], "allow", KIMI, False, "r"),
        ([rule("r", "deny", regions_not_in=["eu", "us"])], "allow", KIMI, False, "r"),
        ([rule("r", "deny", regions_not_in=["EU", "US"])], "allow", GPT, True, "default"),
        # tags: any of the listed tags
        ([rule("t", "deny", tags=["fast", "EXPORT_RESTRICTED"])], "allow", FABLE, False, "t"),
        ([rule("t", "deny", tags=["fast"])], "allow", FABLE, True, "default"),
        # every given field must match (AND), any value within a field (OR)
        (
            [rule("v", "deny", vendors=["anthropic"], regions=["cn"])],
            "allow",
            FABLE,
            True,
            "default",
        ),
        (
            [rule("v", "deny", vendors=["OpenAI", "anthropic"], regions=["us"])],
            "allow",
            FABLE,
            False,
            "v",
        ),
        ([rule("p", "allow", providers=["P-CN"], origins=["cn"])], "deny", KIMI, True, "p"),
    ],
)
def test_decide_table(
    rules: list[Rule], default: str, target: CatalogModel, allowed: bool, rule_id: str
) -> None:
    decision = decide(policy("eu", default, *rules), target, TODAY)
    assert (decision.allowed, decision.rule_id) == (allowed, rule_id)
    assert decision.model_id == target.id
    assert decision.jurisdiction == "eu"
    assert (decision.policy_version, decision.policy_sha256) == ("1", "sha-eu")
    assert decision.reason


@pytest.mark.parametrize(
    ("today", "denied"),
    [
        (date(2026, 6, 14), False),  # before effective_from
        (date(2026, 6, 15), True),  # effective_from is inclusive
        (date(2026, 9, 30), True),  # effective_until is inclusive
        (date(2026, 10, 1), False),  # after effective_until
    ],
)
def test_rules_apply_only_between_their_dates(today: date, denied: bool) -> None:
    windowed = rule(
        "w", "deny", start=date(2026, 6, 15), until=date(2026, 9, 30), models=["gpt-5.5"]
    )
    decision = decide(policy("eu", "allow", windowed), GPT, today)
    assert decision.allowed is not denied
    assert decision.rule_id == ("w" if denied else "default")


def test_an_inactive_deny_does_not_hide_an_active_allow() -> None:
    expired = rule("old", "deny", until=date(2026, 1, 1), vendors=["OpenAI"])
    decision = decide(
        policy("cn", "deny", expired, rule("a", "allow", vendors=["OpenAI"])), GPT, TODAY
    )
    assert (decision.allowed, decision.rule_id) == (True, "a")


@pytest.mark.parametrize("region", ["xx", "uk", "", "mars", "ＵＳ", "us-east-1"])
def test_unknown_region_is_denied_whatever_the_rules(region: str) -> None:
    odd = model("odd", region=region)
    decision = decide(policy("us", "allow", rule("a", "allow", models=["*"])), odd, TODAY)
    assert (decision.allowed, decision.rule_id) == (False, "unknown_region")


def test_region_codes_are_pinned_iso_alpha2_plus_eu() -> None:
    assert len(REGION_CODES) == 250
    assert {"us", "cn", "eu", "gb", "no", "de"} <= set(REGION_CODES)
    assert "uk" not in REGION_CODES
    assert all(len(c) == 2 and c.isascii() and c.islower() for c in REGION_CODES)


def test_empty_match_is_vacuous_and_flagged() -> None:
    assert Match().is_empty
    assert Match().matches(GPT)
    assert not Match(tags=("x",)).is_empty


def test_decision_label() -> None:
    assert decide(POLICIES.policies["us"], FABLE, TODAY).label == "allowed"
    assert (
        decide(POLICIES.policies["eu"], FABLE, TODAY).label == "denied:us-export-directive-2026-06"
    )


# --- evaluate ------------------------------------------------------------------


def test_evaluate_keeps_candidate_order_and_explains_exclusions() -> None:
    result = evaluate(POLICIES, ["eu"], ["kimi-k2.6", "gpt-5.5", "claude-fable-5"], CATALOG, TODAY)
    assert result.allowed_ids == ("gpt-5.5",)
    assert [(d.model_id, d.rule_id) for d in result.excluded] == [
        ("kimi-k2.6", "eu-data-residency"),
        ("claude-fable-5", "us-export-directive-2026-06"),
    ]
    assert result.is_allowed("gpt-5.5")
    assert not result.is_allowed("kimi-k2.6")
    assert not result.is_allowed("never-asked")
    decision = result.decision(" claude-fable-5 ")
    assert decision is not None
    assert decision.reason == "reason of us-export-directive-2026-06"


def test_evaluate_accepts_catalog_models_and_drops_duplicates() -> None:
    result = evaluate(POLICIES, ["us"], [GPT, "gpt-5.5", FABLE, " gpt-5.5 "], CATALOG, TODAY)
    assert result.allowed == (GPT, FABLE)
    assert set(result.decisions) == {"gpt-5.5", "claude-fable-5"}


def test_unknown_jurisdiction_denies_everything() -> None:
    result = evaluate(POLICIES, ["xx"], list(CATALOG), CATALOG, TODAY)
    assert result.allowed == ()
    assert {(d.rule_id, d.jurisdiction, d.policy_version) for d in result.excluded} == {
        ("unknown_jurisdiction", "xx", None)
    }


def test_no_jurisdiction_at_all_denies_everything() -> None:
    result = evaluate(POLICIES, [], list(CATALOG), CATALOG, TODAY)
    assert result.allowed == ()
    assert {d.rule_id for d in result.excluded} == {"unknown_jurisdiction"}


@pytest.mark.parametrize("name", ["nope", "Claude-Fable-5", "claude-fable-5\u200b", "gpt-5.5 x"])
def test_unknown_model_is_denied(name: str) -> None:
    result = evaluate(POLICIES, ["us"], [name], CATALOG, TODAY)
    assert result.allowed == ()
    assert [(d.model_id, d.rule_id, d.allowed) for d in result.excluded] == [
        (name.strip(), "unknown_model", False)
    ]


def test_intersection_narrows() -> None:
    alone = evaluate(POLICIES, ["us"], list(CATALOG), CATALOG, TODAY)
    both = evaluate(POLICIES, ["us", "eu"], list(CATALOG), CATALOG, TODAY)
    assert alone.allowed_ids == ("claude-fable-5", "gpt-5.5", "kimi-k2.6")
    assert both.allowed_ids == ("gpt-5.5",)
    fable = both.decision("claude-fable-5")
    assert fable is not None
    assert (fable.jurisdiction, fable.rule_id) == ("eu", "us-export-directive-2026-06")


def test_intersection_never_widens() -> None:
    eu = evaluate(POLICIES, ["eu"], list(CATALOG), CATALOG, TODAY)
    eu_us = evaluate(POLICIES, ["eu", "us"], list(CATALOG), CATALOG, TODAY)
    eu_cn = evaluate(POLICIES, ["eu", "cn"], list(CATALOG), CATALOG, TODAY)
    assert eu_us.allowed_ids == eu.allowed_ids == ("gpt-5.5",)
    assert eu_cn.allowed_ids == ()
    gpt = eu_cn.decision("gpt-5.5")
    assert gpt is not None
    assert (gpt.jurisdiction, gpt.rule_id) == ("cn", "default")


def test_the_first_denying_jurisdiction_is_reported() -> None:
    result = evaluate(POLICIES, ["cn", "eu"], ["claude-fable-5"], CATALOG, TODAY)
    assert [(d.jurisdiction, d.rule_id) for d in result.excluded] == [
        ("cn", "us-export-directive-2026-06")
    ]


def test_jurisdiction_codes_are_normalized_in_evaluate() -> None:
    result = evaluate(POLICIES, [" EU "], ["claude-fable-5"], CATALOG, TODAY)
    assert [(d.jurisdiction, d.rule_id) for d in result.excluded] == [
        ("eu", "us-export-directive-2026-06")
    ]


def test_policy_set_hash_and_version_cover_every_policy() -> None:
    assert POLICIES.jurisdictions == ("cn", "eu", "us")
    assert POLICIES.version == "cn@1,eu@1,us@1"
    assert len(POLICIES.sha256) == 64
    other = PolicySet.of([policy("us", "allow"), policy("eu", "allow"), policy("cn", "deny")])
    changed = PolicySet.of(
        [policy("us", "allow"), policy("eu", "allow", version="2"), policy("cn", "deny")]
    )
    assert other.sha256 == POLICIES.sha256  # the hash is of the files' hashes
    assert changed.version != POLICIES.version
    assert POLICIES.get(" EU ") is POLICIES.policies["eu"]
    assert POLICIES.get("fr") is None
    with pytest.raises(ValueError, match="two policies"):
        PolicySet.of([policy("us", "allow"), policy("us", "deny")])


# --- normalize_jurisdictions ------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, ("us",)),
        ("", ("us",)),
        ("   ", ("us",)),
        ("eu", ("us", "eu")),
        (" EU , No ", ("us", "eu", "no")),
        ("eu,,no,", ("us", "eu", "no")),
        ("us, eu, EU", ("us", "eu")),
        ("us-CA", ("us", "us-ca")),
        ("xx", ("us", "xx")),  # well-formed but unknown: kept, and evaluate denies everything
    ],
)
def test_normalize_jurisdictions(header: str | None, expected: tuple[str, ...]) -> None:
    assert normalize_jurisdictions(" US ", header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "e",
        "e u",
        "eu;no",
        "eu_fr",
        "toolongcode",
        "ｅｕ",  # fullwidth
        "\u212ae",  # Kelvin sign K: lower-cases to ASCII 'k' in Python
        "eu\x00",
        "*",
        ",".join(["eu"] * 9),
    ],
)
def test_invalid_jurisdiction_header_is_a_400(header: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        normalize_jurisdictions("us", header)
    assert info.value.code == "invalid_jurisdiction"
    assert info.value.status == 400


def test_own_jurisdiction_must_be_well_formed() -> None:
    with pytest.raises(ValueError, match="not a valid code"):
        normalize_jurisdictions("u s", None)


# --- properties ------------------------------------------------------------------

JURISDICTIONS = ["us", "eu", "no", "cn", "in"]
VENDORS = ["Anthropic", "OpenAI", "Moonshot AI"]
PROVIDERS = ["p1", "p2", "p3"]
TAGS = ["export_restricted", "reasoning", "fast"]
REGIONS = ["us", "cn", "eu", "de", "gb", "xx"]  # xx is unknown
MODEL_IDS = ["claude-fable-5", "claude-mythos-5", "gpt-5.5", "kimi-k2.6", "deepseek-v4-pro"]
GLOBS = ["claude-*", "*-5", "gpt-?.5", "[dk]*", "CLAUDE-FABLE-5", "nothing-*"]
DAY0 = date(2026, 6, 1)

PROPERTY_SETTINGS = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _case_variant(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c for c, f in zip(text, flips, strict=True))


@st.composite
def catalogs(draw: st.DrawFn) -> dict[str, CatalogModel]:
    ids = draw(st.lists(st.sampled_from(MODEL_IDS), min_size=1, max_size=5, unique=True))
    return {
        i: model(
            i,
            vendor=draw(st.sampled_from(VENDORS)),
            provider=draw(st.sampled_from(PROVIDERS)),
            origin=draw(st.sampled_from(["us", "cn"])),
            region=draw(st.sampled_from(REGIONS)),
            tags=draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True)),
        )
        for i in ids
    }


@st.composite
def matches(draw: st.DrawFn) -> Match:
    def field(pool: list[str]) -> tuple[str, ...] | None:
        if not draw(st.booleans()):
            return None
        values = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
        return tuple(_case_variant(draw, v) for v in values)

    found = Match(
        models=field(MODEL_IDS + GLOBS),
        vendors=field(VENDORS),
        providers=field(PROVIDERS),
        origins=field(["us", "cn"]),
        regions=field(REGIONS),
        regions_not_in=field(REGIONS),
        tags=field(TAGS),
    )
    return Match(tags=(draw(st.sampled_from(TAGS)),)) if found.is_empty else found


@st.composite
def rules(draw: st.DrawFn, index: int) -> Rule:
    offsets = st.none() | st.integers(min_value=0, max_value=20)
    start, length = draw(offsets), draw(offsets)
    begin = None if start is None else DAY0 + timedelta(days=start)
    end = None if length is None else (begin or DAY0) + timedelta(days=length)
    return Rule(
        id=f"r{index}",
        effect=draw(st.sampled_from(["allow", "deny"])),
        reason=f"rule {index}",
        match=draw(matches()),
        effective_from=begin,
        effective_until=end,
    )


@st.composite
def policies(draw: st.DrawFn, jurisdiction: str) -> Policy:
    count = draw(st.integers(min_value=0, max_value=6))
    return policy(
        jurisdiction,
        draw(st.sampled_from(["allow", "deny"])),
        *[draw(rules(i)) for i in range(count)],
    )


@st.composite
def policy_sets(draw: st.DrawFn) -> PolicySet:
    codes = draw(st.lists(st.sampled_from(JURISDICTIONS), min_size=1, max_size=4, unique=True))
    return PolicySet.of([draw(policies(c)) for c in codes])


days = st.integers(min_value=0, max_value=40).map(lambda n: DAY0 + timedelta(days=n))
asked = st.lists(st.sampled_from([*JURISDICTIONS, "xx"]), min_size=1, max_size=3)


def _allowed(
    ps: PolicySet,
    codes: Sequence[str],
    candidates: Sequence[str],
    cat: dict[str, CatalogModel],
    today: date,
) -> set[str]:
    return set(evaluate(ps, codes, candidates, cat, today).allowed_ids)


@PROPERTY_SETTINGS
@given(ps=policy_sets(), cat=catalogs(), codes=asked, today=days, data=st.data())
def test_p9_case_and_whitespace_variants_are_never_less_restrictive(
    ps: PolicySet,
    cat: dict[str, CatalogModel],
    codes: list[str],
    today: date,
    data: st.DataObject,
) -> None:
    canonical = _allowed(ps, codes, list(cat), cat, today)
    pad = st.sampled_from(["", " ", "\t", "  \n"])
    variant_codes = [data.draw(pad) + _case_variant(data.draw, c) + data.draw(pad) for c in codes]
    variant_ids = [data.draw(pad) + _case_variant(data.draw, m) + data.draw(pad) for m in cat]
    assert _allowed(ps, variant_codes, variant_ids, cat, today) <= canonical
    # the same through the header parser, with the first code as the sidecar's own
    header_codes = normalize_jurisdictions(variant_codes[0], ",".join(variant_codes[1:]))
    assert _allowed(ps, header_codes, list(cat), cat, today) == canonical
    # confusable spellings never resolve to a loaded jurisdiction
    confusable = [c.replace("u", "\u028b").replace("e", "\u0435") for c in codes]
    assert _allowed(ps, confusable, list(cat), cat, today) <= canonical


@PROPERTY_SETTINGS
@given(
    ps=policy_sets(),
    cat=catalogs(),
    codes=asked,
    extra=st.sampled_from([*JURISDICTIONS, "xx"]),
    today=days,
)
def test_adding_a_jurisdiction_never_adds_an_allowed_model(
    ps: PolicySet, cat: dict[str, CatalogModel], codes: list[str], extra: str, today: date
) -> None:
    before = _allowed(ps, codes, list(cat), cat, today)
    after = _allowed(ps, [*codes, extra], list(cat), cat, today)
    assert after <= before
    assert after == before & _allowed(ps, [extra], list(cat), cat, today)
    # the intersection is exactly the models every jurisdiction allows on its own
    each = [_allowed(ps, [c], list(cat), cat, today) for c in codes]
    assert before == set.intersection(*each)


@PROPERTY_SETTINGS
@given(p=policies("eu"), cat=catalogs(), today=days)
def test_deny_overrides_allow(p: Policy, cat: dict[str, CatalogModel], today: date) -> None:
    for m in cat.values():
        decision = decide(p, m, today)
        active = [r for r in p.rules if r.active_on(today) and r.match.matches(m)]
        denies = [r.id for r in active if r.effect == "deny"]
        allows = [r.id for r in active if r.effect == "allow"]
        if m.region not in REGION_CODES:
            expected = (False, "unknown_region")
        elif denies:
            expected = (False, denies[0])
        elif allows:
            expected = (True, allows[0])
        else:
            expected = (p.default == "allow", "default")
        assert (decision.allowed, decision.rule_id) == expected


@PROPERTY_SETTINGS
@given(
    ps=policy_sets(),
    cat=catalogs(),
    codes=asked,
    today=days,
    extra=st.lists(st.sampled_from(["ghost", " GPT-5.5", "kimi-k2.6 "]), max_size=2),
)
def test_every_decision_names_a_rule(
    ps: PolicySet, cat: dict[str, CatalogModel], codes: list[str], today: date, extra: list[str]
) -> None:
    candidates = [*cat, *extra]
    result = evaluate(ps, codes, candidates, cat, today)
    known_ids = {r.id for p in ps.policies.values() for r in p.rules} | RESERVED_RULE_IDS
    for decision in result.decisions.values():
        assert isinstance(decision, Decision)
        assert decision.rule_id in known_ids
        assert decision.reason
        assert decision.jurisdiction in codes
        if decision.rule_id in ("unknown_jurisdiction", "unknown_model", "unknown_region"):
            assert not decision.allowed
    assert all(not d.allowed for d in result.excluded)
    assert len(result.allowed) + len(result.excluded) == len(result.decisions)
    # allowed keeps the candidates' order
    order = [c.strip() for c in candidates]
    positions = [order.index(m.id) for m in result.allowed]
    assert positions == sorted(positions)
