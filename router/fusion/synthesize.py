"""Write the final answer from the question, the panel's answers and the judge's findings.

The stage (`synthesize`) never raises a routing error: it returns the synthesizer's answer
(whole, or its stream once open), or, when every candidate failed or none is available, the
best single answer flagged as a fallback. That is the one fallback to the best answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from string import Template
from typing import Any

from router import semconv
from router.errors import AllProvidersFailed, AttemptRecord, NoEligibleModel, RouterError
from router.fusion.caller import failure_code
from router.fusion.judge import Findings, question_text
from router.fusion.panel import FusionDeps, SeatResult
from router.fusion.plan import FusionPlan
from router.fusion.prompts import (
    SYNTHESIZER_CONVERSATION,
    SYNTHESIZER_SYSTEM,
    SYNTHESIZER_TEMPLATE,
    SYNTHESIZER_TOOLS,
    answers_block,
)
from router.fusion.views import deliberation_view, in_conversation
from router.routing import OpenedStream
from router.tracing import child_span
from router.types import ChatRequest, Completion, Message, StreamEnd, Usage

SYNTHESIZER = "synthesizer"  # the synthesizer's role, and the name its reserved call is held under


def synthesis_request(
    request: ChatRequest,
    answers: Sequence[SeatResult],
    findings: Findings | None,
    template: str | None = None,
) -> ChatRequest:
    """The synthesizer's chat request: the client's, every parameter kept (tools, schema,
    reasoning effort...), with the panel's answers and the judge's findings in its prompt.

    A text conversation is asked as one question (the client's system prompt kept). One with
    tools, tool turns or images goes as it came, after a system message with the panel's
    material, so the synthesizer can answer its last turn with tool calls and see its images.
    """
    findings_text = (
        json.dumps(findings.as_dict(), ensure_ascii=False)
        if findings
        else "(no findings: the judge was unavailable)"
    )
    briefing = (Template(template) if template else SYNTHESIZER_TEMPLATE).safe_substitute(
        question=question_text(deliberation_view(request)),
        answers=answers_block([(f"[{a.served}]", a.briefing) for a in answers]),
        findings=findings_text,
    )
    if not in_conversation(request):
        system = SYNTHESIZER_SYSTEM + ("\n\n" + request.system_text if request.system_text else "")
        messages: tuple[Message, ...] = (Message("system", system), Message("user", briefing))
    else:
        tools = ("\n\n" + SYNTHESIZER_TOOLS) if request.tools else ""
        system = f"{SYNTHESIZER_SYSTEM}\n\n{SYNTHESIZER_CONVERSATION}{tools}\n\n{briefing}"
        messages = (Message("system", system), *request.messages)
    return replace(request, model="synthesizer", messages=messages)


@dataclass(frozen=True, slots=True)
class SynthesisResult:
    """How the synthesis stage ended."""

    status: str  # ok | failed | skipped | streaming
    model: str | None
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    latency_ms: float = 0.0
    attempts: tuple[AttemptRecord, ...] = field(default_factory=tuple)
    error: str | None = None
    fallback_from: str | None = None  # failed: the panelist whose answer (text) stands in

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "model": self.model,
            "fallback_from": self.fallback_from,
            "latency_ms": round(self.latency_ms, 1),
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
            },
            "cost_usd": round(self.cost, 8),
            "error": self.error,
        }


def best_answer(answers: Sequence[SeatResult], findings: Findings | None) -> SeatResult:
    """The judge's top-ranked answer, else the first seat that answered."""
    if findings is not None:
        for model in findings.ranking:
            for answer in answers:
                if answer.served == model:
                    return answer
    return answers[0]


@dataclass(frozen=True, slots=True)
class Synthesis:
    """The synthesis stage's value: the synthesizer's whole answer (text, tool calls,
    reasoning), a text that stands in for it (a single or fallback answer), or its stream once
    open (its result is settled when the stream ends)."""

    result: SynthesisResult
    text: str | None = None
    stream: OpenedStream | None = None
    completion: Completion | None = None

    @classmethod
    def single(cls, answer: SeatResult) -> Synthesis:
        """No synthesis: one answer (one seat answered, or a degraded quorum) is the answer."""
        return cls(SynthesisResult("skipped", None, error="single answer"), answer.text or "")

    @property
    def fallback(self) -> bool:
        return self.result.status == "failed"

    def ended(self, end: StreamEnd | RouterError, relayed_ms: float) -> Synthesis:
        """The streamed synthesis once its stream ended: `end`, after `relayed_ms` of relay."""
        opened, streaming = self.stream, self.result
        if opened is None:
            return self
        latency_ms = streaming.latency_ms + relayed_ms
        if isinstance(end, RouterError):
            failed = SynthesisResult(
                "failed",
                opened.model.id,
                latency_ms=latency_ms,
                attempts=streaming.attempts,
                error=end.code,
            )
            return Synthesis(failed)
        ok = SynthesisResult(
            "ok",
            opened.model.id,
            usage=end.usage,
            cost=opened.model.cost(end.usage),
            latency_ms=latency_ms,
            attempts=streaming.attempts,
        )
        return Synthesis(ok)


async def synthesize(
    request: ChatRequest,
    plan: FusionPlan,
    answers: Sequence[SeatResult],
    findings: Findings | None,
    deps: FusionDeps,
    deadline: float,
    template: str | None = None,
) -> Synthesis:
    """The synthesizer's answer (a stream when `request.stream`); if no candidate is available
    or every one fails, the best single answer, flagged as a fallback."""
    started = deps.clock()
    candidates = [c for c in plan.synthesizers.candidates if deps.availability(c) is None]
    prompt = synthesis_request(request, answers, findings, template)
    with child_span(
        deps.tracer,
        semconv.SPAN_FUSION_SYNTHESIZE,
        attributes={semconv.ROUTER_FUSION_ROLE: "synthesizer"},
    ):
        try:
            if not candidates:
                raise NoEligibleModel("no synthesizer candidate is available")
            if request.stream:
                opened = await deps.caller.open_stream(
                    prompt, candidates, deadline, role=SYNTHESIZER
                )
                result = SynthesisResult(
                    "streaming",
                    opened.model.id,
                    latency_ms=(deps.clock() - started) * 1000,
                    attempts=tuple(opened.attempts.records),
                )
                return Synthesis(result, stream=opened)
            routed = await deps.caller.complete(prompt, candidates, deadline, role=SYNTHESIZER)
        except RouterError as exc:
            best = best_answer(answers, findings)
            failed = SynthesisResult(
                "failed",
                None,
                latency_ms=(deps.clock() - started) * 1000,
                attempts=exc.attempts if isinstance(exc, AllProvidersFailed) else (),
                error=failure_code(exc),  # `call_budget_exhausted`: never called
                fallback_from=best.served,
            )
            return Synthesis(failed, best.text or "")
    result = SynthesisResult(
        "ok",
        routed.model.id,
        usage=routed.completion.usage,
        cost=routed.cost,
        latency_ms=(deps.clock() - started) * 1000,
        attempts=tuple(routed.attempts.records),
    )
    return Synthesis(result, routed.completion.text, completion=routed.completion)
