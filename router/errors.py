"""The router's whole error tree, and the one place each error gets its HTTP shape.

::

    RouterError                          base; never raised itself
    ├── ConfigError                      startup, `check` or reload; never reaches a client
    │   └── PolicyError                  a policy file is invalid
    ├── RequestError             4xx     the caller's fault
    │   ├── InvalidRequest         400   invalid_request
    │   │   ├── InvalidJson        400   invalid_json (not JSON, not UTF-8, too deep, not an object)
    │   │   ├── DuplicateKey       400   duplicate_key
    │   │   ├── ForbiddenField     400   forbidden_field (egress fields: base_url, api_key, ...)
    │   │   ├── UnsupportedContent 400   unsupported_content
    │   │   ├── UnsupportedParameter 400 unsupported_parameter
    │   │   ├── MissingCapability  400   model_lacks_capability (no target has what it needs)
    │   │   ├── WrongModelKind     400   wrong_model_kind (a chat model asked to embed, or the reverse)
    │   │   └── InvalidJurisdiction 400  invalid_jurisdiction
    │   ├── Unauthorized           401   unauthorized
    │   ├── PolicyDenied           403   policy_denied (names the rule)
    │   ├── NotFound               404   not_found (no such endpoint)
    │   ├── UnknownModel           404   unknown_model
    │   ├── MethodNotAllowed       405   method_not_allowed (its `Allow` header names the methods)
    │   ├── RequestTimeout         408   request_timeout (the body did not arrive in time)
    │   ├── PayloadTooLarge        413   payload_too_large
    │   ├── UnsupportedMediaType   415   unsupported_media_type
    │   ├── MisdirectedRequest     421   misdirected_request (the Host header names another site)
    │   └── UpstreamRejected       4xx   upstream_rejected (the provider refused our payload;
    │       │                            its status mirrors the provider's 400/404/413/422)
    │       ├── ContextLengthExceeded    context_length_exceeded
    │       └── ContentPolicyRefused     content_policy
    ├── ProviderError                    one upstream attempt failed (see `Outcome`)
    │   ├── ProviderTimeout              connect / first byte / stream idle clock ran out
    │   ├── ProviderUnavailable          connect error, reset, 5xx, 529, redirect
    │   ├── ProviderMalformed            a body or stream we cannot parse
    │   │   └── ResponseTooLarge         response_too_large: past the 16 MiB cap
    │   ├── StreamTruncated              the stream ended without its terminal marker
    │   ├── StaleConnection              a pooled connection the server had dropped while idle:
    │   │                                neutral; routing tries the same target once more, now
    │   ├── ProviderRateLimited          429 (.retry_after)
    │   │   └── ProviderQuotaExhausted   provider_quota_exhausted: the account's quota is spent
    │   ├── ProviderAuthFailed           401/403 from the provider: our key is bad
    │   ├── ProviderRejected             400/404/413/422: the caller's payload
    │   └── BreakerOpen                  not called at all
    └── ServiceError             5xx     the request as a whole could not be served
        ├── Overloaded             503   overloaded (shed, with Retry-After)
        ├── ShuttingDown           503   shutting_down (draining, or cut at the end of the grace)
        ├── NoEligibleModel        503   no_eligible_model
        ├── AllUpstreamsUnavailable 503  all_upstreams_unavailable (every breaker open)
        ├── RateLimited            429   rate_limited (every target asked us to wait)
        ├── AllProvidersFailed     502   all_providers_failed (.attempts)
        ├── PanelExhausted         502   panel_exhausted (.seats)
        └── DeadlineExceeded       504   deadline_exceeded

A client that hangs up is no error of ours: its request ends with status 499 and the code
``client_cancelled`` in the log line and metrics (never a 5xx), and nothing is sent.

Every class carries a stable snake_case ``code``; it is the ``error.code`` of the
JSON body, the ``error.type`` of spans and the ``code`` field of logs. Messages
never carry secrets, upstream URLs or raw upstream bodies.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from router.values import value


class Outcome(enum.StrEnum):
    """How an upstream attempt ended, decided before retry, failover or breaker see it."""

    SUCCESS = "success"
    PROVIDER_FAULT = "provider_fault"
    THROTTLED = "throttled"
    CALLER_FAULT = "caller_fault"
    NEUTRAL = "neutral"


class RouterError(Exception):
    """Base of every error the router raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    error_type: ClassVar[str] = "server_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.tried: tuple[AttemptRecord, ...] | None = None  # set by routing: what it tried

    @property
    def http_status(self) -> int:
        """The response status: the class's, except where an error mirrors an upstream's."""
        return self.status

    def headers(self) -> Mapping[str, str]:
        """Extra response headers this error asks for (e.g. Retry-After)."""
        return {}

    def body(self) -> dict[str, Any]:
        """The OpenAI-shaped JSON error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "code": self.code,
                "param": self.param,
            }
        }


# --- configuration ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation problem: where it is and what is wrong."""

    file: str
    path: str
    message: str
    line: int | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        path = self.path or "<root>"
        return f"{where}: {path}: {self.message}"


class ConfigError(RouterError):
    """The config (or a policy) is invalid; carries every problem found."""

    code = "config_invalid"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "invalid config")


class PolicyError(ConfigError):
    """A policy file is invalid."""

    code = "policy_invalid"


# --- the caller's fault -------------------------------------------------------


class RequestError(RouterError):
    """The caller sent something we will not serve."""

    status = 400
    code = "invalid_request"
    error_type = "invalid_request_error"


class InvalidRequest(RequestError):
    """The request is malformed or names something unsupported."""


class InvalidJson(InvalidRequest):
    """The body is not a JSON object we can read (empty, not UTF-8, invalid, too deep)."""

    code = "invalid_json"


class DuplicateKey(InvalidRequest):
    """A JSON object repeats a key (parsers disagree on which one wins)."""

    code = "duplicate_key"


class ForbiddenField(InvalidRequest):
    """The body names where or how to call upstream (`base_url`, `api_key`, ...): never honoured."""

    code = "forbidden_field"


class UnsupportedContent(InvalidRequest):
    """A message content part of a kind this sidecar does not carry."""

    code = "unsupported_content"


class UnsupportedParameter(InvalidRequest):
    """A parameter this sidecar (or the protocol it would go to) cannot honour."""

    code = "unsupported_parameter"


class MissingCapability(InvalidRequest):
    """No target of the request has a capability it needs (`tools`, `vision`, `json_schema`,
    `reasoning`), as the catalog declares; names the capability and the models that lack it."""

    code = "model_lacks_capability"

    def __init__(
        self, message: str, *, capability: str, models: Sequence[str], param: str | None = None
    ) -> None:
        super().__init__(message, param=param)
        self.capability = capability
        self.models = tuple(models)

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["capability"] = self.capability
        body["error"]["models"] = list(self.models)
        return body


class WrongModelKind(InvalidRequest):
    """The model named is of the other kind: a chat model (or route, or fusion panel) asked to
    embed, or an embedding model asked to chat or to sit on a fusion panel."""

    code = "wrong_model_kind"

    def __init__(self, message: str, *, kind: str, param: str | None = "model") -> None:
        super().__init__(message, param=param)
        self.kind = kind  # what the named model is: chat | embedding

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["model_kind"] = self.kind
        return body


class CostLimitExceeded(InvalidRequest):
    """A fusion's estimated cost is over its panel's `max_cost_usd`: no call was made. Says
    the estimate, the cap, and the `max_tokens` that would fit (None: no answer fits)."""

    code = "cost_limit_exceeded"

    def __init__(
        self, message: str, *, estimate_usd: float, max_cost_usd: float, fits_max_tokens: int | None
    ) -> None:
        super().__init__(message, param="fusion.max_cost_usd")
        self.estimate_usd, self.max_cost_usd = estimate_usd, max_cost_usd
        self.fits_max_tokens = fits_max_tokens

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["estimate_usd"] = round(self.estimate_usd, 8)
        body["error"]["max_cost_usd"] = self.max_cost_usd
        body["error"]["fits_max_tokens"] = self.fits_max_tokens
        return body


class CostLimitReached(RequestError):
    """A fusion stage's call was not made: its cost ceiling did not fit in what is left of the
    request's `max_cost_usd`. A stage's failure (the seat, judge or synthesis degrades), not
    a client's answer by itself; a 400 if it ever were one (the cap is the client's)."""

    code = "cost_limit"


class InvalidJurisdiction(InvalidRequest):
    """`X-Router-Jurisdiction` names no loaded jurisdiction, or is malformed."""

    code = "invalid_jurisdiction"


class Unauthorized(RequestError):
    """Missing or wrong inbound bearer token."""

    status = 401
    code = "unauthorized"
    error_type = "authentication_error"

    def headers(self) -> Mapping[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class MethodNotAllowed(RequestError):
    """The path is served, but not for this method."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, method: str, allowed: Iterable[str]) -> None:
        super().__init__(f"method {method} is not allowed here")
        self.allowed = ", ".join(sorted(allowed))

    def headers(self) -> Mapping[str, str]:
        return {"Allow": self.allowed}


class PolicyDenied(RequestError):
    """Policy forbids the requested model for this request's jurisdiction."""

    status = 403
    code = "policy_denied"
    error_type = "permission_error"

    def __init__(self, message: str, *, rule_id: str, param: str | None = "model") -> None:
        super().__init__(message, param=param)
        self.rule_id = rule_id

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["rule_id"] = self.rule_id
        return body


class NotFound(RequestError):
    """No endpoint at this path."""

    status = 404
    code = "not_found"


class MisdirectedRequest(RequestError):
    """The Host header names another site (a DNS-rebinding page, a misrouted client)."""

    status = 421
    code = "misdirected_request"


class UnknownModel(RequestError):
    """The model is neither a catalog model, a route nor a panel."""

    status = 404
    code = "unknown_model"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"unknown model {model!r}: not a catalog model, route or fusion panel "
            "(GET /v1/models lists them)",
            param="model",
        )


class RequestTimeout(RequestError):
    """The request body did not arrive within `server.body_timeout_s`."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(RequestError):
    """The request body is over the configured limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(RequestError):
    """The request body is not declared as JSON."""

    status = 415
    code = "unsupported_media_type"


class UpstreamRejected(RequestError):
    """The provider refused the caller's payload; we pass the refusal on, sanitized.

    Its status mirrors the provider's (400, 404, 413 or 422): the one error whose status is
    the upstream's, given when it is made.
    """

    code = "upstream_rejected"

    def __init__(self, message: str, *, upstream_status: int) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status if upstream_status in (400, 404, 413, 422) else 400

    @property
    def http_status(self) -> int:
        return self.upstream_status


class ContextLengthExceeded(UpstreamRejected):
    """The provider refused the payload as longer than the model's context window."""

    code = "context_length_exceeded"


class ContentPolicyRefused(UpstreamRejected):
    """The provider refused the payload under its content policy."""

    code = "content_policy"


# --- one upstream attempt -----------------------------------------------------


class ProviderError(RouterError):
    """One upstream attempt failed; `outcome` says how it counts."""

    code = "provider_error"
    outcome: ClassVar[Outcome] = Outcome.PROVIDER_FAULT

    def __init__(self, message: str, *, provider: str, upstream_status: int | None = None):
        super().__init__(message)
        self.provider = provider
        self.upstream_status = upstream_status

    @property
    def counts_against_breaker(self) -> bool:
        """Only provider faults move a breaker towards open."""
        return self.outcome is Outcome.PROVIDER_FAULT


class ProviderTimeout(ProviderError):
    """A clock ran out: connect, first byte, stream idle."""

    code = "provider_timeout"

    def __init__(self, message: str, *, provider: str, phase: str) -> None:
        super().__init__(message, provider=provider)
        self.phase = phase


class ProviderUnavailable(ProviderError):
    """Connection refused or reset, DNS, TLS, 5xx, 529 or an unexpected redirect."""

    code = "provider_unavailable"


class ProviderMalformed(ProviderError):
    """The provider answered with something we cannot parse."""

    code = "provider_malformed"


class ResponseTooLarge(ProviderMalformed):
    """The body or stream grew past the response cap; reading stopped there."""

    code = "response_too_large"


class StreamTruncated(ProviderError):
    """The stream ended before its protocol's terminal marker."""

    code = "stream_truncated"


class StaleConnection(ProviderError):
    """The pooled keep-alive connection carrying the request was closed by the server before any
    byte of the answer (it dropped the idle connection as we reused it): no fault of the
    provider's, and routing sends the request once more, at once, on a new connection. The
    attempt is reported like any other, since the provider may have seen it."""

    code = "stale_connection"
    outcome = Outcome.NEUTRAL


class ProviderRateLimited(ProviderError):
    """429: rate limited, maybe with Retry-After (`rate_limited` builds this or its subclass)."""

    code = "provider_rate_limited"
    outcome = Outcome.THROTTLED
    quota_exhausted: ClassVar[bool] = False

    def __init__(self, message: str, *, provider: str, retry_after: float | None = None) -> None:
        super().__init__(message, provider=provider, upstream_status=429)
        self.retry_after = retry_after


class ProviderQuotaExhausted(ProviderRateLimited):
    """The account's quota or credit is spent: a 429 (or Anthropic's 400) that waiting won't fix."""

    code = "provider_quota_exhausted"  # its own alert
    quota_exhausted = True


class ProviderAuthFailed(ProviderError):
    """401/403 from the provider: our credential is wrong; other providers may serve."""

    code = "provider_auth_failed"


class ProviderRejected(ProviderError):
    """The provider refused the payload (400/404/413/422): a caller fault."""

    code = "provider_rejected"
    outcome = Outcome.CALLER_FAULT

    def __init__(
        self, message: str, *, provider: str, upstream_status: int, reason: str = "invalid_request"
    ) -> None:
        super().__init__(message, provider=provider, upstream_status=upstream_status)
        self.reason = reason  # invalid_request | context_length_exceeded | content_policy

    def to_request_error(self) -> UpstreamRejected:
        """What the caller sees: the provider's status and a sanitized reason."""
        kind = {
            "context_length_exceeded": ContextLengthExceeded,
            "content_policy": ContentPolicyRefused,
        }.get(self.reason, UpstreamRejected)
        return kind(
            f"provider {self.provider!r} rejected the request ({self.reason})",
            upstream_status=self.upstream_status or 400,
        )


class BreakerOpen(ProviderError):
    """The target's breaker is open (or its half-open probe is taken): not called."""

    code = "breaker_open"
    outcome = Outcome.NEUTRAL

    def __init__(self, message: str, *, provider: str, retry_after: float | None = None) -> None:
        super().__init__(message, provider=provider)
        self.retry_after = retry_after


# --- the request as a whole ----------------------------------------------------


class ServiceError(RouterError):
    """The request was valid but could not be served."""

    status = 503
    code = "service_unavailable"


class _RetryAfterMixin:
    retry_after: float | None

    def headers(self) -> Mapping[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class Overloaded(_RetryAfterMixin, ServiceError):
    """Too many requests in flight: shed rather than queue."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDown(_RetryAfterMixin, ServiceError):
    """The sidecar is stopping: a new request, or one still running when the grace ran out."""

    code = "shutting_down"
    CANCEL_MESSAGE: ClassVar[str] = "fusion-router: shutdown grace spent"  # `Task.cancel(msg)`

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @classmethod
    def cut(cls, exc: BaseException) -> bool:
        """Was this cancellation the shutdown's, at the end of its grace (not a client's)?"""
        return exc.args == (cls.CANCEL_MESSAGE,)


class RateLimited(_RetryAfterMixin, ServiceError):
    """Every allowed target asked us to wait; the caller gets the (capped) wait."""

    status = 429
    code = "rate_limited"
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoEligibleModel(ServiceError):
    """Policy left no target for this request."""

    code = "no_eligible_model"


class AllUpstreamsUnavailable(_RetryAfterMixin, ServiceError):
    """Every allowed target is open or cooling down; never routed outside policy."""

    code = "all_upstreams_unavailable"

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@value
class AttemptRecord:
    """One upstream attempt as reported to the caller and the logs."""

    provider: str
    model: str
    outcome: str
    code: str
    status: int | None
    duration_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "outcome": self.outcome,
            "code": self.code,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 1),
        }


class AllProvidersFailed(ServiceError):
    """Every attempt failed; the attempts are listed."""

    status = 502
    code = "all_providers_failed"

    def __init__(self, message: str, *, attempts: Sequence[AttemptRecord]) -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["attempts"] = [a.as_dict() for a in self.attempts]
        return body


class PanelExhausted(ServiceError):
    """A fusion panel could not seat its quorum."""

    status = 502
    code = "panel_exhausted"

    def __init__(self, message: str, *, seats: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(message)
        self.seats = tuple(seats)

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["seats"] = list(self.seats)
        return body


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before an answer was complete."""

    status = 504
    code = "deadline_exceeded"


def is_retryable_status(status: int) -> bool:
    """5xx and 529 are worth another attempt; everything else is decided by class."""
    return status >= 500


def attempt_headers(records: Sequence[AttemptRecord]) -> dict[str, str]:
    """`X-Router-Attempts` / `X-Router-Attempted`: the upstream calls made, in order."""
    return attempted_headers([r.provider for r in records if r.outcome != "skipped"])


def attempted_headers(providers: Sequence[str]) -> dict[str, str]:
    """The same headers from the providers called, in order."""
    return {"X-Router-Attempts": str(len(providers)), "X-Router-Attempted": ",".join(providers)}
