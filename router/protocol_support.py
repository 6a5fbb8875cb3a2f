"""Which OpenAI request fields each upstream protocol carries: sent as they came, translated,
a documented no-op, or not at all (then routing skips the target; with none left, a 400 names
the field and the protocol). Pure."""

from __future__ import annotations

from collections.abc import Mapping

from router.types import ChatRequest

# OpenAI parameters passed through unchanged to OpenAI-protocol upstreams (and checked here)
PASSTHROUGH = ("store", "metadata", "frequency_penalty", "presence_penalty")

# what each other protocol does with them: "translated" (an equivalent field) or "no-op" (it
# has nothing to do there: OpenAI stores completions for its own evals, other vendors do not)
CARRIED: Mapping[str, Mapping[str, str]] = {
    "anthropic": {"store": "no-op", "metadata": "no-op"},
    "gemini": {
        "store": "no-op",
        "metadata": "no-op",
        "frequency_penalty": "translated",
        "presence_penalty": "translated",
    },
}
NAME_FIELD = "messages[].name"


def missing_field(request: ChatRequest, protocol: str) -> str | None:
    """The first field of `request` that `protocol` cannot carry, or None."""
    carried = CARRIED.get(protocol)
    if carried is None:  # openai (everything), sim (simulated: anything goes)
        return None
    for key, _ in request.passthrough:
        if key not in carried:
            return key
    if any(m.name is not None for m in request.messages):
        return NAME_FIELD
    return None
