"""The built-in simulated provider: deterministic answers and a scriptable fault profile.

It stands in for real providers in the embedded default and the demo. Answers
depend only on (model, conversation, seed), so runs repeat. The fault profile
covers latency, an error rate, down, hang, 429 with Retry-After, a malformed
body and a cut stream; each fault surfaces as the same `ProviderError` a real
adapter would raise.

What it answers (`answer`), first rule that applies; the generators and their
rules are in `router.providers.sim_content`:

- `tools`, `tool_choice` not "none", the last message not a tool result: a
  call (or two) with arguments built from the tool's JSON schema, ids
  `call_` + a hash of the conversation, finish reason `tool_calls`;
- `response_format: json_schema`: a JSON object valid against the schema;
- the conversation ends in tool results: "Based on <tool>: <result>. ...";
- `json_object`: a judge's findings object (what fusion's judge asks for);
- else prose, opened by a note on the last user message's images, if any.

With web search on (`ChatRequest.web_search`, set by fusion) an answer other
than a tool call "searches" once (`usage.web_searches` 1): it cites 1-3 made-up
pages named after the last user message (`https://sim.example/<slug>`, titles
opening "SIMULATED:"), on reserved `.example` domains only and never on one that
`blocked_domains` covers (`sim.example` blocked: `sim-research.example`, and so
on; all blocked: none). Prose names them at its end; a JSON answer carries them
as sources only. Whole answers carry them as `Completion.sources`; a stream
relays the text naming them.

With `reasoning_effort` (not "none") the answer carries reasoning text (more
steps for more effort), streamed as reasoning deltas before the answer. A
stream sends text word by word and a tool call as OpenAI does: its id and name
first, then its arguments in pieces. `max_tokens` cuts prose only: arguments
and JSON answers always parse.

It embeds too (`embed`, for catalog models of `kind: embedding`): each text's
vector is a unit vector drawn from a hash of the upstream model id and the text
(not the seed: the same model on two providers embeds alike), float32 values,
of the size the request asks for, else the catalog model's `dimensions`, else
`SIM_DIMENSIONS`. The fault profile applies as to chat (latency, errors, down,
hang, 429, a malformed answer).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import struct
from collections.abc import AsyncIterator

from router.config import SimProfile
from router.errors import (
    ProviderMalformed,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    StreamTruncated,
)
from router.providers.base import AttemptClocks, clock, estimate_tokens
from router.providers.sim_content import (
    Words,
    chosen_tools,
    images_note,
    reasoning_text,
    sources_note,
    tool_results_text,
    value_for,
    web_sources,
)
from router.types import (
    ChatRequest,
    Completion,
    EmbeddingCall,
    Embeddings,
    FinishReason,
    Message,
    ProviderCall,
    ReasoningDelta,
    Source,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from router.values import value
from router.vectors import float32

SIM_DIMENSIONS = 256  # the size of a simulated vector when neither request nor catalog says

_OPENERS = (
    "In short:",
    "The key point is this:",
    "Here is a careful answer.",
    "Briefly:",
    "Let me take this step by step.",
)
_BODIES = (
    "the evidence points one way once the assumptions are stated plainly",
    "the answer depends on two factors, and the second one usually dominates",
    "the common explanation is right, with one caveat worth knowing",
    "there is a simple rule that covers most cases, and a short list of exceptions",
    "the trade-off is between speed and certainty, and the data favour certainty here",
    "three sources agree on the main claim and disagree on the date",
)
_CLOSERS = (
    "That is the practical conclusion.",
    "Check the primary source before relying on the figure.",
    "Confidence: moderate.",
    "Confidence: high.",
)


def _digest(*parts: str) -> int:
    h = hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def _judge_json(request: ChatRequest, seed: int) -> str:
    """A findings object for a judge prompt that lists answers as `[A1]`, `[A2]`…"""
    prompt = request.messages[-1].content if request.messages else ""
    labels = sorted(
        {
            tok.rstrip(":")
            for tok in prompt.split()
            if tok.startswith("[A") and tok.rstrip(":").endswith("]")
        }
    )
    rng = random.Random(seed)
    ranking = labels[:]
    rng.shuffle(ranking)
    findings = {
        "agreements": ["The answers agree on the main conclusion."] if len(labels) > 1 else [],
        "contradictions": (
            [f"{labels[0]} and {labels[-1]} disagree on the supporting detail."]
            if len(labels) > 1
            else []
        ),
        "errors": {label: [] for label in labels},
        "ranking": ranking,
    }
    return json.dumps(findings)


def answer_text(request: ChatRequest, model: str, seed: int) -> str:
    """The deterministic prose (or judge's findings) a simulated `model` gives to `request`."""
    question = request.messages[-1].content if request.messages else ""
    n = _digest(model, question, str(seed))
    if question.startswith("Question:\n"):  # a judge or synthesizer prompt: answer its question
        question = question.split("\n", 2)[1]
    if request.json_output and request.json_schema is None:
        return _judge_json(request, n)
    topic = " ".join(question.split()[:12])
    return (
        f"{_OPENERS[n % len(_OPENERS)]} on \u201c{topic}\u201d, "
        f"{_BODIES[(n >> 8) % len(_BODIES)]}. {_CLOSERS[(n >> 16) % len(_CLOSERS)]}"
    )


@value
class SimAnswer:
    """What the simulator answers to one request: text or tool calls, and reasoning."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str = ""
    sources: tuple[Source, ...] = ()  # the pages a simulated web search found
    searches: int = 0  # simulated web searches run

    @property
    def finish_reason(self) -> FinishReason:
        """`tool_calls` for an answer that calls tools, else `stop`."""
        return "tool_calls" if self.tool_calls else "stop"


def answer(request: ChatRequest, model: str, seed: int) -> SimAnswer:
    """The deterministic answer a simulated `model` gives to `request` (the module's rules)."""
    last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
    words = Words(last_user.content if last_user else "", "")
    ends_in_results = bool(request.messages) and request.messages[-1].role == "tool"
    functions = (
        ()
        if ends_in_results
        else chosen_tools(
            request.tools,
            request.option("tool_choice"),
            request.option("parallel_tool_calls") is not False,
            words,
        )
    )
    if functions:
        key = _conversation_key(request, model, seed)
        calls = tuple(
            ToolCall(
                id=f"call_{_digest(key, str(i)) >> 16:012x}",
                name=str(f.get("name", "")),
                arguments=json.dumps(value_for(f.get("parameters") or {}, words, names_from=i)),
            )
            for i, f in enumerate(functions)
        )
        plan = "It needs " + " and ".join(f"{c.name}({c.arguments})" for c in calls) + "."
        return SimAnswer("", calls, _reasoning(request, model, seed, words, plan))
    search = request.web_search
    sources = (
        ()
        if search is None
        else web_sources(words, _digest(model, words.text, str(seed)), search.blocked_domains)
    )
    # what prose says of them (a JSON answer cannot)
    cited = sources_note(sources) if search is not None and not request.json_output else ""
    if isinstance(request.json_schema, dict):
        prose = answer_text(request, model, seed)
        schema = request.json_schema.get("schema") or {"type": "object"}
        text = json.dumps(value_for(schema, Words(words.text, prose)))
        plan = f"The answer is a {request.json_schema.get('name', 'JSON')} object."
    elif ends_in_results:
        text = _cut(
            request, " ".join(filter(None, (tool_results_text(request.messages, words), cited)))
        )
        plan = "The tool results answer it."
    else:
        note = images_note(last_user.images) if last_user else ""
        prose = answer_text(request, model, seed)
        text = _cut(request, " ".join(filter(None, (note, prose, cited))))
        plan = "The answer follows."
    reasoning = _reasoning(request, model, seed, words, plan)
    return SimAnswer(text, (), reasoning, sources, 0 if search is None else 1)


def _reasoning(request: ChatRequest, model: str, seed: int, words: Words, plan: str) -> str:
    """The reasoning shown for the request's `reasoning_effort` (none without one)."""
    if request.reasoning_effort in (None, "none"):
        return ""
    n = _digest(model, words.text, str(seed))
    return reasoning_text(request.reasoning_effort, words.topic, plan, n)


def _cut(request: ChatRequest, text: str) -> str:
    """Prose cut to about `max_tokens` (four characters a token)."""
    return text if request.max_tokens is None else text[: request.max_tokens * 4]


def _conversation_key(request: ChatRequest, model: str, seed: int) -> str:
    """What a call id hashes: the model, the seed and every message, so a new turn gets new
    ids and the same request the same."""
    turns = (_message_key(m) for m in request.messages)
    return "\x1e".join((model, str(seed), *turns))


def _message_key(message: Message) -> str:
    """One message as a call id hashes it: role, text, tool calls and images."""
    calls = json.dumps(list(message.tool_calls), sort_keys=True, default=str)
    images = "\x1d".join(i.url for i in message.images)
    return "\x1d".join((message.role, message.content, calls, images))


def embedding(model: str, text: str, dimensions: int) -> tuple[float, ...]:
    """The simulated `model`'s vector for `text`: `dimensions` float32 values of a unit vector
    read from a SHAKE-256 hash of the two (the same text, the same vector; different texts,
    unrelated ones)."""
    key = "\x1f".join((model, text)).encode("utf-8", "surrogatepass")
    raw = hashlib.shake_256(key).digest(4 * dimensions)
    values = struct.unpack(f"<{dimensions}i", raw)  # 32-bit integers, spread evenly around 0
    norm = math.sqrt(math.fsum(v * v for v in values)) or 1.0
    return float32([v / norm for v in values])


def stream_events(answer: SimAnswer, piece: int = 12) -> list[StreamEvent]:
    """`answer` as stream events: reasoning then text word by word, a tool call's id and name
    then its arguments in pieces of `piece` characters. No `StreamEnd`."""
    events: list[StreamEvent] = [ReasoningDelta(w) for w in _words(answer.reasoning)]
    events += [TextDelta(w) for w in _words(answer.text)]
    for index, call in enumerate(answer.tool_calls):
        events.append(ToolCallDelta(index, call.id, call.name, ""))
        events += [
            ToolCallDelta(index, None, None, call.arguments[i : i + piece])
            for i in range(0, len(call.arguments), piece)
        ]
    return events


def _words(text: str) -> list[str]:
    """`text` in pieces that join back to it: each word, the ones after the first with the
    space before it."""
    if not text:
        return []
    words = text.split(" ")
    return [words[0], *(" " + w for w in words[1:])]


class SimProvider:
    """A provider living inside the process, driven by a `SimProfile`."""

    protocol = "sim"

    def __init__(self, name: str, profile: SimProfile) -> None:
        self.name = name
        self.profile = profile
        self._rng = random.Random(profile.seed)

    def __repr__(self) -> str:
        return f"SimProvider(name={self.name!r})"

    async def _wait(self, call: AttemptClocks, seconds: float, phase: str) -> None:
        """Sleep `seconds`, bounded like a real adapter's wait: by the attempt's clocks."""
        budget, clock_name = clock(call, seconds, phase)
        await asyncio.sleep(budget)
        if budget < seconds:
            raise ProviderTimeout(
                f"{self.name}: no answer within the {clock_name} timeout (simulated)",
                provider=self.name,
                phase=clock_name,
            )

    async def _before_first_byte(self, call: AttemptClocks) -> None:
        p = self.profile
        if p.down:
            raise ProviderUnavailable(
                f"{self.name}: connection refused (simulated down)", provider=self.name
            )
        if p.hang:
            await self._wait(call, call.timeouts.first_byte, "first_byte")
            raise ProviderUnavailable(f"{self.name}: simulated hang", provider=self.name)
        if p.rate_limited_retry_after_s is not None:
            raise ProviderRateLimited(
                f"{self.name}: rate limited (simulated)",
                provider=self.name,
                retry_after=p.rate_limited_retry_after_s,
            )
        if p.latency_ms:
            await self._wait(call, p.latency_ms / 1000, "first_byte")
        if p.error_rate and self._rng.random() < p.error_rate:
            raise ProviderUnavailable(
                f"{self.name}: upstream error 503 (simulated)",
                provider=self.name,
                upstream_status=503,
            )

    def _usage(self, request: ChatRequest, reply: SimAnswer) -> Usage:
        """Estimated tokens: the messages in; text, reasoning and arguments out."""
        out = reply.text + reply.reasoning + "".join(c.arguments for c in reply.tool_calls)
        return Usage(
            sum(estimate_tokens(m.content) for m in request.messages),
            estimate_tokens(out),
            reply.searches,
        )

    def _answer(self, call: ProviderCall) -> SimAnswer:
        """This provider's answer to `call` (its profile's seed)."""
        return answer(call.request, call.upstream_model, self.profile.seed)

    def _response_id(self, reply: SimAnswer) -> str:
        """A stable response id from the answer's text and call ids."""
        ids = "".join(c.id for c in reply.tool_calls)
        return f"sim-{_digest(self.name, reply.text, ids):016x}"

    async def complete(self, call: ProviderCall, /) -> Completion:
        await self._before_first_byte(call)
        if self.profile.malformed:
            raise ProviderMalformed(
                f"{self.name}: response body is not valid JSON (simulated)", provider=self.name
            )
        reply = self._answer(call)
        return Completion(
            text=reply.text,
            finish_reason=reply.finish_reason,
            usage=self._usage(call.request, reply),
            response_model=call.upstream_model,
            response_id=self._response_id(reply),
            tool_calls=reply.tool_calls,
            reasoning=reply.reasoning,
            sources=reply.sources,
        )

    async def embed(self, call: EmbeddingCall, /) -> Embeddings:
        await self._before_first_byte(call)
        if self.profile.malformed:
            raise ProviderMalformed(
                f"{self.name}: response body is not valid JSON (simulated)", provider=self.name
            )
        request = call.request
        size = request.dimensions or call.model_dimensions or SIM_DIMENSIONS
        return Embeddings(
            vectors=tuple(embedding(call.upstream_model, t, size) for t in request.inputs),
            usage=Usage(sum(estimate_tokens(t) for t in request.inputs), 0),
            response_model=call.upstream_model,
        )

    async def stream(self, call: ProviderCall, /) -> AsyncIterator[StreamEvent]:
        await self._before_first_byte(call)
        reply = self._answer(call)
        for i, event in enumerate(stream_events(reply)):
            if self.profile.cut_stream_after is not None and i >= self.profile.cut_stream_after:
                raise StreamTruncated(f"{self.name}: stream cut (simulated)", provider=self.name)
            if i and self.profile.chunk_ms:
                await self._wait(call, self.profile.chunk_ms / 1000, "idle")
            yield event
        if self.profile.malformed:
            raise ProviderMalformed(
                f"{self.name}: malformed stream event (simulated)", provider=self.name
            )
        yield StreamEnd(
            finish_reason=reply.finish_reason,
            usage=self._usage(call.request, reply),
            response_model=call.upstream_model,
            response_id=self._response_id(reply),
        )
