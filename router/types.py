"""Immutable value objects that cross module boundaries: requests, completions, stream events."""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any, Literal

from router.values import value

Role = Literal["system", "user", "assistant", "tool"]


@value
class ImagePart:
    """An image in a message, as OpenAI's `image_url` part: an `https:` URL or a `data:` URL
    (base64). The sidecar never fetches a URL: a protocol that needs the bytes gets data URLs."""

    url: str
    detail: str | None = None  # OpenAI's `auto`, `low` or `high`

    @property
    def inline(self) -> tuple[str, str] | None:
        """`(media_type, base64 data)` of a data URL; None for a URL to fetch."""
        if not self.url.startswith("data:"):
            return None
        head, _, data = self.url[5:].partition(",")
        media_type, _, encoding = head.partition(";")
        return (media_type, data) if encoding == "base64" else None


Part = str | ImagePart  # a text part, or an image


@value
class Message:
    """One chat message. `parts` keeps the boundaries of a message sent as a list of parts
    (text and images; adapters send them as separate parts); `content` is their text joined by
    newlines, for what needs one string (fusion prompts, token estimates)."""

    role: Role
    content: str
    parts: tuple[Part, ...] = ()
    name: str | None = None  # the participant's name (OpenAI's `name`)
    tool_calls: tuple[Any, ...] = ()  # an assistant's calls, OpenAI's objects as they came
    tool_call_id: str | None = None  # a `tool` message: the call it answers
    reasoning: str | None = None  # an assistant's `reasoning_content`, sent back
    thinking_blocks: tuple[Any, ...] = ()  # an assistant's Anthropic thinking blocks, sent back

    @property
    def texts(self) -> tuple[str, ...]:
        """The message's text parts (one, for a plain string); images left out."""
        if not self.parts:
            return (self.content,)
        return tuple(p for p in self.parts if isinstance(p, str))

    @property
    def images(self) -> tuple[ImagePart, ...]:
        """The message's images, in order."""
        return tuple(p for p in self.parts if isinstance(p, ImagePart))


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


@value
class ChatRequest:
    """A validated chat request, independent of any wire protocol."""

    model: str
    messages: tuple[Message, ...]
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    user: str | None = None
    include_usage: bool = False
    json_output: bool = False
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"  # as sent
    # OpenAI parameters sent as they came to OpenAI-protocol upstreams; elsewhere translated, a
    # documented no-op, or refused (`router.protocol_support`)
    passthrough: tuple[tuple[str, Any], ...] = ()
    # `response_format: json_schema`: its `json_schema` object as sent (name, schema, strict...)
    json_schema: Any = None
    reasoning_effort: ReasoningEffort | None = None
    # provider-side web search for this call (fusion panelists with `panelist_tools:
    # [web_search]`); never read from a client's request
    web_search: WebSearch | None = None

    def option(self, key: str) -> Any:
        """A passthrough parameter's value (`tools`, `tool_choice`...), or None."""
        for name, given in self.passthrough:
            if name == key:
                return given
        return None

    @property
    def tools(self) -> tuple[Any, ...]:
        """The request's function tools, OpenAI's objects as they came."""
        return tuple(self.option("tools") or ())

    @property
    def system_text(self) -> str:
        """All system messages joined, for protocols that take the system prompt apart."""
        return "\n\n".join(m.content for m in self.messages if m.role == "system")

    @property
    def dialogue(self) -> tuple[Message, ...]:
        """The non-system messages in order."""
        return tuple(m for m in self.messages if m.role != "system")


@value
class WebSearch:
    """A provider's own web search, turned on for one call (OpenAI `web_search_options`,
    Anthropic's `web_search` server tool, Gemini `google_search` grounding)."""

    blocked_domains: tuple[str, ...] = ()  # applied where the protocol can (Anthropic)
    max_uses: int = 5  # searches per call, where the protocol takes a limit (Anthropic)


@value
class Source:
    """A web page an answer drew on, as the provider cited it."""

    url: str
    title: str = ""


@value
class Usage:
    """Token counts of one upstream call (or a sum of them), and the web searches it ran."""

    input_tokens: int = 0
    output_tokens: int = 0
    web_searches: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.web_searches + other.web_searches,
        )


FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


@value
class ToolCall:
    """A function call the model asks the caller to make; `arguments` is the model's JSON text."""

    id: str
    name: str
    arguments: str
    extra: tuple[tuple[str, Any], ...] = ()  # the call's other fields, kept for the next turn

    def as_dict(self) -> dict[str, Any]:
        """OpenAI's shape (with the upstream's other fields, e.g. a thought signature)."""
        return {
            "id": self.id,
            "type": "function",
            **dict(self.extra),
            "function": {"name": self.name, "arguments": self.arguments},
        }


@value
class Completion:
    """A whole answer from one provider call."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    response_model: str
    response_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str = ""  # the model's reasoning text, where the upstream shows it
    thinking_blocks: tuple[Any, ...] = ()  # Anthropic's thinking blocks, signatures included
    logprobs: Any = None  # the choice's `logprobs` object, as the upstream sent it
    more_choices: tuple[Any, ...] = ()  # with `n` > 1: the other choices, in OpenAI's shape
    # top-level fields the upstream answered with and the client asked about (`service_tier`,
    # `system_fingerprint`), passed on
    echo: tuple[tuple[str, Any], ...] = ()
    sources: tuple[Source, ...] = ()  # pages a web search found and the answer cited


@value
class TextDelta:
    """A piece of streamed answer text."""

    text: str


@value
class StreamEnd:
    """The protocol's terminal marker was seen: the stream is complete."""

    finish_reason: FinishReason
    usage: Usage
    response_model: str
    response_id: str | None = None


@value
class ToolCallDelta:
    """A piece of a streamed tool call, in OpenAI's shape: the call's `index`; `id` and `name`
    on its first piece; then fragments of its `arguments` text."""

    index: int
    id: str | None
    name: str | None
    arguments: str
    extra: tuple[tuple[str, Any], ...] = ()  # the piece's other fields, passed on


@value
class ReasoningDelta:
    """A piece of streamed reasoning text (`reasoning_content`), or a whole thinking `block`
    with its signature once the upstream has closed it (Anthropic's, to be sent back)."""

    text: str
    block: Any = None


@value
class LogprobsDelta:
    """The log probabilities of streamed tokens: a chunk's `logprobs` object, as sent."""

    logprobs: Any


StreamEvent = TextDelta | ToolCallDelta | ReasoningDelta | LogprobsDelta | StreamEnd


@value
class Price:
    """USD per million tokens, and per web search."""

    input_per_mtok: float
    output_per_mtok: float
    per_web_search: float = 0.0

    def cost(self, usage: Usage) -> float:
        return (
            usage.input_tokens * self.input_per_mtok + usage.output_tokens * self.output_per_mtok
        ) / 1_000_000 + usage.web_searches * self.per_web_search


@value
class Timeouts:
    """The clocks of one attempt, in seconds."""

    connect: float = 5.0
    first_byte: float = 30.0
    idle: float = 30.0
    total: float = 300.0


@value
class ProviderCall:
    """Everything an adapter needs for one attempt; nothing about routing."""

    request: ChatRequest
    upstream_model: str
    timeouts: Timeouts = field(default_factory=Timeouts)
    extra_headers: tuple[tuple[str, str], ...] = ()
    deadline: float = math.inf  # time.monotonic() at which the attempt's total clock runs out
    # how a json_schema answer is asked of an Anthropic model: its native structured output,
    # or a forced tool whose input is the answer (the catalog model's `structured_output`)
    structured_output: Literal["native", "tool"] = "tool"
    # how an Anthropic model is asked to reason: `thinking.budget_tokens`, or adaptive thinking
    # with `output_config.effort` (the catalog model's `thinking`)
    thinking: Literal["budget", "adaptive"] = "budget"


EncodingFormat = Literal["float", "base64"]


@value
class EmbeddingRequest:
    """A validated embeddings request, independent of any wire protocol: texts, in order."""

    model: str
    inputs: tuple[str, ...]
    dimensions: int | None = None  # the vector size asked for (None: the model's own)
    encoding_format: EncodingFormat = "float"  # how the caller wants the vectors written
    user: str | None = None


@value
class Embeddings:
    """The vectors of one provider call, one per input in input order, and its usage."""

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage  # input tokens only: embeddings produce none
    response_model: str


@value
class EmbeddingCall:
    """Everything an adapter needs for one embeddings attempt; nothing about routing."""

    request: EmbeddingRequest
    upstream_model: str
    timeouts: Timeouts = field(default_factory=Timeouts)
    extra_headers: tuple[tuple[str, str], ...] = ()
    deadline: float = math.inf  # time.monotonic() at which the attempt's total clock runs out
    # the catalog model's `dimensions`: the size it answers with when the request names none
    # (what the simulated provider makes)
    model_dimensions: int | None = None
