"""The OpenAI Responses dialect (`POST /v1/responses`): router results as a `response` object,
and streams as its typed events. Pure rendering.

A whole answer is one `response` object: `output` holds a `reasoning` item (when the upstream
showed its reasoning), a `message` item (its text as one `output_text` part) and one
`function_call` item per tool call; `status` is `completed`, or `incomplete` with its
`incomplete_details` when the answer was cut (`max_output_tokens`, `content_filter`); `usage`
in the Responses shape; our extension objects (`router`, `fusion`) as extra keys. The
request's settings are echoed as the API does (`OpenAIResponses(echo)`, one per request).

A stream is the API's event sequence, each with its `sequence_number`: `response.created`,
`response.in_progress`; per output item `response.output_item.added`, its pieces and
`response.output_item.done`: a message's `response.content_part.added`,
`response.output_text.delta`…, `response.output_text.done`, `response.content_part.done`; a
function call's `response.function_call_arguments.delta`…, `.done`; reasoning as a
`reasoning_text` part (`response.reasoning_text.delta`…, `.done`). Then `response.completed`
(or `response.incomplete`) with the whole response, its usage and our extension objects. One
item is open at a time, as the API streams them. A stream that fails ends with
`response.failed` (its `error`), then an `error` event carrying the error both flat, as the API
reference documents it, and nested under `error`, as the API sends it (the `openai` SDK raises
that as `APIError`).

Reasoning streams as a `reasoning_text` part; its thinking blocks arrive sealed in the item's
`encrypted_content` at `response.output_item.done` (`responses_shapes`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from router.errors import RouterError
from router.responses_shapes import (
    DEFAULT_ECHO,
    INCOMPLETE,
    call_item,
    error_data,
    message_item,
    output_of,
    output_text,
    reasoning_item,
    response_object,
    sse_event,
)
from router.types import Completion, ReasoningDelta, StreamEvent, ToolCallDelta, Usage


class ResponseEvents:
    """One stream's events, numbered from 0. The head (`response.created`,
    `response.in_progress`) goes out before whatever comes first; one output item is open at a
    time (a new kind of piece, or another tool call, closes it); a late piece of a call already
    closed is still sent, under that call's item."""

    def __init__(self, request_id: str, model: str, created: int, echo: Mapping[str, Any]) -> None:
        self.request_id, self.model, self.created, self.echo = request_id, model, created, echo
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any]] = []
        self._open: int | None = None  # the open item's output index
        self._pieces: list[str] = []  # the open item's text (or arguments) so far
        self._blocks: list[Any] = []  # the open reasoning item's thinking blocks
        self._part = False  # the open reasoning item's text part was added
        self._calls: dict[int, int] = {}  # a tool call's index -> its item's output index
        self._ended: tuple[str, str | None] = ("completed", None)

    def _emit(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse_event(data)

    def _snapshot(self, status: str, **more: Any) -> dict[str, Any]:
        return response_object(
            self.request_id, self.model, self.created, self.echo, status=status, **more
        )

    def _head(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        snapshot = self._snapshot("in_progress", output=[])
        return self._emit("response.created", response=snapshot) + self._emit(
            "response.in_progress", response=snapshot
        )

    def _add(self, item: dict[str, Any]) -> bytes:
        """Open `item` as the next output item (closing the open one)."""
        out = self._close()
        self._open, self._pieces, self._blocks, self._part = len(self.output), [], [], False
        self.output.append(item)
        return out + self._emit("response.output_item.added", output_index=self._open, item=item)

    def _item_id(self, prefix: str) -> str:
        return f"{prefix}_{self.request_id}_{len(self.output)}"

    def _message(self) -> bytes:
        """Open a message item with its one text part."""
        out = self._add(message_item(self._item_id("msg"), None, "in_progress"))
        return out + self._emit(
            "response.content_part.added",
            item_id=self.output[-1]["id"],
            output_index=len(self.output) - 1,
            content_index=0,
            part=output_text(""),
        )

    def event(self, text: str, *, role: bool = False) -> bytes:
        out = self._head()
        if self._open is None or self.output[self._open]["type"] != "message":
            out += self._message()
        at = len(self.output) - 1  # (the open item is the last)
        self._pieces.append(text)
        return out + self._emit(
            "response.output_text.delta",
            item_id=self.output[at]["id"],
            output_index=at,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def piece(self, event: StreamEvent, *, role: bool = False) -> bytes:
        if isinstance(event, ToolCallDelta):
            return self._head() + self._call(event)
        if isinstance(event, ReasoningDelta):
            return self._head() + self._reasoning(event)
        return self._head()  # log probabilities: not offered on this API

    def _call(self, delta: ToolCallDelta) -> bytes:
        out = b""
        at = self._calls.get(delta.index)
        if at is None:
            item = call_item(
                self._item_id("fc"),
                delta.id or f"call_{self.request_id}_{delta.index}",
                delta.name or "",
                "",
                delta.extra,
                "in_progress",
            )
            out = self._add(item)
            at = self._calls[delta.index] = len(self.output) - 1
        if not delta.arguments:
            return out
        if at == self._open:
            self._pieces.append(delta.arguments)
        else:  # a late piece of a call closed already
            self.output[at]["arguments"] += delta.arguments
        return out + self._emit(
            "response.function_call_arguments.delta",
            item_id=self.output[at]["id"],
            output_index=at,
            delta=delta.arguments,
        )

    def _reasoning(self, delta: ReasoningDelta) -> bytes:
        out = b""
        at = self._open
        if at is None or self.output[at]["type"] != "reasoning":
            out = self._add(reasoning_item(self._item_id("rs"), "", (), "in_progress"))
            at = self._open
            assert at is not None  # noqa: S101  # just opened
        item_id = self.output[at]["id"]
        if delta.block is not None:
            self._blocks.append(delta.block)
        if not delta.text:
            return out
        if not self._part:
            self._part = True
            out += self._emit(
                "response.content_part.added",
                item_id=item_id,
                output_index=at,
                content_index=0,
                part={"type": "reasoning_text", "text": ""},
            )
        self._pieces.append(delta.text)
        return out + self._emit(
            "response.reasoning_text.delta",
            item_id=item_id,
            output_index=at,
            content_index=0,
            delta=delta.text,
        )

    def _settle(self, status: str) -> tuple[int, dict[str, Any], str] | None:
        """The open item with its pieces written in and `status`, now closed (without events):
        its output index, the item and its text; None when no item is open."""
        at = self._open
        if at is None:
            return None
        self._open = None
        item, text = self.output[at], "".join(self._pieces)
        kind = item["type"]
        if kind == "message":
            item["content"] = [output_text(text)]
        elif kind == "reasoning":
            self.output[at] = item = reasoning_item(item["id"], text, self._blocks, status)
        else:
            item["arguments"] = text
        item["status"] = status
        return at, item, text

    def _close(self, status: str = "completed") -> bytes:
        """The open item's closing events."""
        settled = self._settle(status)
        if settled is None:
            return b""
        at, item, text = settled
        out = b""
        where = {"item_id": item["id"], "output_index": at}
        if item["type"] == "message":
            out = self._emit(
                "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
            ) + self._emit(
                "response.content_part.done", **where, content_index=0, part=item["content"][0]
            )
        elif item["type"] == "reasoning" and self._part:
            part = item["content"][0]
            out = self._emit(
                "response.reasoning_text.done", **where, content_index=0, text=text
            ) + self._emit("response.content_part.done", **where, content_index=0, part=part)
        elif item["type"] == "function_call":
            out = self._emit(
                "response.function_call_arguments.done", **where, arguments=item["arguments"]
            )
        return out + self._emit("response.output_item.done", output_index=at, item=item)

    def role(self) -> bytes:
        return self._head()

    def finish(self, reason: str) -> bytes:
        """The open item's end; an answer with no message and no call gets an empty message,
        as a whole answer does."""
        incomplete = INCOMPLETE.get(reason)
        status = "completed" if incomplete is None else "incomplete"
        self._ended = (status, incomplete)
        out = self._head()
        if not any(item["type"] in ("message", "function_call") for item in self.output):
            out += self._message()
        return out + self._close("completed" if incomplete is None else "incomplete")

    def done(self, usage: Usage, extensions: dict[str, Any] | None) -> bytes:
        """`response.completed` (`response.incomplete` for a cut answer) with the whole
        response: its output, usage and our extension objects."""
        status, incomplete = self._ended
        snapshot = self._snapshot(
            status, output=self.output, usage=usage, incomplete=incomplete, extensions=extensions
        )
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return self._head() + self._emit(kind, response=snapshot)

    def failure(self, error: RouterError) -> bytes:
        """`response.failed` with the output so far (the open item `incomplete`), then the
        `error` event."""
        out = self._head()
        self._settle("incomplete")
        snapshot = self._snapshot("failed", output=self.output, error=error)
        out += self._emit("response.failed", response=snapshot)
        data = error_data(error, self.sequence)
        self.sequence += 1
        return out + sse_event(data)


class OpenAIResponses:
    """The `Dialect` of `POST /v1/responses`: one per request (it echoes the request's
    settings, and an error cutting its stream continues that stream's numbering); the shared
    `OPENAI_RESPONSES` renders the route's errors."""

    name = "openai.responses"

    def __init__(self, echo: Mapping[str, Any] = DEFAULT_ECHO) -> None:
        self.echo = echo
        self._writer: ResponseEvents | None = None

    def whole(
        self,
        request_id: str,
        model: str,
        completion: Completion,
        usage: Usage,
        extensions: dict[str, Any],
    ) -> dict[str, Any]:
        incomplete = INCOMPLETE.get(completion.finish_reason)
        status = "completed" if incomplete is None else "incomplete"
        echo = self.echo
        tier = dict(completion.echo).get("service_tier")
        if tier is not None:
            echo = {**echo, "service_tier": tier}
        return response_object(
            request_id,
            model,
            int(time.time()),
            echo,
            status=status,
            output=output_of(request_id, completion, status),
            usage=usage,
            incomplete=incomplete,
            extensions=extensions,
        )

    def writer(self, request_id: str, model: str, created: int) -> ResponseEvents:
        self._writer = ResponseEvents(request_id, model, created, self.echo)
        return self._writer

    def error_body(self, error: RouterError) -> dict[str, Any]:
        return error.body()

    def stream_error(self, error: RouterError) -> bytes:
        if self._writer is not None:
            return self._writer.failure(error)
        return sse_event(error_data(error, 0))


OPENAI_RESPONSES = OpenAIResponses()
