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


SYNTHESIZER_CONVERSATION = (
    "The user's conversation follows as their application sent it: reply to its last turn as "
    "the assistant, drawing on the expert answers and findings below."
)

SYNTHESIZER_TOOLS = (
    "The application offers the tools it sent. Where the expert answers show a tool call is "
    "needed, make the call yourself instead of describing it."
)

DELIBERATION_TOOLS = Template(
    """The application you answer for offers these tools. You cannot call them here: another \
model writes the final reply from your answer and makes the calls. Where a tool would help, say \
which call you would make, with which arguments and why, and answer what you can without it.
$tools
$choice"""
)

DELIBERATION_SCHEMA = Template(
    """The application wants the final reply as JSON matching the schema "$name" below. Another \
model writes that JSON from your answer: give it the content it needs, in any form.
$schema"""
)


def answers_block(labelled: list[tuple[str, str]]) -> str:
    """`[A1]: text` blocks separated by blank lines."""
    return "\n\n".join(f"{label}: {text}" for label, text in labelled)
