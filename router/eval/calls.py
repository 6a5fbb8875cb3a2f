"""One chat call to the sidecar over HTTP, and what the eval keeps of its reply."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from router.eval.results import CallError

CHAT_PATH = "/chat/completions"


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer: its text, tokens, cost (the `router` or `fusion` object's), the
    models that took part, the provider that served a routed answer, the fusion summary."""

    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    models: tuple[str, ...]
    provider: str | None
    fusion: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """A call's reply or its error, and how long it took as the client saw it."""

    reply: Reply | None
    error: CallError | None
    latency_ms: float


def fusion_summary(fusion: Mapping[str, Any]) -> dict[str, Any]:
    """What results.jsonl keeps of a `fusion` object: panel, seats (model, status),
    substitutions, degraded stages, judge and synthesizer, calls and cost."""
    judge, synthesizer = fusion.get("judge") or {}, fusion.get("synthesizer") or {}
    return {
        "panel": fusion.get("panel"),
        "seats": [
            {
                "model": s.get("served") or s.get("seated"),
                "status": s.get("status"),
                "planned": s.get("planned"),
            }
            for s in fusion.get("seats") or []
        ],
        "substitutions": len(fusion.get("substitutions") or [])
        + sum(
            1
            for s in (fusion.get("plan") or {}).get("seats") or []
            if s.get("model") != s.get("wanted")
        ),
        "degraded": list(fusion.get("degraded") or []),
        "judge": judge.get("model"),
        "synthesizer": synthesizer.get("model"),
        "upstream_calls": fusion.get("upstream_calls"),
        "cost_usd": fusion.get("cost_usd"),
    }


def read_reply(data: Mapping[str, Any]) -> Reply:
    """The `chat.completion` body `data` as a `Reply`; raises KeyError/TypeError/ValueError
    when it is not one."""
    message = data["choices"][0]["message"]
    text = message.get("content") or ""
    if not isinstance(text, str):
        raise TypeError("the answer's content is not text")
    usage = data.get("usage") or {}
    fusion = data.get("fusion")
    if isinstance(fusion, Mapping):
        summary = fusion_summary(fusion)
        models = [s["model"] for s in summary["seats"]]
        models += [summary["judge"], summary["synthesizer"]]
        return Reply(
            text,
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
            float(fusion.get("cost_usd") or 0.0),
            tuple(dict.fromkeys(m for m in models if isinstance(m, str) and m)),
            None,
            summary,
        )
    router = data.get("router") or {}
    return Reply(
        text,
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        float(router.get("cost_usd") or 0.0),
        (str(data["model"]),),
        router.get("provider"),
        None,
    )


def error_of(status: int, data: object, stage: str) -> CallError:
    """The sidecar's error body (`{"error": {"code", "message"}}`) as a `CallError`."""
    error = data.get("error") if isinstance(data, Mapping) else None
    if isinstance(error, Mapping):
        code = str(error.get("code") or error.get("type") or f"http_{status}")
        return CallError(stage, code, str(error.get("message") or "")[:500], status)
    return CallError(stage, f"http_{status}", "the sidecar's answer has no error object", status)


async def post_chat(
    session: aiohttp.ClientSession,
    base_url: str,
    body: Mapping[str, Any],
    *,
    token: str | None,
    stage: str,
) -> Outcome:
    """POST `body` to the sidecar's `/v1/chat/completions` (whole, not streamed); an HTTP
    error, a connection failure or a body that is not a completion becomes a `CallError`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.perf_counter()
    try:
        async with session.post(
            base_url + CHAT_PATH, json={**body, "stream": False}, headers=headers
        ) as response:
            data = await response.json(content_type=None)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        elapsed = (time.perf_counter() - started) * 1000
        code = "timeout" if isinstance(exc, TimeoutError) else "connection_error"
        return Outcome(None, CallError(stage, code, f"{type(exc).__name__}: {exc}"[:500]), elapsed)
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        return Outcome(None, error_of(status, data, stage), elapsed)
    try:
        return Outcome(read_reply(data), None, elapsed)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        error = CallError(
            stage, "malformed_answer", f"not a chat completion: {exc!r}"[:500], status
        )
        return Outcome(None, error, elapsed)
