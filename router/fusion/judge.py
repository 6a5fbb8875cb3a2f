"""Ask a judge to compare the panel's answers: anonymized, shuffled, structured findings back.

The judge sees labels (`[A1]`, `[A2]`, …) in a random order, never model
names, so it cannot favour a vendor. It is asked for JSON (the protocol's
structured-output switch where there is one) and its reply is parsed
robustly: the first JSON object in the text, with every field checked.
Labels are mapped back to seats here; a judge failure is a value
(`status="failed"`), and synthesis goes on without findings.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from router import semconv
from router.errors import AllProvidersFailed, AttemptRecord, RouterError
from router.fusion.caller import failure_code
from router.fusion.panel import FusionDeps, SeatResult
from router.fusion.prompts import JUDGE_SYSTEM, JUDGE_TEMPLATE, answers_block
from router.tracing import child_span
from router.types import ChatRequest, Message, Usage

MAX_JUDGE_TOKENS = 2000
JUDGE = "judge"  # the judge's role, and the name its reserved call is held under


@dataclass(frozen=True, slots=True)
class Findings:
    """The judge's comparison, with labels already mapped back to models."""

    agreements: tuple[str, ...]
    contradictions: tuple[str, ...]
    errors: dict[str, tuple[str, ...]]
    ranking: tuple[str, ...]  # served model ids, best first

    def as_dict(self) -> dict[str, Any]:
        return {
            "agreements": list(self.agreements),
            "contradictions": list(self.contradictions),
            "errors": {k: list(v) for k, v in self.errors.items()},
            "ranking": list(self.ranking),
        }


@dataclass(frozen=True, slots=True)
class JudgeResult:
    """How the judge stage ended."""

    status: str  # ok | failed | unparsable | skipped
    model: str | None
    findings: Findings | None
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    latency_ms: float = 0.0
    attempts: tuple[AttemptRecord, ...] = field(default_factory=tuple)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "model": self.model,
            "findings": self.findings.as_dict() if self.findings else None,
            "latency_ms": round(self.latency_ms, 1),
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
            },
            "cost_usd": round(self.cost, 8),
            "error": self.error,
        }


def question_text(request: ChatRequest) -> str:
    """The user's question as the judge and synthesizer see it: the dialogue, system prompt aside."""
    turns = request.dialogue
    if len(turns) == 1:
        return _text(turns[0])
    return "\n".join(f"{m.role}: {_text(m)}" for m in turns)


def _text(message: Message) -> str:
    """A message's text, with a mark for each image (the judge compares texts)."""
    images = len(message.images)
    if not images:
        return message.content
    return f"{message.content} [{images} image{'s' if images > 1 else ''} attached, not shown]"


def label_answers(
    answers: Sequence[SeatResult], rng: random.Random
) -> list[tuple[str, SeatResult]]:
    """Shuffle the answers and give them neutral labels."""
    shuffled = list(answers)
    rng.shuffle(shuffled)
    return [(f"[A{i + 1}]", answer) for i, answer in enumerate(shuffled)]


def judge_request(
    question: str, labelled: list[tuple[str, SeatResult]], template: str | None
) -> ChatRequest:
    """The judge's chat request: anonymized answers, JSON asked for."""
    from string import Template

    prompt = (Template(template) if template else JUDGE_TEMPLATE).safe_substitute(
        question=question, answers=answers_block([(label, a.briefing) for label, a in labelled])
    )
    return ChatRequest(
        model="judge",
        messages=(Message("system", JUDGE_SYSTEM), Message("user", prompt)),
        max_tokens=MAX_JUDGE_TOKENS,
        temperature=0.0,
        json_output=True,
    )


def _first_json_object(text: str) -> Any:
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char == "{":
            try:
                value, _end = decoder.raw_decode(text, start)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _strings(value: Any, limit: int = 20) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(str(v)[:500] for v in value[:limit] if isinstance(v, str | int | float))


def parse_findings(text: str, labelled: list[tuple[str, SeatResult]]) -> Findings | None:
    """Findings from the judge's reply, labels replaced by model ids; None if unusable."""
    data = _first_json_object(text)
    if not isinstance(data, dict):
        return None
    names = {label: (a.served or "?") for label, a in labelled}
    bare = {label.strip("[]"): name for label, name in names.items()}

    def deanonymize(s: str) -> str:
        for label, name in names.items():
            s = s.replace(label, name)
        return s

    def resolve(label: Any) -> str | None:
        key = str(label).strip()
        return names.get(key) or bare.get(key.strip("[]"))

    errors: dict[str, tuple[str, ...]] = {}
    raw_errors = data.get("errors")
    if isinstance(raw_errors, dict):
        for label, items in raw_errors.items():
            name = resolve(label)
            if name is not None:
                errors[name] = tuple(deanonymize(s) for s in _strings(items))
    ranking = tuple(
        n for n in (resolve(x) for x in data.get("ranking") or [] if isinstance(x, str)) if n
    )
    if not ranking and not data.get("agreements") and not data.get("contradictions"):
        return None
    return Findings(
        agreements=tuple(deanonymize(s) for s in _strings(data.get("agreements"))),
        contradictions=tuple(deanonymize(s) for s in _strings(data.get("contradictions"))),
        errors=errors,
        ranking=tuple(dict.fromkeys(ranking)),
    )


async def run_judge(
    request: ChatRequest,
    answers: Sequence[SeatResult],
    candidates: Sequence[str],
    deps: FusionDeps,
    deadline: float,
    rng: random.Random,
    template: str | None = None,
) -> JudgeResult:
    """Judge candidates fail over in order; any failure is a value, never an exception."""
    if len(answers) < 2:
        return JudgeResult("skipped", None, None, error="fewer than two answers")
    usable = [c for c in candidates if deps.availability(c) is None]
    if not usable:
        return JudgeResult("failed", None, None, error="no judge candidate is available")
    started = deps.clock()
    labelled = label_answers(answers, rng)
    with child_span(
        deps.tracer, semconv.SPAN_FUSION_JUDGE, attributes={semconv.ROUTER_FUSION_ROLE: "judge"}
    ) as span:
        result = await _judge(request, labelled, usable, deps, deadline, template, started)
        span.set_attribute(semconv.ROUTER_FUSION_STATUS, result.status)
        return result


async def _judge(
    request: ChatRequest,
    labelled: list[tuple[str, SeatResult]],
    usable: list[str],
    deps: FusionDeps,
    deadline: float,
    template: str | None,
    started: float,
) -> JudgeResult:
    try:
        routed = await deps.caller.complete(
            judge_request(question_text(request), labelled, template),
            usable,
            deadline,
            role=JUDGE,
        )
    except RouterError as exc:
        code = failure_code(exc)  # `call_budget_exhausted`: the judge was never called
        if deps.log is not None:
            deps.log.warning("fusion.judge_failed", code=code)
        return JudgeResult(
            "failed",
            None,
            None,
            latency_ms=(deps.clock() - started) * 1000,
            attempts=exc.attempts if isinstance(exc, AllProvidersFailed) else (),
            error=code,
        )
    findings = parse_findings(routed.completion.text, labelled)
    return JudgeResult(
        "ok" if findings else "unparsable",
        routed.model.id,
        findings,
        usage=routed.completion.usage,
        cost=routed.cost,
        latency_ms=(deps.clock() - started) * 1000,
        attempts=tuple(routed.attempts.records),
    )
