"""Fusion end to end (FU1-FU9): panel, substitution, judge, synthesis, through real HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import openai
import pytest

from router.fusion.plan import MAX_UPSTREAM_CALLS
from tests.fakes.script import Answer, Hang, InBandError, Status
from tests.fusion_setup import fusion_sidecar, role_of, roles

QUESTION = [{"role": "user", "content": "When was the bridge built?"}]


def fusion_of(completion: Any) -> dict[str, Any]:
    extra = completion.model_extra or {}
    assert "fusion" in extra, "the fusion object is missing"
    return extra["fusion"]  # type: ignore[no-any-return]


async def test_healthy_panel_answers_through_the_openai_client() -> None:
    """Three panelists, one judge, one synthesizer; the SDK parses the answer and the fusion object."""
    async with fusion_sidecar() as s:
        completion = await s.openai().chat.completions.create(
            model="fusion/trio", messages=QUESTION
        )  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "answer from synth-m"
        fusion = fusion_of(completion)
        assert [seat["served"] for seat in fusion["seats"]] == ["m1", "m2", "m3"]
        assert fusion["judge"]["status"] == "ok"
        assert fusion["judge"]["findings"]["ranking"]  # labels were mapped back to models
        assert set(fusion["judge"]["findings"]["ranking"]) == {"m1", "m2", "m3"}
        assert fusion["synthesizer"]["model"] == "synth-m"
        assert fusion["degraded"] == []
        assert sorted(roles(s.wall)) == sorted(
            [
                ("panelist", "m1"),
                ("panelist", "m2"),
                ("panelist", "m3"),
                ("judge", "judge-m"),
                ("synthesizer", "synth-m"),
            ]
        )
        # usage sums every stage; cost is itemized per stage
        stage_tokens = sum(seat["usage"]["output_tokens"] for seat in fusion["seats"])
        stage_tokens += (
            fusion["judge"]["usage"]["output_tokens"]
            + fusion["synthesizer"]["usage"]["output_tokens"]
        )
        assert completion.usage is not None
        assert completion.usage.completion_tokens == stage_tokens
        assert fusion["cost_usd"] == pytest.approx(
            sum(seat["cost_usd"] for seat in fusion["seats"])
            + fusion["judge"]["cost_usd"]
            + fusion["synthesizer"]["cost_usd"]
        )


async def test_judge_sees_anonymized_answers_without_model_names() -> None:
    """The judge's prompt carries labels and answers, never the panelists' model ids."""
    async with fusion_sidecar() as s:
        for m in ("m1", "m2", "m3"):
            s.wall.script(f"up-{m}", Answer(f"opinion {m[-1]}"))
        await s.openai().chat.completions.create(model="fusion/trio", messages=QUESTION)  # type: ignore[arg-type]
        judge_call = next(c for c in s.wall.calls if role_of(c) == "judge")
        prompt = judge_call.body["messages"][1]["content"]
        assert "[A1]" in prompt
        assert "[A3]" in prompt
        assert all(f"opinion {i}" in prompt for i in "123")
        assert "up-m1" not in prompt
        assert "m1:" not in prompt
        assert judge_call.body["response_format"] == {"type": "json_object"}


async def test_fu1_failed_panelist_is_substituted_before_the_judge() -> None:
    """FU1: a panelist failing with 5xx is replaced; the judge receives three answers."""
    async with fusion_sidecar() as s:
        s.wall.script("up-m2", Status(503))
        completion = await s.openai().chat.completions.create(
            model="fusion/trio", messages=QUESTION
        )  # type: ignore[arg-type]
        fusion = fusion_of(completion)
        assert [seat["served"] for seat in fusion["seats"]] == ["m1", "sub1", "m3"]
        assert fusion["substitutions"] == [
            {"seat": 1, "failed": "m2", "code": "provider_unavailable", "substitute": "sub1"}
        ]
        judge_call = next(c for c in s.wall.calls if role_of(c) == "judge")
        prompt = judge_call.body["messages"][1]["content"]
        assert "[A3]" in prompt
        assert "answer from sub1" in prompt
        calls = roles(s.wall)
        # a substitute is ready: the failed panelist is substituted, not retried
        assert calls.count(("panelist", "m2")) == 1
        # the substitute answered before the judge was asked
        assert calls.index(("panelist", "sub1")) < calls.index(("judge", "judge-m"))


async def test_fu2_hung_panelist_is_cut_and_substituted() -> None:
    """FU2: a silent panelist is cut at its first-byte clock and replaced; the answer still comes."""
    async with fusion_sidecar(first_byte_s=0.5) as s:
        s.wall.script("up-m3", Hang(30))
        started = time.monotonic()
        completion = await s.openai().chat.completions.create(
            model="fusion/trio", messages=QUESTION
        )  # type: ignore[arg-type]
        elapsed = time.monotonic() - started
        fusion = fusion_of(completion)
        assert fusion["seats"][2]["served"] == "sub1"
        assert roles(s.wall).count(("panelist", "m3")) == 1  # a silent provider is not retried
        assert elapsed < 3.0


async def test_fu3_below_quorum_is_panel_exhausted_with_every_seat() -> None:
    """FU3: when panelists and substitutes fail below quorum: 502 panel_exhausted, no judge."""
    async with fusion_sidecar() as s:
        for m in ("m2", "m3", "sub1", "sub2", "judge-m", "synth-m", "synth-b"):
            s.wall.script(f"up-{m}", Status(500))
        with pytest.raises(openai.APIStatusError) as info:
            await s.openai().chat.completions.create(model="fusion/trio", messages=QUESTION)  # type: ignore[arg-type]
        assert info.value.status_code == 502
        assert info.value.code == "panel_exhausted"
        body = info.value.body
        assert isinstance(body, dict)
        assert [seat["status"] for seat in body["seats"]] == ["answered", "failed", "failed"]
        assert all(role_of(c) == "panelist" for c in s.wall.calls)
        assert len(s.wall.calls) <= MAX_UPSTREAM_CALLS


async def test_fu4_judge_failure_degrades_visibly() -> None:
    """FU4: with the judge down, synthesis goes on without findings, flagged as degraded."""
    async with fusion_sidecar() as s:
        s.wall.script("up-judge-m", Status(500))
        raw = await s.openai().chat.completions.with_raw_response.create(
            model="fusion/trio", messages=QUESTION
        )  # type: ignore[arg-type]
        fusion = fusion_of(raw.parse())
        assert fusion["judge"]["status"] == "failed"
        assert fusion["degraded"] == ["judge"]
        assert raw.headers["x-fusion-degraded"] == "judge"
        synth = next(c for c in s.wall.calls if role_of(c) == "synthesizer")
        assert "no findings" in synth.body["messages"][1]["content"]


async def test_fu5_synthesizer_failing_mid_stream_is_an_error_not_a_success() -> None:
    """FU5: after the first streamed byte, a synthesizer failure is an in-band error."""
    async with fusion_sidecar() as s:
        s.wall.script("up-synth-m", InBandError(after=2))
        stream = await s.openai().chat.completions.create(
            model="fusion/trio", messages=QUESTION, stream=True
        )  # type: ignore[arg-type]
        received: list[str] = []

        async def drain() -> None:
            async for chunk in stream:
                received.extend(c.delta.content or "" for c in chunk.choices)

        with pytest.raises(openai.APIError):
            await drain()
        assert "".join(received).startswith("one")


async def test_synthesizer_failing_before_first_byte_fails_over() -> None:
    """Synthesizer candidates fail over until the first byte."""
    async with fusion_sidecar() as s:
        s.wall.script("up-synth-m", Status(500))
        stream = await s.openai().chat.completions.create(
            model="fusion/trio", messages=QUESTION, stream=True
        )  # type: ignore[arg-type]
        chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "answer from synth-b"
        fusion = fusion_of(chunks[-1])  # the fusion object arrives in the last chunk
        assert fusion["synthesizer"]["model"] == "synth-b"
        assert chunks[-1].usage is not None


async def test_fu7_client_disconnect_cancels_every_seat() -> None:
    """FU7: a client that goes away cancels every in-flight panel call within a second."""
    async with fusion_sidecar(first_byte_s=20) as s:
        for m in ("m1", "m2", "m3"):
            s.wall.script(f"up-{m}", Hang(30))
        async with aiohttp.ClientSession() as http:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await http.post(
                        f"{s.base_url}/chat/completions",
                        json={"model": "fusion/trio", "messages": QUESTION},
                    )
        assert s.wall.active == 3
        async with asyncio.timeout(1.0):
            while s.wall.active:
                await asyncio.sleep(0.02)
        assert s.wall.cancelled == 3
        tasks = [t for t in asyncio.all_tasks() if "fill_seat" in repr(t.get_coro())]
        assert tasks == []


async def test_fu8_a_panelist_failing_at_once_does_not_cancel_its_siblings() -> None:
    """FU8: one seat raising immediately leaves the others to finish."""
    async with fusion_sidecar() as s:
        s.wall.script("up-m1", Status(400, "unsupported"))
        s.wall.script("up-m2", Answer("slow but fine", chunk_delay=0.0))
        completion = await s.openai().chat.completions.create(
            model="fusion/trio", messages=QUESTION
        )  # type: ignore[arg-type]
        fusion = fusion_of(completion)
        statuses = {seat["served"]: seat["status"] for seat in fusion["seats"]}
        assert statuses["m2"] == "answered"
        assert statuses["m3"] == "answered"


async def test_request_names_its_own_panel() -> None:
    """`model: fusion` with panelists, judges and synthesizers named in the request."""
    async with fusion_sidecar() as s:
        completion = await s.openai().chat.completions.create(
            model="fusion",
            messages=QUESTION,  # type: ignore[arg-type]
            extra_body={
                "fusion": {
                    "panelists": ["m1", "sub2"],
                    "judges": ["judge-m"],
                    "synthesizers": ["synth-b"],
                }
            },
        )
        fusion = fusion_of(completion)
        assert [seat["served"] for seat in fusion["seats"]] == ["m1", "sub2"]
        assert fusion["synthesizer"]["model"] == "synth-b"


@pytest.mark.parametrize(
    ("options", "status", "code"),
    [
        ({"panelists": ["m1", "nope"], "synthesizers": ["synth-m"]}, 404, "unknown_model"),
        ({"panelists": ["m1"] * 6, "synthesizers": ["synth-m"]}, 400, "invalid_request"),
        (
            {"panelists": ["m1", "m2"], "synthesizers": ["synth-m"], "quorum": 3},
            400,
            "invalid_request",
        ),
        (
            {"panelists": ["m1", "m2"], "synthesizers": ["synth-m"], "api_base": "http://x"},
            400,
            "forbidden_field",
        ),
        (
            {"panelists": ["m1", "m2"], "synthesizers": ["synth-m"], "colour": "red"},
            400,
            "unsupported_parameter",
        ),
    ],
)
async def test_bad_fusion_options_are_4xx(options: dict[str, Any], status: int, code: str) -> None:
    """A malformed request-named panel is refused before any call."""
    async with fusion_sidecar() as s, aiohttp.ClientSession() as http:
        body = {"model": "fusion", "messages": QUESTION, "fusion": options}
        async with http.post(f"{s.base_url}/chat/completions", json=body) as response:
            assert response.status == status
            assert (await response.json())["error"]["code"] == code
        assert s.wall.calls == []


async def test_hedging_starts_a_substitute_and_the_first_answer_wins() -> None:
    """A seat slower than hedge_after_s gets a substitute in parallel; the loser is cancelled."""
    from tests.fakes.script import Delay

    async with fusion_sidecar(first_byte_s=5, panel_extra="    hedge_after_s: 0.2") as s:
        s.wall.script("up-m2", Delay(3.0, Answer("too late")))
        started = time.monotonic()
        completion = await s.openai().chat.completions.create(
            model="fusion/trio", messages=QUESTION
        )  # type: ignore[arg-type]
        fusion = fusion_of(completion)
        assert fusion["seats"][1]["served"] == "sub1"
        assert fusion["substitutions"][0]["code"] == "hedged"
        assert time.monotonic() - started < 2.5
        async with asyncio.timeout(1.0):
            while s.wall.active:
                await asyncio.sleep(0.02)
        assert s.wall.cancelled >= 1  # the slow primary's upstream call was cancelled


FAILURES = [Answer("fine"), Status(500), Status(503), Status(429), Status(400), Hang(5)]


def test_fu9_any_failure_schedule_stays_within_the_call_caps() -> None:
    """FU9: whatever fails, a fusion request makes at most 8 upstream calls and at most 3 per seat,
    and ends with a success or a well-formed error."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.fusion_setup import MODELS

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        st.dictionaries(
            st.sampled_from(sorted(MODELS)),
            st.lists(st.sampled_from(FAILURES), min_size=1, max_size=3),
        )
    )
    def check(schedule: dict[str, list[Any]]) -> None:
        async def run() -> None:
            async with fusion_sidecar(first_byte_s=0.2) as s, aiohttp.ClientSession() as http:
                for model, behaviours in schedule.items():
                    s.wall.script(f"up-{model}", behaviours)
                body = {"model": "fusion/trio", "messages": QUESTION}
                async with http.post(f"{s.base_url}/chat/completions", json=body) as response:
                    payload = await response.json()
                    if response.status == 200:
                        assert payload["choices"][0]["message"]["content"] is not None
                        assert payload["fusion"]["upstream_calls"] == len(s.wall.calls)
                    else:
                        assert payload["error"]["code"] in (
                            "panel_exhausted",
                            "upstream_rejected",
                            "rate_limited",
                        )
                assert len(s.wall.calls) <= MAX_UPSTREAM_CALLS
                per_model: dict[str, int] = {}
                for call in s.wall.calls:
                    if role_of(call) == "panelist":
                        per_model[call.model] = per_model.get(call.model, 0) + 1
                assert all(n <= 3 for n in per_model.values())

        asyncio.run(run())

    check()
