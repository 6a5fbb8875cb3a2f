"""Hardening on the request path (issue 15): a client hanging up is 499, never a 5xx; a
failed request's log line lists what was tried; whatever an adapter meets becomes a provider
fault, in-band once a stream started; operators see every target and counter from startup."""

from __future__ import annotations

import asyncio

import openai
import pytest
from structlog.testing import capture_logs

from tests.fakes.script import Answer, Hang, OddShape, Status
from tests.fusion_setup import fusion_sidecar
from tests.test_fault_matrix import Q, bed, metric_value


async def _completed(logs: list[dict[str, object]]) -> dict[str, object]:
    for _ in range(50):  # the line follows the response on the loop's next turns
        lines = [e for e in logs if e["event"] == "request.completed"]
        if lines:
            return lines[-1]
        await asyncio.sleep(0.01)
    raise AssertionError("no request.completed line")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_client_hanging_up_is_499_client_cancelled_never_a_5xx(stream: bool) -> None:
    """Routed whole answers and streams alike: status 499, its own outcome, no objects."""
    async with bed() as s:
        behaviour = Answer(" ".join(["w"] * 200), chunk_delay=0.05) if stream else Hang(5)
        s.wall.script("up-a", behaviour)
        with capture_logs() as logs:
            response = (
                await s.http.post(
                    f"{s.url}/v1/chat/completions",
                    json={"model": "abc", "messages": Q, "stream": stream},
                )
                if stream
                else None
            )
            if response is not None:
                await response.content.readline()
                response.close()
            else:
                task = asyncio.ensure_future(s.post("abc"))
                await asyncio.sleep(0.2)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            await s.settled(2.0)
            line = await _completed(logs)
        assert line["status"] == 499
        assert line["client_cancelled"] is True
        assert line["error_code"] == "client_cancelled"
        assert all(isinstance(v, str | int | float | bool | list | dict) for v in line.values())
        text = await s.metrics()
        assert metric_value(text, "router_requests_total", outcome="client_cancelled") == 1
        assert "http_500" not in text


async def test_a_cancelled_fusion_request_is_499_without_the_metrics_object() -> None:
    async with fusion_sidecar() as s:
        s.wall.script("up-m1", Hang(5))
        s.wall.script("up-m2", Hang(5))
        s.wall.script("up-m3", Hang(5))
        client = s.openai()
        with capture_logs() as logs:
            task = asyncio.ensure_future(
                client.chat.completions.create(model="fusion/trio", messages=Q)  # type: ignore[arg-type]
            )
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            line = await _completed(logs)
        assert line["status"] == 499
        assert "metrics" not in line
        assert len(repr(line)) < 2000


async def test_a_failed_requests_log_line_lists_its_attempts() -> None:
    """A 502 after every target failed: the line has `attempts` and `attempted`, as the
    headers and the error body do."""
    async with bed() as s:
        for m in ("a", "b", "c"):
            s.wall.script(f"up-{m}", Status(503))
        with capture_logs() as logs:
            r = await s.post("abc")
            line = await _completed(logs)
        assert r.status == 502
        assert line["attempts"] == r.attempts == len(s.wall.calls)
        assert line["attempted"] == r.attempted
        assert line["error_code"] == "all_providers_failed"


@pytest.mark.parametrize(
    "shape",
    [
        OddShape(body='{"choices": ["x"]}'),
        OddShape(body='{"choices": [{"message": 7}]}'),
        OddShape(body="[1, 2, 3]"),
        OddShape(body='{"choices": []}'),
    ],
    ids=["choice-is-a-string", "message-is-a-number", "array", "no-choices"],
)
async def test_a_whole_answer_of_the_wrong_shape_is_a_provider_fault_not_a_500(
    shape: OddShape,
) -> None:
    async with bed() as s:
        s.wall.script("up-a", shape)
        s.wall.script("up-b", Answer("from b"))
        r = await s.post("ab")
        assert r.status == 200, r.raw  # failed over: the odd answer was the provider's fault
        assert r.text == "from b"
        assert r.attempt_codes[0] == "provider_malformed"


@pytest.mark.parametrize(
    "events",
    [('{"choices": ["x"]}',), ('{"choices": [{"delta": 5}]}',), ("[]", "7")],
    ids=["choice-is-a-string", "delta-is-a-number", "not-objects"],
)
async def test_an_odd_chunk_mid_stream_ends_it_with_an_in_band_error(
    events: tuple[str, ...],
) -> None:
    """After the first byte: an in-band error event, never a 500 or a cut connection."""
    async with bed() as s:
        s.wall.script("up-a", OddShape(events=events))
        r = await s.post("a", stream=True)
        assert r.status == 200
        assert r.text.startswith("first")
        assert r.error is not None, r.raw
        assert r.error["code"] == "provider_malformed"
        assert not r.done


async def test_breakers_and_counters_are_visible_before_any_call() -> None:
    async with bed() as s:
        board = await s.breakers()
        assert {"pa/a", "pb/b", "pc/c"} <= set(board)
        assert {board[k]["state"] for k in board} == {"closed"}
        text = await s.metrics()
        for name, labels in (
            ("router_upstream_attempts_total", {"provider": "pa", "outcome": "provider_fault"}),
            ("router_breaker_transitions_total", {"provider": "pb", "to": "open"}),
            ("router_provider_quota_exhausted_total", {"provider": "pc"}),
            ("router_stream_truncated_total", {"provider": "pa"}),
            ("router_tokens_total", {"provider": "pa", "type": "output"}),
        ):
            sample = [
                line
                for line in text.splitlines()
                if line.startswith(name + "{")
                and all(f'{k}="{v}"' in line for k, v in labels.items())
            ]
            assert sample, f"{name} {labels} is not exported at zero"
            assert float(sample[0].rsplit(" ", 1)[1]) == 0.0
        assert s.wall.calls == []


async def test_the_openai_sdk_sees_an_odd_chunk_as_an_api_error() -> None:
    """The official client raises `APIError` for the in-band error instead of hanging."""
    async with bed() as s:
        s.wall.script("up-a", OddShape())
        client = openai.AsyncOpenAI(base_url=f"{s.url}/v1", api_key="x", max_retries=0)
        stream = await client.chat.completions.create(model="a", messages=Q, stream=True)  # type: ignore[arg-type]
        with pytest.raises(openai.APIError):
            async for _chunk in stream:
                pass
        await client.close()


async def test_a_body_that_is_not_the_gzip_it_says_is_a_400() -> None:
    import aiohttp

    async with bed() as s, aiohttp.ClientSession() as http:
        async with http.post(
            f"{s.url}/v1/chat/completions",
            data=b"\x1f\x8bnot gzip at all" * 10,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        ) as response:
            body = await response.json()
        assert response.status == 400, body
        assert body["error"]["code"] == "invalid_request"
        assert s.wall.calls == []


async def test_a_deadline_header_of_thousands_of_digits_is_a_400() -> None:
    import aiohttp

    async with bed() as s, aiohttp.ClientSession() as http:
        async with http.post(
            f"{s.url}/v1/chat/completions",
            json={"model": "a", "messages": Q},
            headers={"X-Router-Deadline-Ms": "9" * 5000},
        ) as response:
            body = await response.json()
        assert response.status == 400, body
        assert body["error"]["param"] == "X-Router-Deadline-Ms"
