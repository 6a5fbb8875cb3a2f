"""Judge and synthesizer prompt templates, as data (a panel may override either)."""

from __future__ import annotations

from string import Template

JUDGE_SYSTEM = (
    "You are the judge of a panel of independent experts. You compare their answers; you do not "
    "answer the question yourself. Reply with one JSON object and nothing else."
)

JUDGE_TEMPLATE = Template(
    """Question:
$question

The panel's answers, anonymized and in random order:

$answers

Compare them. Reply with a JSON object with exactly these keys:
  "agreements": list of short statements on which the answers agree,
  "contradictions": list of short statements naming the answers that disagree and on what,
  "errors": object mapping an answer label (e.g. "[A1]") to a list of factual or logical errors in it,
  "ranking": list of every answer label, best first.
"""
)

SYNTHESIZER_SYSTEM = (
    "You write the final answer for the user from a panel of expert answers and a judge's findings. "
    "Keep what the answers agree on, resolve contradictions using the findings, drop the errors. "
    "Answer the user directly; do not mention the panel, the judge or the answer labels."
)

SYNTHESIZER_TEMPLATE = Template(
    """Question:
$question

Expert answers:

$answers

Judge's findings:
$findings

Write the single best answer to the question."""
)


def answers_block(labelled: list[tuple[str, str]]) -> str:
    """`[A1]: text` blocks separated by blank lines."""
    return "\n\n".join(f"{label}: {text}" for label, text in labelled)
