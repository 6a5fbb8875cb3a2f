"""Fusion plans and options (issue 18, in part): every panel field the README names can be set
per request within the config's limits, and a plan gives the true reason a panelist is not
seated (cooling down after a 429 is not "breaker open")."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.fakes.script import Answer, Status
from tests.fusion_setup import fusion_sidecar, role_of

HI: list[dict[str, Any]] = [{"role": "user", "content": "Why is the sky blue?"}]


async def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/chat/completions", json=body) as response,
    ):
        return response.status, await response.json()


async def test_every_panel_field_can_be_set_per_request() -> None:
    async with fusion_sidecar() as s:
        options = {
            "degrade": "best_single",
            "hedge_after_s": 5,
            "deadline_s": 8,
            "judge_prompt": "JUDGE THIS WAY.",
            "synthesizer_prompt": "WRITE IT THIS WAY.",
        }
        status, body = await _post(
            s.url, {"model": "fusion/trio", "messages": HI, "fusion": options}
        )
        assert status == 200, body
        judge = [c for c in s.wall.calls if c.model == "up-judge-m"]
        synth = [c for c in s.wall.calls if c.model == "up-synth-m"]
        assert judge
        assert judge[0].body["messages"][1]["content"].startswith("JUDGE THIS WAY.")
        assert synth
        assert any("WRITE IT THIS WAY." in str(m["content"]) for m in synth[0].body["messages"])
        assert all(role_of(c) == "panelist" for c in s.wall.calls if c.model == "up-m1")


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"deadline_s": -1}, "fusion.deadline_s"),
        ({"degrade": "shrug"}, "fusion.degrade"),
        ({"hedge_after_s": "soon"}, "fusion.hedge_after_s"),
        ({"judge_prompt": 7}, "fusion.judge_prompt"),
        ({"temperature": 0}, "fusion.temperature"),
    ],
)
async def test_a_bad_override_is_a_400_naming_it(options: dict[str, Any], param: str) -> None:
    async with fusion_sidecar() as s:
        status, body = await _post(
            s.url, {"model": "fusion/trio", "messages": HI, "fusion": options}
        )
        assert status == 400, body
        assert body["error"]["param"] == param
        assert s.wall.calls == []


async def test_a_panelist_cooling_down_after_a_429_is_planned_out_as_such() -> None:
    """Its plan reason says it is cooling down after a rate limit, not that a breaker is
    open (the breaker never saw a fault)."""
    async with fusion_sidecar() as s:
        s.wall.script("up-m1", Status(429, "slow down", retry_after="100"))
        status, body = await _post(s.url, {"model": "m1", "messages": HI})
        assert status == 429, body
        s.wall.script("up-m1", Answer("answer from m1"))
        status, body = await _post(s.url, {"model": "fusion/trio", "messages": HI})
        assert status == 200, body
        [seat] = [seat for seat in body["fusion"]["plan"]["seats"] if seat["wanted"] == "m1"]
        assert "cooling down after a rate limit until " in seat["reason"], seat
        assert "breaker open" not in seat["reason"], seat
