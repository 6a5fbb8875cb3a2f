"""Write the final answer from the question, the panel's answers and the judge's findings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from string import Template
from typing import Any

from router.errors import AttemptRecord
from router.fusion.judge import Findings, question_text
from router.fusion.panel import SeatResult
from router.fusion.prompts import SYNTHESIZER_SYSTEM, SYNTHESIZER_TEMPLATE, answers_block
from router.types import ChatRequest, Message, Usage


def synthesis_request(
    request: ChatRequest,
    answers: Sequence[SeatResult],
    findings: Findings | None,
    template: str | None = None,
) -> ChatRequest:
    """The synthesizer's chat request; the caller's own system prompt and limits are kept."""
    findings_text = (
        json.dumps(findings.as_dict(), ensure_ascii=False)
        if findings
        else "(no findings: the judge was unavailable)"
    )
    prompt = (Template(template) if template else SYNTHESIZER_TEMPLATE).safe_substitute(
        question=question_text(request),
        answers=answers_block([(f"[{a.served}]", a.text or "") for a in answers]),
        findings=findings_text,
    )
    system = SYNTHESIZER_SYSTEM + ("\n\n" + request.system_text if request.system_text else "")
    return ChatRequest(
        model="synthesizer",
        messages=(Message("system", system), Message("user", prompt)),
        stream=request.stream,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop,
        json_output=request.json_output,
    )


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "model": self.model,
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
