"""structlog configuration: JSON lines on stdout (console on a TTY), with secrets redacted.

Event names are stable dotted identifiers (`request.completed`,
`provider.attempt_failed`, `config.embedded_default`, …; the README lists
them). The redaction processor runs last before rendering, so nothing any
other processor adds can carry a key out.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from router.tracing import add_trace_ids

_SECRET_KEYS = frozenset(
    {
        "authorization",
        "x-api-key",
        "x-goog-api-key",
        "api_key",
        "apikey",
        "key",
        "token",
        "cookie",
        "set-cookie",
        "password",
        "secret",
    }
)
_SECRET_VALUE = re.compile(
    r"(sk-ant-[A-Za-z0-9_\-]{6,}|sk-[A-Za-z0-9_\-]{6,}|AIza[A-Za-z0-9_\-]{6,}|Bearer\s+[A-Za-z0-9._~+/\-]{6,}=*)"
)
REDACTED = "**********"


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return (
            _SECRET_VALUE.sub(REDACTED, value)
            if ("sk-" in value or "AIza" in value or "Bearer" in value)
            else value
        )
    if depth > 6:
        return value
    if isinstance(value, dict):
        return {
            k: (REDACTED if str(k).lower() in _SECRET_KEYS else _scrub(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v, depth + 1) for v in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask values under secret-looking keys and key-shaped substrings anywhere."""
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def _json(value: Any, **options: Any) -> str:
    """structlog's serializer: orjson (several times the standard library), as text."""
    return orjson.dumps(
        value, default=options.get("default"), option=orjson.OPT_NON_STR_KEYS
    ).decode()


def configure(
    level: str = "info", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog once for the process (the CLI calls this; tests capture instead)."""
    out = stream or sys.stdout
    use_json = json if json is not None else not out.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json)
        if use_json
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_trace_ids,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks
            if use_json
            else structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )


def get_logger() -> structlog.typing.FilteringBoundLogger:
    """The router's logger."""
    return structlog.get_logger("router")  # type: ignore[no-any-return]
