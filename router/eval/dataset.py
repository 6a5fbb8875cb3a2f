"""Load and validate an eval dataset: JSONL, one item a line, every problem naming its line."""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

Grading = Literal["exact", "choice", "rubric"]

EXAMPLE = "example"  # `--example`: the dataset shipped in the package
_KEYS = {"id", "prompt", "messages", "answer", "choices", "grading", "rubric", "system"}
_ROLES = {"system", "user", "assistant"}


# the grader of rubric items: the embedded default's strong model with native json_schema
DEFAULT_GRADER = "claude-opus-4.8"


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Item:
    """One question: what the target is asked, and how its answer is graded.

    `answers` are the accepted exact answers (`exact`), or the correct letter (`choice`);
    `rubric` is shown to the grader only, never to a target."""

    id: str
    messages: tuple[dict[str, Any], ...]
    grading: Grading
    answers: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    rubric: str | None = None

    @property
    def letters(self) -> str:
        """The choice letters in use: A, B, C... (as many as `choices`, else A-Z)."""
        return string.ascii_uppercase[: len(self.choices) or 26]


def example_path() -> Path:
    """The shipped example dataset's file (inside the installed package)."""
    return Path(str(resources.files("router").joinpath("eval/data/example.jsonl")))


def load_dataset(path: Path, *, limit: int | None = None) -> list[Item]:
    """The items of the JSONL file at `path` (the first `limit` of them, if given).

    Raises `DatasetError` naming the file and line of the first problem: bad JSON, a missing
    or unknown key, a duplicate id, a choice answer that is not one of the choices."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the dataset: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    return parse_dataset(text.splitlines(), str(path), limit=limit)


def parse_dataset(lines: Sequence[str], source: str, *, limit: int | None = None) -> list[Item]:
    """The items in `lines` (JSONL text); `source` names the file in errors."""
    items: list[Item] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        where = f"{source}:{number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from exc
        item = parse_item(raw, where)
        if item.id in seen:
            raise DatasetError(f"{where}: duplicate id {item.id!r} (first on line {seen[item.id]})")
        seen[item.id] = number
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise DatasetError(f"{source}: no items")
    return items


def _text(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw[key]
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: {key!r} must be a non-empty string")
    return value


def _messages(raw: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if ("prompt" in raw) == ("messages" in raw):
        raise DatasetError(f"{where}: give exactly one of 'prompt' or 'messages'")
    if "prompt" in raw:
        messages: list[dict[str, Any]] = [{"role": "user", "content": _text(raw, "prompt", where)}]
    else:
        value = raw["messages"]
        if not isinstance(value, list) or not value:
            raise DatasetError(f"{where}: 'messages' must be a non-empty list")
        messages = []
        for index, message in enumerate(value):
            if (
                not isinstance(message, dict)
                or message.get("role") not in _ROLES
                or "content" not in message
            ):
                raise DatasetError(
                    f"{where}: messages[{index}] must be an object with a role "
                    f"({', '.join(sorted(_ROLES))}) and a content"
                )
            messages.append(dict(message))
        if messages[-1]["role"] != "user":
            raise DatasetError(f"{where}: the last message must be the user's")
    if "system" in raw:
        messages.insert(0, {"role": "system", "content": _text(raw, "system", where)})
    return messages


def parse_item(raw: object, where: str) -> Item:
    """One item from its decoded JSON line; `where` is `file:line` for errors."""
    if not isinstance(raw, dict):
        raise DatasetError(f"{where}: an item must be a JSON object")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise DatasetError(
            f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})"
        )
    if "id" not in raw:
        raise DatasetError(f"{where}: missing 'id'")
    item_id = raw["id"]
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)
    if not isinstance(item_id, str) or not item_id.strip():
        raise DatasetError(f"{where}: 'id' must be a non-empty string or an integer")
    messages = _messages(raw, where)
    if ("answer" in raw) == ("rubric" in raw):
        raise DatasetError(f"{where}: give exactly one of 'answer' or 'rubric'")
    if "rubric" in raw:
        if "choices" in raw or "grading" in raw:
            raise DatasetError(f"{where}: a rubric item takes no 'choices' or 'grading'")
        return Item(item_id, tuple(messages), "rubric", rubric=_text(raw, "rubric", where))
    grading = raw.get("grading", "choice" if "choices" in raw else "exact")
    if grading not in ("exact", "choice"):
        raise DatasetError(f"{where}: 'grading' must be 'exact' or 'choice', not {grading!r}")
    answer = raw["answer"]
    answers = [answer] if isinstance(answer, str) else answer
    if (
        not isinstance(answers, list)
        or not answers
        or not all(isinstance(a, str) and a.strip() for a in answers)
    ):
        raise DatasetError(f"{where}: 'answer' must be a non-empty string or list of strings")
    if grading == "exact":
        if "choices" in raw:
            raise DatasetError(f"{where}: 'choices' needs grading 'choice'")
        return Item(item_id, tuple(messages), "exact", answers=tuple(answers))
    choices = raw.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(c, str) and c for c in choices):
        raise DatasetError(f"{where}: 'choices' must be a list of strings")
    if len(choices) > 26:
        raise DatasetError(f"{where}: at most 26 choices")
    letters = string.ascii_uppercase[: len(choices) or 26]
    if len(answers) != 1 or answers[0].strip().upper() not in letters:
        raise DatasetError(
            f"{where}: a choice item's 'answer' must be one letter of {letters[0]}-{letters[-1]}"
        )
    if choices:
        last = messages[-1]
        if not isinstance(last["content"], str):
            raise DatasetError(f"{where}: 'choices' need the last message's content as text")
        listed = "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(choices))
        messages[-1] = {
            **last,
            "content": f"{last['content']}\n\n{listed}\n\nAnswer with the letter of the "
            "correct choice.",
        }
    return Item(
        item_id,
        tuple(messages),
        "choice",
        answers=(answers[0].strip().upper(),),
        choices=tuple(choices),
    )
