"""Every shipped policy file loads against the seed's catalog and decides what it says."""

from __future__ import annotations

from datetime import date

import pytest

from router.catalog import Catalog
from router.config import load_config, shipped_policies_dir
from router.policy import PolicySet, decide_all
from router.policy_loader import load_policy_dir

TODAY = date(2026, 11, 28)
BEFORE_DIRECTIVE = date(2026, 6, 1)
SEED = (
    "claude-fable-5",
    "claude-mythos-5",
    "claude-opus-4.8",
    "gpt-5.5",
    "gemini-3-flash",
    "kimi-k2.6",
    "deepseek-v4-pro",
)
DIRECTIVE = "us-export-directive-2026-06"


@pytest.fixture(name="shipped", scope="module")
def _shipped() -> tuple[PolicySet, Catalog]:
    catalog = Catalog.from_config(load_config(None).config)
    return load_policy_dir(shipped_policies_dir(), catalog.models), catalog


def decisions(
    shipped: tuple[PolicySet, Catalog], jurisdiction: str, today: date = TODAY
) -> dict[str, str]:
    policies, catalog = shipped
    return {m: decide_all(policies, [jurisdiction], catalog.models[m], today).label for m in SEED}


def test_every_shipped_file_loads_without_warnings_on_the_seed(
    shipped: tuple[PolicySet, Catalog],
) -> None:
    policies, _ = shipped
    assert set(policies.jurisdictions) == {"us", "eu", "uk", "in", "br", "no", "cn"}
    assert policies.warnings == ()
    for path in shipped_policies_dir().glob("*.yaml"):
        assert "EXAMPLE POLICY" in path.read_text().splitlines()[0], path.name


def test_us_allows_every_seed_model(shipped: tuple[PolicySet, Catalog]) -> None:
    assert set(decisions(shipped, "us").values()) == {"allowed"}


@pytest.mark.parametrize("jurisdiction", ["eu", "uk", "in", "br", "no", "cn"])
def test_export_directive_withdraws_fable_and_mythos_outside_the_us(
    shipped: tuple[PolicySet, Catalog], jurisdiction: str
) -> None:
    got = decisions(shipped, jurisdiction)
    assert got["claude-fable-5"] == f"denied:{DIRECTIVE}"
    assert got["claude-mythos-5"] == f"denied:{DIRECTIVE}"


@pytest.mark.parametrize("jurisdiction", ["eu", "uk", "in", "br", "no"])
def test_the_directive_has_a_start_date(
    shipped: tuple[PolicySet, Catalog], jurisdiction: str
) -> None:
    """Before 2026-06-15 Fable 5 was allowed everywhere the other rules allow it."""
    assert decisions(shipped, jurisdiction, BEFORE_DIRECTIVE)["claude-fable-5"] == "allowed"


def test_eu_data_residency_denies_providers_in_cn(shipped: tuple[PolicySet, Catalog]) -> None:
    got = decisions(shipped, "eu")
    assert got["kimi-k2.6"] == "denied:eu-data-residency"
    assert got["deepseek-v4-pro"] == "denied:eu-data-residency"
    assert got["gpt-5.5"] == got["claude-opus-4.8"] == got["gemini-3-flash"] == "allowed"


def test_norway_is_a_string_and_follows_the_eea(shipped: tuple[PolicySet, Catalog]) -> None:
    """`no` (Norway) is read as the string 'no', not YAML 1.1's False."""
    policies, _ = shipped
    assert policies.get("no") is not None
    got = decisions(shipped, "no")
    assert got["kimi-k2.6"].startswith("denied:")
    assert got["gpt-5.5"] == "allowed"


def test_cn_admits_only_domestic_models(shipped: tuple[PolicySet, Catalog]) -> None:
    got = decisions(shipped, "cn")
    allowed = {m for m, label in got.items() if label == "allowed"}
    assert allowed == {"kimi-k2.6", "deepseek-v4-pro"}


def test_uk_and_br_keep_non_restricted_models(shipped: tuple[PolicySet, Catalog]) -> None:
    for jurisdiction in ("uk", "in", "br"):
        got = decisions(shipped, jurisdiction)
        assert got["gpt-5.5"] == got["kimi-k2.6"] == got["claude-opus-4.8"] == "allowed"
