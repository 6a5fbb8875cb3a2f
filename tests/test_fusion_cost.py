"""Cost control for fusion (issue 18), asked through the `openai` SDK: the plan's estimate, a panel's `max_cost_usd` checked
before any call and as the stages run, and the `cost` object comparing the answer with the
best-ranked solo model. On the fusion bed: every model costs $1 / $2 per million tokens."""

from __future__ import annotations

from typing import Any

import pytest

from router.errors import ConfigError
from router.token_estimate import estimate_input_tokens
from router.types import ChatRequest, Message
from tests.fakes.script import Answer, Delay
from tests.fusion_setup import fusion_sidecar, roles
from tests.helpers import Sidecar, ask_openai, config_from_yaml

QUESTION = "Which river is longer, the Nile or the Amazon?"
ASK: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]


def trio(**options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "fusion/trio", "messages": ASK}
    max_tokens = options.pop("max_tokens", None)
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if options:
        body["fusion"] = options
    return body


def stage_costs(fusion: dict[str, Any]) -> float:
    parts = [s["cost_usd"] for s in fusion["seats"]]
    parts += [fusion[r]["cost_usd"] for r in ("judge", "synthesizer") if fusion[r]]
    return sum(parts)


async def test_the_fusion_object_reports_estimate_spend_and_the_solo_price() -> None:
    async with fusion_sidecar() as s:
        status, body = await ask_openai(s, trio())
        assert status == 200, body
        fusion = body["fusion"]
        cost = fusion["cost"]
        assert cost["spent_usd"] == pytest.approx(fusion["cost_usd"])
        assert cost["spent_usd"] == pytest.approx(stage_costs(fusion))
        assert 0 < cost["spent_usd"] <= cost["estimate_usd"]
        assert cost["max_cost_usd"] is None
        # the best-ranked model policy allows: the highest tier (strong), first in the catalog
        solo = cost["solo"]
        assert solo["model"] == "judge-m"
        question = estimate_input_tokens(ChatRequest("x", (Message("user", QUESTION),)))
        # the synthesizer's answer: the fake's 7 output tokens
        assert (solo["input_tokens"], solo["output_tokens"]) == (question, 7)
        assert solo["cost_usd"] == pytest.approx((question * 1.0 + 7 * 2.0) / 1e6)
        assert cost["vs_solo"] == pytest.approx(cost["spent_usd"] / solo["cost_usd"], rel=1e-2)
        # per token of answer length: three seats write it ($2/M each), the judge and the
        # synthesizer read three ($1/M each), the synthesizer writes it ($2/M): $14/M, against
        # the solo model's $2/M output price
        per = cost["per_answer_token_usd"]
        assert (per["fusion"], per["solo"]) == (pytest.approx(14e-6), pytest.approx(2e-6))
        assert cost["long_answers_vs_solo"] == pytest.approx(7.0)


async def test_compare_with_names_the_solo_model_per_request() -> None:
    async with fusion_sidecar() as s:
        status, body = await ask_openai(s, trio(compare_with="synth-b"))
        assert status == 200, body
        assert body["fusion"]["cost"]["solo"]["model"] == "synth-b"
        status, body = await ask_openai(s, trio(compare_with="nope"))
        assert status == 400, body
        assert body["error"]["param"] == "fusion.compare_with"


def test_a_panel_comparing_with_an_unknown_model_is_a_config_problem() -> None:
    from tests.fusion_setup import fusion_yaml

    yaml = fusion_yaml("http://127.0.0.1:9", panel_extra="    compare_with: ghost")
    with pytest.raises(ConfigError) as caught:
        config_from_yaml(yaml)
    assert "panels.trio.compare_with" in str(caught.value)


async def test_the_estimate_is_every_planned_call_at_its_longest() -> None:
    """Each extra token of `max_tokens` costs: three seats writing it ($2/M each), the judge
    reading three answers ($1/M each), the synthesizer reading them ($1/M each) and writing
    it ($2/M): $14 per million."""
    async with fusion_sidecar() as s:
        estimates = []
        for max_tokens in (100, 200):
            status, body = await ask_openai(s, trio(max_tokens=max_tokens))
            assert status == 200, body
            estimates.append(body["fusion"]["cost"]["estimate_usd"])
        assert estimates[1] - estimates[0] == pytest.approx(100 * 14 / 1e6, abs=2e-6)


async def test_an_estimate_over_the_cap_is_refused_before_any_call() -> None:
    async with fusion_sidecar() as s:
        status, body = await ask_openai(s, trio(max_cost_usd=0.01))
        assert status == 400, body
        error = body["error"]
        assert (error["code"], error["param"]) == ("cost_limit_exceeded", "fusion.max_cost_usd")
        assert error["max_cost_usd"] == 0.01
        assert error["estimate_usd"] > 0.01
        assert "max_tokens" in error["message"]
        assert s.wall.calls == []  # nothing was called
        fits = error["fits_max_tokens"]
        assert isinstance(fits, int)
        assert fits > 16
        # the max_tokens the error names fits; a little more does not
        status, body = await ask_openai(s, trio(max_cost_usd=0.01, max_tokens=fits))
        assert status == 200, body
        assert body["fusion"]["cost"]["estimate_usd"] <= 0.01
        assert body["fusion"]["cost"]["max_cost_usd"] == 0.01
        status, body = await ask_openai(s, trio(max_cost_usd=0.01, max_tokens=fits + 10))
        assert (status, body["error"]["code"]) == (400, "cost_limit_exceeded")


async def test_a_cap_no_answer_fits_says_so() -> None:
    async with fusion_sidecar() as s:
        status, body = await ask_openai(s, trio(max_cost_usd=0.00001))
        assert (status, body["error"]["fits_max_tokens"]) == (400, None)
        assert "no answer fits" in body["error"]["message"]


async def _estimate(sidecar: Sidecar, max_tokens: int) -> float:
    status, body = await ask_openai(sidecar, trio(max_tokens=max_tokens))
    assert status == 200, body
    return float(body["fusion"]["cost"]["estimate_usd"])


async def test_a_substitute_that_does_not_fit_what_is_left_is_not_called() -> None:
    """m1 answers empty but is billed; its siblings are still in flight holding their
    ceilings; with the cap at the estimate, no substitute fits: the seat stays failed and
    says why, and the panel still meets its quorum."""
    async with fusion_sidecar() as s:
        cap = await _estimate(s, 100)
        s.wall.calls.clear()
        s.wall.script("up-m1", Answer("", input_tokens=11, output_tokens=50))
        for m in ("m2", "m3"):
            s.wall.script(f"up-{m}", Delay(0.3, Answer(f"answer from {m}")))
        status, body = await ask_openai(s, trio(max_tokens=100, max_cost_usd=cap))
        assert status == 200, body
        seat = body["fusion"]["seats"][0]
        assert seat["status"] == "failed"
        assert seat["failures"][0]["code"] == "empty_answer"
        assert seat["unsubstituted"] == "no substitute fits in what is left of max_cost_usd"
        assert ("panelist", "sub1") not in roles(s.wall)
        # without the cap the same failure is substituted
        s.wall.calls.clear()
        status, body = await ask_openai(s, trio(max_tokens=100))
        assert status == 200, body
        assert ("panelist", "sub1") in roles(s.wall)


async def test_when_the_money_runs_out_the_judge_and_synthesizer_give_way() -> None:
    """Panelists that bill far more than their ceilings (the provider's own count) leave no
    money for the judge or the synthesizer: neither is called, the best answer stands, and
    the `fusion` object says so."""
    async with fusion_sidecar() as s:
        cap = await _estimate(s, 100)
        s.wall.calls.clear()
        for m in ("m1", "m2", "m3"):
            s.wall.script(f"up-{m}", Answer(f"answer from {m}", output_tokens=200_000))
        status, body = await ask_openai(s, trio(max_tokens=100, max_cost_usd=cap))
        assert status == 200, body
        fusion = body["fusion"]
        assert [r for r, _m in roles(s.wall)] == ["panelist"] * 3
        assert fusion["degraded"] == ["judge", "synthesizer"]
        assert fusion["judge"]["error"] == "cost_limit"
        assert fusion["synthesizer"]["error"] == "cost_limit"
        assert body["choices"][0]["message"]["content"].startswith("answer from m")
        assert fusion["cost"]["spent_usd"] > cap  # what the providers billed, reported as is
