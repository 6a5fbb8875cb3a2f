"""The upstream client's failures below HTTP semantics: the `UpstreamHttpError` family.

Raised by `upstream_http`, `upstream_dial` and `upstream_proxy` (and importable from
`upstream_http`); `providers.base.upstream_error` maps them to router errors, in one place.
"""

from __future__ import annotations


class UpstreamHttpError(Exception):
    """An upstream call failed below HTTP semantics (no status to classify)."""


class ConnectFailed(UpstreamHttpError):
    """The TCP or TLS connection could not be made."""

    def __init__(self, message: str, *, dns: bool = False, certificate: bool = False) -> None:
        super().__init__(message)
        self.dns = dns
        self.certificate = certificate


class ConnectTimedOut(UpstreamHttpError):
    """The connection was not made within the connect clock."""


class TimedOut(UpstreamHttpError, TimeoutError):
    """The answer's head, or the body's next bytes, did not arrive within the caller's clock."""


class Disconnected(UpstreamHttpError):
    """The server closed the connection before the answer was complete.

    `began`: some byte of the answer had arrived. `reused`: the request went on a pooled
    connection that had carried an earlier one and nothing at all came back on it, the mark of
    an idle keep-alive connection the server dropped as we reused it (never true with `began`).
    The request is not sent again by the client: the server may have seen it."""

    def __init__(self, message: str, *, began: bool, reused: bool = False) -> None:
        super().__init__(message)
        self.began = began  # whether any byte of the answer had arrived
        self.reused = reused and not began


class BadResponse(UpstreamHttpError):
    """The bytes that came back are not a valid HTTP/1.1 response."""
