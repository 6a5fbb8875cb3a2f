"""The inbound API a request speaks (OpenAI chat completions, Anthropic Messages...): how its
answers, streams and errors are written. The core (routing, fusion, the relay) is one; each
inbound API only parses into a `ChatRequest` and renders through its `Dialect`."""

from __future__ import annotations

from typing import Any, Protocol

from router.errors import RouterError
from router.types import Completion, StreamEvent, Usage


class StreamWriter(Protocol):
    """**Protocol**: one stream's events as bytes on the wire, in the dialect's format. The
    relay calls `text`/`piece` per event (`first` for the stream's first), then `finish`, or
    `failure`; the handler ends a finished stream with `done`."""

    def event(self, text: str, *, role: bool = False) -> bytes:
        """A piece of answer text (`role`: the stream's first event)."""
        ...

    def piece(self, event: StreamEvent, *, role: bool = False) -> bytes:
        """Any other event: a tool call's piece, reasoning, log probabilities."""
        ...

    def role(self) -> bytes:
        """What a stream owes that ends before its first event (its opening)."""
        ...

    def finish(self, reason: str) -> bytes:
        """The end of the answer's content, with the router's finish reason."""
        ...

    def failure(self, error: RouterError) -> bytes:
        """The in-band error event that ends a stream which cannot finish."""
        ...

    def done(self, usage: Usage, extensions: dict[str, Any] | None) -> bytes:
        """The stream's last bytes after `finish`: its usage and our extension objects
        (`router`, `fusion`; None: the client did not ask for the usage), then its end."""
        ...


class Dialect(Protocol):
    """**Protocol**: an inbound API's rendering of answers and errors."""

    name: str

    def whole(
        self,
        request_id: str,
        model: str,
        completion: Completion,
        usage: Usage,
        extensions: dict[str, Any],
    ) -> dict[str, Any]:
        """A whole answer's JSON body, with our extension objects (`router`, `fusion`)."""
        ...

    def writer(self, request_id: str, model: str, created: int) -> StreamWriter:
        """The writer of one stream's events."""
        ...

    def error_body(self, error: RouterError) -> dict[str, Any]:
        """The JSON body of an error answered before any byte of a response."""
        ...

    def stream_error(self, error: RouterError) -> bytes:
        """The in-band error event for a stream whose head is out already."""
        ...
