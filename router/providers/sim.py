"""The built-in simulated provider: deterministic answers and a scriptable fault profile.

It stands in for real providers in the embedded default and the demo. Answers
depend only on (model, prompt, seed), so runs repeat. The fault profile covers
latency, an error rate, down, hang, 429 with Retry-After, a malformed body and
a cut stream; each fault surfaces as the same `ProviderError` a real adapter
would raise.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator

from router.config import SimProfile
from router.errors import (
    ProviderMalformed,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    StreamTruncated,
)
from router.providers.base import clock, estimate_tokens
from router.types import (
    ChatRequest,
    Completion,
    ProviderCall,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
)

_OPENERS = (
    "In short:",
    "The key point is this:",
    "Here is a careful answer.",
    "Briefly:",
    "Let me take this step by step.",
)
_BODIES = (
    "the evidence points one way once the assumptions are stated plainly",
    "the answer depends on two factors, and the second one usually dominates",
    "the common explanation is right, with one caveat worth knowing",
    "there is a simple rule that covers most cases, and a short list of exceptions",
    "the trade-off is between speed and certainty, and the data favour certainty here",
    "three sources agree on the main claim and disagree on the date",
)
_CLOSERS = (
    "That is the practical conclusion.",
    "Check the primary source before relying on the figure.",
    "Confidence: moderate.",
    "Confidence: high.",
)


def _digest(*parts: str) -> int:
    h = hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def _judge_json(request: ChatRequest, seed: int) -> str:
    """A findings object for a judge prompt that lists answers as `[A1]`, `[A2]`…"""
    prompt = request.messages[-1].content if request.messages else ""
    labels = sorted(
        {
            tok.rstrip(":")
            for tok in prompt.split()
            if tok.startswith("[A") and tok.rstrip(":").endswith("]")
        }
    )
    rng = random.Random(seed)
    ranking = labels[:]
    rng.shuffle(ranking)
    findings = {
        "agreements": ["The answers agree on the main conclusion."] if len(labels) > 1 else [],
        "contradictions": (
            [f"{labels[0]} and {labels[-1]} disagree on the supporting detail."]
            if len(labels) > 1
            else []
        ),
        "errors": {label: [] for label in labels},
        "ranking": ranking,
    }
    return json.dumps(findings)


def answer_text(request: ChatRequest, model: str, seed: int) -> str:
    """The deterministic answer a simulated `model` gives to `request`."""
    question = request.messages[-1].content if request.messages else ""
    n = _digest(model, question, str(seed))
    if question.startswith("Question:\n"):  # a judge or synthesizer prompt: answer its question
        question = question.split("\n", 2)[1]
    if request.json_output:
        return _judge_json(request, n)
    topic = " ".join(question.split()[:12])
    return (
        f"{_OPENERS[n % len(_OPENERS)]} on \u201c{topic}\u201d, "
        f"{_BODIES[(n >> 8) % len(_BODIES)]}. {_CLOSERS[(n >> 16) % len(_CLOSERS)]}"
    )


class SimProvider:
    """A provider living inside the process, driven by a `SimProfile`."""

    protocol = "sim"

    def __init__(self, name: str, profile: SimProfile) -> None:
        self.name = name
        self.profile = profile
        self._rng = random.Random(profile.seed)

    def __repr__(self) -> str:
        return f"SimProvider(name={self.name!r})"

    async def _wait(self, call: ProviderCall, seconds: float, phase: str) -> None:
        """Sleep `seconds`, bounded like a real adapter's wait: by the attempt's clocks."""
        budget, clock_name = clock(call, seconds, phase)
        await asyncio.sleep(budget)
        if budget < seconds:
            raise ProviderTimeout(
                f"{self.name}: no answer within the {clock_name} timeout (simulated)",
                provider=self.name,
                phase=clock_name,
            )

    async def _before_first_byte(self, call: ProviderCall) -> None:
        p = self.profile
        if p.down:
            raise ProviderUnavailable(
                f"{self.name}: connection refused (simulated down)", provider=self.name
            )
        if p.hang:
            await self._wait(call, call.timeouts.first_byte, "first_byte")
            raise ProviderUnavailable(f"{self.name}: simulated hang", provider=self.name)
        if p.rate_limited_retry_after_s is not None:
            raise ProviderRateLimited(
                f"{self.name}: rate limited (simulated)",
                provider=self.name,
                retry_after=p.rate_limited_retry_after_s,
            )
        if p.latency_ms:
            await self._wait(call, p.latency_ms / 1000, "first_byte")
        if p.error_rate and self._rng.random() < p.error_rate:
            raise ProviderUnavailable(
                f"{self.name}: upstream error 503 (simulated)",
                provider=self.name,
                upstream_status=503,
            )

    def _usage(self, request: ChatRequest, text: str) -> Usage:
        return Usage(
            sum(estimate_tokens(m.content) for m in request.messages), estimate_tokens(text)
        )

    def _text(self, call: ProviderCall) -> str:
        text = answer_text(call.request, call.upstream_model, self.profile.seed)
        if call.request.max_tokens is not None:
            text = text[: call.request.max_tokens * 4]
        return text

    async def complete(self, call: ProviderCall, /) -> Completion:
        await self._before_first_byte(call)
        if self.profile.malformed:
            raise ProviderMalformed(
                f"{self.name}: response body is not valid JSON (simulated)", provider=self.name
            )
        text = self._text(call)
        return Completion(
            text=text,
            finish_reason="stop",
            usage=self._usage(call.request, text),
            response_model=call.upstream_model,
            response_id=f"sim-{_digest(self.name, text):016x}",
        )

    async def stream(self, call: ProviderCall, /) -> AsyncIterator[StreamEvent]:
        await self._before_first_byte(call)
        text = self._text(call)
        words = text.split(" ")
        for i, word in enumerate(words):
            if self.profile.cut_stream_after is not None and i >= self.profile.cut_stream_after:
                raise StreamTruncated(f"{self.name}: stream cut (simulated)", provider=self.name)
            if i and self.profile.chunk_ms:
                await self._wait(call, self.profile.chunk_ms / 1000, "idle")
            yield TextDelta(word if i == 0 else " " + word)
        if self.profile.malformed:
            raise ProviderMalformed(
                f"{self.name}: malformed stream event (simulated)", provider=self.name
            )
        yield StreamEnd(
            finish_reason="stop",
            usage=self._usage(call.request, text),
            response_model=call.upstream_model,
            response_id=f"sim-{_digest(self.name, text):016x}",
        )
