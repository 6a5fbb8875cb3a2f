"""The one request path: a streamed and a whole fusion answer come out of the same composition
(same prompt, same audit headers, same fallback), and the deadline header is read strictly."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.fakes.script import Status
from tests.fusion_setup import fusion_sidecar, role_of
from tests.helpers import sidecar

QUESTION = [{"role": "user", "content": "Which year did the bridge open?"}]
PROMPT = "CUSTOM SYNTHESIS PROMPT: $question / $answers / $findings"


async def _post(url: str, body: dict[str, Any]) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as response:
        return response.status, CIMultiDict(response.headers), await response.read()


def _events(raw: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(part[6:]) for part in raw.decode().split("\n\n") if part.startswith("data: {")
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_whole_and_streamed_fusion_use_the_panels_synthesizer_prompt(stream: bool) -> None:
    """The panel's `synthesizer_prompt` reaches the synthesizer, streamed or not."""
    async with fusion_sidecar(panel_extra=f'    synthesizer_prompt: "{PROMPT}"') as s:
        status, _, raw = await _post(
            f"{s.url}/v1/chat/completions",
            {"model": "fusion/trio", "messages": QUESTION, "stream": stream},
        )
        assert status == 200, raw
        synth = [c for c in s.wall.calls if role_of(c) == "synthesizer"]
        assert len(synth) == 1
        assert synth[0].body["messages"][-1]["content"].startswith("CUSTOM SYNTHESIS PROMPT: ")
        assert "Which year did the bridge open?" in synth[0].body["messages"][-1]["content"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_fusion_answers_carry_the_policy_audit_headers(stream: bool) -> None:
    """Jurisdiction, policy version and hash on a fusion answer, whole and streamed alike."""
    async with fusion_sidecar() as s:
        status, headers, raw = await _post(
            f"{s.url}/v1/chat/completions",
            {"model": "fusion/trio", "messages": QUESTION, "stream": stream},
        )
        assert status == 200, raw
        assert headers["X-Router-Jurisdiction"] == "us"
        assert headers["X-Router-Policy-Version"]
        assert len(headers["X-Router-Policy-Hash"]) == 16
        assert headers["X-Fusion-Seats"] == "m1,m2,m3"
        if stream:
            last = _events(raw)[-1]
            assert last["fusion"]["synthesizer"]["status"] == "ok"
            assert last["fusion"]["synthesizer"]["model"] == "synth-m"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_every_synthesizer_failing_falls_back_to_the_best_answer(stream: bool) -> None:
    """One fallback for both shapes: the judge's top answer, flagged `synthesizer` degraded."""
    async with fusion_sidecar() as s:
        s.wall.script("up-synth-m", Status(500))
        s.wall.script("up-synth-b", Status(500))
        status, headers, raw = await _post(
            f"{s.url}/v1/chat/completions",
            {"model": "fusion/trio", "messages": QUESTION, "stream": stream},
        )
        assert status == 200, raw
        assert headers["X-Fusion-Degraded"] == "synthesizer"
        if stream:
            events = _events(raw)
            text = "".join(
                e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]
            )
            fusion = events[-1]["fusion"]
        else:
            body = json.loads(raw)
            text = body["choices"][0]["message"]["content"]
            fusion = body["fusion"]
        assert text == f"answer from {fusion['judge']['findings']['ranking'][0]}"  # the top
        assert fusion["synthesizer"]["status"] == "failed"
        assert fusion["degraded"] == ["synthesizer"]


@pytest.mark.parametrize("value", ["²", "٣", "1e3", "-5", "0", "3600001", "1 00", ""])
async def test_the_deadline_header_takes_ascii_digits_only(value: str) -> None:
    """A Unicode digit passes `str.isdigit()`; the header still gets a 400, never a 500."""
    async with sidecar() as s, aiohttp.ClientSession() as http:
        async with http.post(
            f"{s.url}/v1/chat/completions",
            json={"model": "m-a", "messages": QUESTION},
            headers={"X-Router-Deadline-Ms": value},
        ) as response:
            body = await response.json()
        assert response.status == 400, body
        assert body["error"]["param"] == "X-Router-Deadline-Ms"
        assert s.wall.calls == []


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("first_fails", [False, True], ids=["first-try", "after-failover"])
async def test_headers_built_ahead_equal_the_plain_ones(stream: bool, first_fails: bool) -> None:
    """The first target's headers are built while it answers (a hot-path trick); whichever
    target serves, they equal `served_headers` computed afterwards, the plain way."""
    from router.handlers import served_headers
    from router.policy_view import PolicyView
    from router.state import SERVICES

    async with sidecar() as s:
        if first_fails:
            s.wall.script("up-model-a", Status(503))
        status, headers, raw = await _post(
            f"{s.url}/v1/chat/completions",
            {"model": "both", "messages": QUESTION, "stream": stream},
        )
        assert status == 200, raw
        services = s.app[SERVICES]
        view = PolicyView.for_request(services.policy, "us", None, services.catalog.models)
        chain = view.allowed_chain("both", [services.catalog.models[m] for m in ("m-a", "m-b")])
        served = chain[1] if first_fails else chain[0]
        attempted = ["up-a", "up-b"] if first_fails else ["up-a"]
        plain = served_headers(served, attempted, headers["X-Request-Id"], view)
        assert {k: headers[k] for k in plain} == plain
