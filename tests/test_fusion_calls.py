"""Fusion's call plan (issue 18): the judge's and synthesizer's calls are held in reserve, a
failed panelist is substituted rather than retried, blank answers fail their seat, and each
seat's story keeps every attempt's code. At the wire, counted on the fake's call log."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.errors import AllProvidersFailed, AttemptRecord
from router.fusion.caller import CALL_BUDGET_EXHAUSTED, failure_code
from router.fusion.plan import MAX_UPSTREAM_CALLS
from router.routing import CallBudget
from tests.fakes.script import Answer, Reset, Status
from tests.fusion_setup import fusion_sidecar, role_of, roles

QUESTION = [{"role": "user", "content": "When was the bridge built?"}]

FIVE = """  five:
    panelists: [m1, m2, m3, sub1, sub2]
    judges: [judge-m]
    synthesizers: [synth-m, synth-b]
    quorum: 3
    deadline_s: 10
"""
TRIO_SEATS = ("m1", "m2", "m3")
FIVE_SEATS = ("m1", "m2", "m3", "sub1", "sub2")


def fusion_of(completion: Any) -> dict[str, Any]:
    extra = completion.model_extra or {}
    return extra["fusion"]  # type: ignore[no-any-return]


def judged_labels(wall: Any) -> list[str]:
    """The answers the judge was shown (their texts), from its recorded prompt."""
    judge = next(c for c in wall.calls if role_of(c) == "judge")
    prompt = judge.body["messages"][1]["content"]
    return re.findall(r"\[A\d+\]: (.*)", prompt)


# -- the fault schedule ----------------------------------------------------------------------

FAULTS = [Answer("fine"), Status(500), Answer(""), Answer("   ")]


def _check_schedule(panel: str, quorum: int, schedule: dict[str, list[Any]]) -> None:
    async def run() -> None:
        async with (
            fusion_sidecar(panel_extra=FIVE) as s,
            aiohttp.ClientSession() as http,
        ):
            for model, behaviours in schedule.items():
                s.wall.script(f"up-{model}", behaviours)
            body = {"model": f"fusion/{panel}", "messages": QUESTION}
            async with http.post(f"{s.base_url}/chat/completions", json=body) as response:
                payload = await response.json()
            calls = roles(s.wall)
            assert len(s.wall.calls) <= MAX_UPSTREAM_CALLS, calls
            if response.status != 200:
                assert payload["error"]["code"] == "panel_exhausted", payload
                answered = [x for x in payload["error"]["seats"] if x["status"] == "answered"]
                assert len(answered) < quorum
                assert not [c for c in calls if c[0] != "panelist"]  # no judge, no synthesis
                return
            fusion = payload["fusion"]
            assert fusion["upstream_calls"] == len(s.wall.calls)
            answered = [x for x in fusion["seats"] if x["status"] == "answered"]
            assert len(answered) >= quorum  # no degrade configured: 200 means quorum met
            # quorum met: the judge and the synthesizer were both called, and answered
            assert [c for c in calls if c[0] == "judge"] == [("judge", "judge-m")], calls
            assert [c for c in calls if c[0] == "synthesizer"] == [("synthesizer", "synth-m")]
            assert fusion["degraded"] == []
            assert fusion["synthesizer"]["status"] == "ok"
            # the judge saw exactly the answered seats, none of them blank
            shown = judged_labels(s.wall)
            assert len(shown) == len(answered)
            assert all(text.strip() for text in shown)
            for seat in fusion["seats"]:
                for failure in seat["failures"]:
                    assert failure["code"] != "all_providers_failed"
                    assert failure["attempts"]

    asyncio.run(run())


def _schedules(seats: tuple[str, ...]) -> st.SearchStrategy[dict[str, list[Any]]]:
    # the seated panelists and the catalog's substitutes, each with a per-call script
    models = sorted({*seats, "sub1", "sub2"})
    return st.dictionaries(
        st.sampled_from(models), st.lists(st.sampled_from(FAULTS), min_size=1, max_size=2)
    )


_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_any_fault_schedule_on_three_seats_finishes_within_eight_calls() -> None:
    """For any pattern of panelist failures (500, empty, blank) on a 3-seat panel: whenever
    quorum is met the judge and synthesizer are called; never more than 8 upstream calls."""

    @_SETTINGS
    @given(_schedules(TRIO_SEATS))
    def check(schedule: dict[str, list[Any]]) -> None:
        _check_schedule("trio", 2, schedule)

    check()


def test_any_fault_schedule_on_five_seats_finishes_within_eight_calls() -> None:
    """The same on a 5-seat panel, where the reserve leaves the panel a single spare call."""

    @_SETTINGS
    @given(_schedules(FIVE_SEATS))
    def check(schedule: dict[str, list[Any]]) -> None:
        _check_schedule("five", 3, schedule)

    check()


# -- 1. a call plan that always leaves room to finish ----------------------------------------


async def test_two_failing_panelists_of_three_still_get_judged_and_synthesized() -> None:
    """The issue's reproduction: two of three panelists fail with 500. Each is substituted at
    once (not retried), and the judge and synthesizer get their reserved calls. (The ceiling is
    raised to `standard` so both seats have a substitute: sub2 is above the seats' budget tier.)"""
    async with fusion_sidecar() as s:
        s.wall.script("up-m2", Status(500))
        s.wall.script("up-m3", Status(500))
        completion = await s.openai().chat.completions.create(
            model="fusion/trio",
            messages=QUESTION,  # type: ignore[arg-type]
            extra_body={"fusion": {"max_substitute_tier": "standard"}},
        )
        fusion = fusion_of(completion)
        assert completion.choices[0].message.content == "answer from synth-m"
        assert fusion["degraded"] == []
        assert fusion["synthesizer"]["status"] == "ok"
        assert [seat["served"] for seat in fusion["seats"]] == ["m1", "sub1", "sub2"]
        calls = roles(s.wall)
        assert calls.count(("panelist", "m2")) == 1  # substituted, not retried
        assert calls.count(("panelist", "m3")) == 1
        assert calls[-2:] == [("judge", "judge-m"), ("synthesizer", "synth-m")]
        assert len(calls) == 7 == fusion["upstream_calls"]


async def test_five_failing_seats_cannot_spend_the_judges_and_synthesizers_calls() -> None:
    """Five seats, every panelist failing and every substitute failing: the panel spends only
    the calls not held for the judge and synthesizer (5 seats + 1 spare), never 8."""
    async with fusion_sidecar(panel_extra=FIVE) as s:
        for m in (*FIVE_SEATS, "judge-m", "synth-m", "synth-b"):
            s.wall.script(f"up-{m}", Status(500))
        s.wall.script("up-m1", Answer("answer from m1"))
        s.wall.script("up-m2", Answer("answer from m2"))
        with pytest.raises(openai.APIStatusError) as info:
            await s.openai().chat.completions.create(model="fusion/five", messages=QUESTION)  # type: ignore[arg-type]
        assert info.value.code == "panel_exhausted"
        assert len(s.wall.calls) == MAX_UPSTREAM_CALLS - 2  # the reserve was never spent


def test_a_stage_not_called_for_lack_of_calls_says_so() -> None:
    """The budget's reserve is the judge's and synthesizer's alone; a stage that finds no call
    left reports `call_budget_exhausted`, never `all_providers_failed`."""
    budget = CallBudget(8)
    assert budget.reserve("judge")
    assert budget.reserve("synthesizer")
    panel = budget.lane("panelist")
    assert sum(panel.take() for _ in range(10)) == 6  # the panel gets what is not held
    assert budget.available("judge") == 1
    assert budget.available("synthesizer") == 1
    budget.release("judge")  # no judging: its call may serve the synthesizer's failover
    assert budget.available("synthesizer") == 2
    synthesizer = budget.lane("synthesizer")
    assert [synthesizer.take() for _ in range(3)] == [True, True, False]
    skipped = AttemptRecord("pe", "synth-m", "skipped", CALL_BUDGET_EXHAUSTED, None, 0.0)
    assert failure_code(AllProvidersFailed("x", attempts=[skipped])) == CALL_BUDGET_EXHAUSTED
    called = AttemptRecord("pe", "synth-m", "provider_fault", "provider_unavailable", 500, 1.0)
    assert failure_code(AllProvidersFailed("x", attempts=[called, skipped])) == (
        "all_providers_failed"
    )


# -- 2. blank answers are failures of the seat -----------------------------------------------


async def test_empty_and_blank_answers_fail_their_seat_and_are_substituted() -> None:
    """An empty and a whitespace-only answer do not reach the judge: each seat is substituted."""
    async with fusion_sidecar() as s:
        s.wall.script("up-m2", Answer(""))
        s.wall.script("up-m3", Answer("  \n\t "))
        completion = await s.openai().chat.completions.create(
            model="fusion/trio",
            messages=QUESTION,  # type: ignore[arg-type]
            extra_body={"fusion": {"max_substitute_tier": "standard"}},  # sub2 may sit
        )
        fusion = fusion_of(completion)
        assert [seat["served"] for seat in fusion["seats"]] == ["m1", "sub1", "sub2"]
        assert [f["code"] for f in fusion["seats"][1]["failures"]] == ["empty_answer"]
        assert [sub["code"] for sub in fusion["substitutions"]] == ["empty_answer"] * 2
        assert sorted(judged_labels(s.wall)) == [
            "answer from m1",
            "answer from sub1",
            "answer from sub2",
        ]


async def test_blank_answers_do_not_count_toward_quorum() -> None:
    """Blank answers everywhere but one seat: below quorum, no judge, 502 panel_exhausted."""
    async with fusion_sidecar() as s:
        for m in ("m2", "m3", "sub1", "sub2"):
            s.wall.script(f"up-{m}", Answer(" "))
        with pytest.raises(openai.APIStatusError) as info:
            await s.openai().chat.completions.create(model="fusion/trio", messages=QUESTION)  # type: ignore[arg-type]
        assert info.value.code == "panel_exhausted"
        assert {role for role, _ in roles(s.wall)} == {"panelist"}


async def test_a_streamed_fusion_also_fails_blank_seats() -> None:
    """A streamed fusion request's panel calls treat a blank answer the same way."""
    async with fusion_sidecar() as s:
        s.wall.script("up-m2", Answer("   "))
        stream = await s.openai().chat.completions.create(
            model="fusion/trio", messages=QUESTION, stream=True
        )  # type: ignore[arg-type]
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text.strip() == "answer from synth-m"
        assert ("panelist", "sub1") in roles(s.wall)
        assert sorted(judged_labels(s.wall)) == [
            "answer from m1",
            "answer from m3",
            "answer from sub1",
        ]


# -- 3. every attempt's code in the seat's story ---------------------------------------------


async def test_a_seats_story_keeps_every_attempts_code() -> None:
    """A 500 and a reset no longer both read `all_providers_failed`: each failure keeps its
    attempts' codes and statuses, the substitute's retry included."""
    async with fusion_sidecar() as s:
        s.wall.script("up-m2", Status(500))
        s.wall.script("up-sub1", [Status(503), Reset()])
        completion = await s.openai().chat.completions.create(
            model="fusion/trio", messages=QUESTION
        )  # type: ignore[arg-type]
        fusion = fusion_of(completion)
        seat = fusion["seats"][1]
        assert seat["status"] == "failed"
        assert seat["failures"][0] == {
            "model": "m2",
            "code": "provider_unavailable",
            "attempts": [{"code": "provider_unavailable", "status": 500}],
        }
        sub1 = seat["failures"][1]
        assert sub1["model"] == "sub1"
        assert sub1["attempts"][0] == {"code": "provider_unavailable", "status": 503}
        # the reset, as routing records it (on a pooled connection: `stale_connection`)
        reset = sub1["attempts"][1]
        assert reset["status"] is None
        assert reset["code"] in ("provider_unavailable", "stale_connection")
        assert sub1["code"] == reset["code"]  # the last call's code tells the seat's story
        assert fusion["substitutions"][0]["code"] == "provider_unavailable"
        assert fusion["synthesizer"]["status"] == "ok"
        assert len(s.wall.calls) <= MAX_UPSTREAM_CALLS
