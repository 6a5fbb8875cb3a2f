"""Grade an answer (pure): normalized exact match, a multiple-choice letter, a grader's verdict.

Nothing here does I/O: the runner asks the grader model with `grader_request` and hands its
reply to `parse_verdict`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_PUNCTUATION = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")
_ARTICLES = re.compile(r"^(?:the|a|an)\s+")
_ANSWER_MARK = re.compile(r"\b(?:final\s+)?answer\b\s*(?:is\b)?\s*[:=\-]?\s*", re.IGNORECASE)
_CHOICE_JOINERS = frozenset({"or", "and", "nor", "vs", "versus"})  # "A or C": letters, not prose
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


@dataclass(frozen=True, slots=True)
class Grade:
    """A score in [0, 1] and why."""

    score: float
    reason: str


class VerdictError(ValueError):
    """The grader's reply is not a verdict (not JSON, no score in [0, 1], no reason)."""


def normalize(text: str) -> str:
    """Case, accents' compatibility forms, punctuation and whitespace folded; a leading
    article dropped: "The  Pacific Ocean." and "pacific ocean" normalize alike."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = _SPACE.sub(" ", _PUNCTUATION.sub(" ", folded)).strip()
    return _ARTICLES.sub("", folded)


def candidates(answer: str) -> list[str]:
    """The parts of a (possibly verbose) answer that are compared: the whole text, the text
    after its last "answer:" mark, its last non-empty line, its first line."""
    stripped = answer.strip()
    found = [stripped]
    marks = list(_ANSWER_MARK.finditer(stripped))
    if marks:
        found.append(stripped[marks[-1].end() :])
    lines = [line for line in stripped.splitlines() if line.strip()]
    if lines:
        found += [lines[-1], lines[0]]
    return found


def grade_exact(answer: str, accepted: Iterable[str]) -> Grade:
    """1 if a candidate part of `answer` normalizes to one of the `accepted` answers."""
    wanted = {normalize(a) for a in accepted}
    for part in candidates(answer):
        if normalize(part) in wanted:
            return Grade(1.0, f"matches {part.strip()[:80]!r}")
    return Grade(0.0, f"no match for {' | '.join(sorted(wanted))!r}")


def extract_choice(answer: str, letters: str) -> str | None:
    """The choice letter `answer` gives, or None: an "answer: X" mark first, then a text that
    is only a letter ("B", "(B)", "B."), then a letter opening the text ("B. Because..."),
    then the only standalone letter of `letters` in it ("A" or "I" followed by a lowercase
    word, as in "A helicase..." or "I am...", is prose, not a choice; "A or C" is not)."""
    allowed = "".join(sorted(set(letters.upper())))
    letter = rf"\(?([{allowed}])\)?"
    for mark in reversed(list(_ANSWER_MARK.finditer(answer))):
        match = re.match(letter + r"(?![\w])", answer[mark.end() :].lstrip("*_ "))
        if match:
            return match.group(1)
    stripped = answer.strip().strip("*_").strip()
    whole = re.fullmatch(letter + r"[.):]?", stripped)
    if whole:
        return whole.group(1)
    opening = re.match(letter + r"[.):](?:\s|$)", stripped)
    if opening:
        return opening.group(1)
    alone = {
        m.group(1)
        for m in re.finditer(rf"(?<![\w'])([{allowed}])(?![\w'])(?:\s+([a-z]+))?", answer)
        if not (m.group(1) in "AI" and m.group(2) and m.group(2) not in _CHOICE_JOINERS)
    }
    return alone.pop() if len(alone) == 1 else None


def grade_choice(answer: str, correct: str, letters: str) -> Grade:
    """1 if the letter `answer` gives is `correct`."""
    given = extract_choice(answer, letters)
    if given is None:
        return Grade(0.0, "no choice letter found")
    if given == correct.upper():
        return Grade(1.0, f"chose {given}")
    return Grade(0.0, f"chose {given}, correct is {correct.upper()}")


GRADER_SYSTEM = (
    "You grade an answer to a question against a rubric. Judge only what the answer says, "
    "against the rubric; ignore its style and length unless the rubric asks about them. "
    "Reply with a JSON object: score, a number from 0 (fails the rubric) to 1 (fully meets "
    "it), and reason, one or two sentences."
)

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"},
    },
    "required": ["score", "reason"],
    "additionalProperties": False,
}


def _question(messages: Iterable[dict[str, Any]]) -> str:
    parts = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, str):
            content = " ".join(
                p.get("text", "") for p in content or [] if isinstance(p, dict)
            ).strip()
        parts.append(f"{message.get('role', 'user')}: {content}")
    return "\n".join(parts)


def grader_request(
    grader: dict[str, Any], messages: Iterable[dict[str, Any]], rubric: str, answer: str
) -> dict[str, Any]:
    """The chat request asking the grader (`grader`: its model fields) for a verdict. It names
    no target: the grader sees the question, the rubric and the answer only."""
    prompt = (
        f"<question>\n{_question(messages)}\n</question>\n\n<rubric>\n{rubric}\n</rubric>\n\n"
        f"<answer>\n{answer}\n</answer>\n\nGrade the answer against the rubric."
    )
    return {
        **grader,
        "messages": [
            {"role": "system", "content": GRADER_SYSTEM},
            {"role": "user", "content": prompt},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "verdict", "strict": True, "schema": VERDICT_SCHEMA},
        },
    }


def parse_verdict(content: str) -> Grade:
    """The grader's reply as a `Grade`; raises `VerdictError` if it is not a verdict."""
    text = _FENCE.sub("", content.strip())
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VerdictError(f"the grader's reply is not JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise VerdictError("the grader's reply is not a JSON object")
    score, reason = data.get("score"), data.get("reason")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise VerdictError(f"the grader's score is not a number in [0, 1]: {score!r}")
    if not isinstance(reason, str):
        raise VerdictError("the grader's verdict has no reason")
    return Grade(float(score), reason.strip())
