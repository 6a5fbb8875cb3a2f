"""Targets (pure): the `--targets` list split, and each target as the request fields it sends.

A target is anything the sidecar serves as a chat model: a catalog model (`gpt-5.5`), a route
(`smart`), a configured panel (`fusion/budget`), or an inline panel: `fusion:{JSON}` (the
request's `fusion` object with `model: "fusion"`), or `fusion/<panel>:{JSON}` (a configured
panel with some fields overridden). `NAME=TARGET` gives a target a short label for the report.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

FUSION = "fusion"
_LABEL = re.compile(r"^([A-Za-z0-9_.\-]+)=(.+)$", re.DOTALL)


class TargetError(ValueError):
    """A target string that cannot be sent."""


@dataclass(frozen=True, slots=True)
class Target:
    """A target's label (its string, or the NAME given) and the request fields it sets."""

    label: str
    fields: dict[str, Any]

    @property
    def is_fusion(self) -> bool:
        model = str(self.fields["model"])
        return model == FUSION or model.startswith(f"{FUSION}/")


def split_targets(text: str) -> list[str]:
    """`text` split on the commas outside JSON objects and strings, each part stripped."""
    parts: list[str] = []
    current: list[str] = []
    depth, quoted, escaped = 0, False, False
    for char in text:
        if quoted:
            escaped = char == "\\" and not escaped
            if char == '"' and not escaped:
                quoted = False
        elif char == '"':
            quoted = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def parse_target(text: str) -> Target:
    """The target `text` names; raises `TargetError` for an inline panel that is not a JSON
    object, or an empty name."""
    label = text.strip()
    named = _LABEL.match(label)
    spec = named.group(2).strip() if named else label
    label = named.group(1) if named else label
    head, colon, rest = spec.partition(":")
    if colon and rest.lstrip().startswith("{"):
        if head != FUSION and not head.startswith(f"{FUSION}/"):
            raise TargetError(f"{text!r}: only fusion targets take an inline JSON object")
        try:
            options = json.loads(rest)
        except json.JSONDecodeError as exc:
            raise TargetError(f"{text!r}: the inline panel is not valid JSON: {exc.msg}") from exc
        if not isinstance(options, dict):
            raise TargetError(f"{text!r}: the inline panel must be a JSON object")
        return Target(label, {"model": head, "fusion": options})
    if not spec:
        raise TargetError("an empty target")
    return Target(label, {"model": spec})


def parse_targets(text: str) -> list[Target]:
    """Every target in a `--targets` value; labels must be distinct."""
    targets = [parse_target(part) for part in split_targets(text)]
    if not targets:
        raise TargetError("no targets given")
    labels = [t.label for t in targets]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise TargetError(f"target(s) given twice: {', '.join(duplicates)} (label them NAME=...)")
    return targets
