"""Scripted behaviours for fake provider servers, and the log of every call they receive.

A fake server looks up the model named in a request, takes the next behaviour
of that model's script (the last one repeats), records the call, and acts it
out on the wire in its own protocol.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Answer:
    """Answer normally with `text` (streamed word by word when asked to stream)."""

    text: str = "Hello from the fake."
    input_tokens: int = 11
    output_tokens: int = 7
    chunk_delay: float = 0.0
    finish_reason: str = "stop"
    done_marker: bool = True  # False: end a stream after finish_reason without `[DONE]`


@dataclass(frozen=True)
class Status:
    """Answer with an HTTP error status and a protocol-shaped error body."""

    status: int
    message: str = "fake upstream error"
    code: str | None = None
    retry_after: str | None = None


@dataclass(frozen=True)
class Hang:
    """Accept the request and say nothing for `seconds`."""

    seconds: float = 3600.0


@dataclass(frozen=True)
class Delay:
    """Wait `seconds` before answering with `then`."""

    seconds: float
    then: Answer = field(default_factory=Answer)


@dataclass(frozen=True)
class Malformed:
    """Answer 200 with a body that is not the protocol's JSON."""


@dataclass(frozen=True)
class Reset:
    """Close the connection without an answer."""


@dataclass(frozen=True)
class CutStream:
    """Stream `after` chunks, then close without the terminal marker.

    With `abort`, the connection is reset (TCP RST) instead of closed cleanly, a moment after
    the chunks went out so they reach the reader first.
    """

    after: int = 2
    text: str = "one two three four five six"
    abort: bool = False


@dataclass(frozen=True)
class StallStream:
    """Stream `after` chunks, then go silent for `seconds`."""

    after: int = 2
    seconds: float = 3600.0
    text: str = "one two three four five six"


@dataclass(frozen=True)
class InBandError:
    """Stream `after` chunks, then send the protocol's in-band error event."""

    after: int = 1
    text: str = "one two three"


@dataclass(frozen=True)
class Huge:
    """Answer 200 with a JSON body of about `size` bytes (beyond the router's response cap)."""

    size: int = 17 * 1024 * 1024


@dataclass(frozen=True)
class Redirect:
    """Answer with a redirect status pointing at `location` (another server)."""

    location: str
    status: int = 307


@dataclass(frozen=True)
class MalformedEvent:
    """Stream `answer` normally, but put `repeat` events that are not JSON before chunk `at`."""

    at: int = 2
    repeat: int = 1
    answer: Answer = field(default_factory=lambda: Answer("one two three four"))


@dataclass(frozen=True)
class ToolCalls:
    """Answer with tool calls: (id, name, arguments JSON) each; streamed, each call's
    arguments go out in `pieces` fragments after a first delta with its id and name."""

    calls: tuple[tuple[str, str, str], ...] = (("call_1", "get_weather", '{"city": "Oslo"}'),)
    text: str = ""
    pieces: int = 3
    indexed: bool = True  # False: deltas without `index`, as some compatible servers send


@dataclass(frozen=True)
class Reasoned:
    """Reason first, then act out `then` (an answer or tool calls). Each protocol shows the
    reasoning its own way: `reasoning_content` (OpenAI-compatible), a thinking block with its
    `signature` (Anthropic), thought parts (Gemini, with `signature` as the thought signature)."""

    thinking: str = "The user wants the weather. I should call the tool."
    signature: str = "sig-fake-1"
    then: Answer | ToolCalls = field(default_factory=Answer)
    pieces: int = 3  # streamed: the thinking text in this many fragments


@dataclass(frozen=True)
class Researched:
    """Answer `text` after searching the web, in each protocol's own server-tool format:
    OpenAI's `url_citation` annotations; Anthropic's `server_tool_use` and
    `web_search_tool_result` blocks (one pair per search) and a text block citing `sources`
    (`web_search_result_location`, one citation per entry, repeats included), `searches` in
    `usage.server_tool_use`; Gemini's `groundingMetadata` (a grounding chunk per source, a
    query per search). Streamed, the text goes word by word (Anthropic: after the server-tool
    blocks, then a `citations_delta` per source).

    `cited=False`: the Anthropic text cites nothing (only the search results name the pages);
    `error`: the Anthropic search result is an error object with this `error_code` instead of
    the pages; `paused`: the Anthropic answer stops with `pause_turn`; `usage_count=False`: no
    search count in the usage (OpenAI never sends one; Anthropic then sends none)."""

    text: str = "Oslo has about 700,000 people."
    sources: tuple[tuple[str, str], ...] = (
        ("https://www.ssb.no/en/oslo", "Statistics Norway: Oslo"),
        ("https://en.wikipedia.org/wiki/Oslo", "Oslo - Wikipedia"),
    )
    searches: int = 1
    cited: bool = True
    error: str | None = None
    paused: bool = False
    usage_count: bool = True
    input_tokens: int = 30
    output_tokens: int = 12


@dataclass(frozen=True)
class Detailed:
    """Answer `texts` as that many choices (OpenAI's `n`), with per-token log probabilities
    (whole, and per chunk when streamed: the first text only) and a `service_tier`."""

    texts: tuple[str, ...] = ("Hello there.",)
    logprobs: bool = True
    service_tier: str | None = "default"


@dataclass(frozen=True)
class OddShape:
    """Answer 200 with valid JSON of the wrong shape: `body` whole, or, streamed, `events`
    after `text`'s first chunk (then the terminal marker)."""

    body: str = '{"choices": ["x"]}'
    events: tuple[str, ...] = ('{"choices": ["x"]}',)
    text: str = "first"


@dataclass(frozen=True)
class Endless:
    """Stream without end: SSE comment lines (no event at all), or, with `events`, valid chunks
    of `chunk_bytes` text each. Stops at `limit` bytes or when the reader goes away."""

    chunk_bytes: int = 64 * 1024
    events: bool = False
    limit: int = 64 * 1024 * 1024


@dataclass
class Flaky:
    """Answer 503 on a seeded random `rate` of calls, else answer normally."""

    rate: float
    seed: int = 0
    answer: Answer = field(default_factory=Answer)

    def __post_init__(self) -> None:
        import random

        self._rng = random.Random(self.seed)

    def pick(self) -> Answer | Status:
        return Status(503, "flaky") if self._rng.random() < self.rate else self.answer


Behaviour = (
    Researched
    | ToolCalls
    | Reasoned
    | Detailed
    | OddShape
    | Huge
    | Redirect
    | MalformedEvent
    | Endless
    | Flaky
    | Answer
    | Status
    | Hang
    | Delay
    | Malformed
    | Reset
    | CutStream
    | StallStream
    | InBandError
)


@dataclass(frozen=True)
class Call:
    """One request as the fake received it."""

    protocol: str
    path: str
    model: str
    stream: bool
    headers: dict[str, str]
    body: Any
    at: float
    query: str = ""


class Wall:
    """Scripts per model, and the log of every call received."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._scripts: dict[str, list[Behaviour]] = defaultdict(list)
        self.default: Behaviour = Answer()
        self.active = 0  # requests being handled right now (a cancelled upstream call ends one)
        self.cancelled = 0  # handlers cancelled because the caller went away

    def script(self, model: str, behaviours: Iterable[Behaviour] | Behaviour) -> None:
        """Set what `model` does: a list is played in order, its last entry repeating."""
        items = [behaviours] if not isinstance(behaviours, Iterable) else list(behaviours)
        self._scripts[model] = items

    def next_for(self, model: str) -> Behaviour:
        """The behaviour for the next call to `model`."""
        items = self._scripts.get(model)
        if not items:
            return self.default
        return items.pop(0) if len(items) > 1 else items[0]

    def record(self, call: Call) -> None:
        self.calls.append(call)

    def calls_to(self, model: str) -> list[Call]:
        return [c for c in self.calls if c.model == model]

    @staticmethod
    def now() -> float:
        return time.monotonic()
