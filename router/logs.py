"""structlog configuration: JSON lines on stdout (console on a TTY), with secrets redacted.

Event names are stable dotted identifiers (`request.completed`,
`provider.attempt_failed`, `config.embedded_default`, …; the README lists
them). The redaction processor runs last before rendering, so nothing any
other processor adds can carry a key out.

Everything else the process would print goes the same way: the standard library's `logging`
(aiohttp's server, web and access loggers, asyncio's), Python warnings and uncaught exceptions
(the main thread's, other threads', and those Python can only report, in `__del__`) become
events of this chain (`python.log`, `python.warning`, `python.uncaught`), so every line the
process writes is one JSON object that went through the redaction. A malformed request that
aiohttp's parser refuses is logged as `server.bad_request` with the exception's class and status
only: the parser's message quotes the request's bytes (token and prompt included).

Tracebacks carry frames (file, line, function) and never local variables; the text of an
exception that may quote request or response bytes (the HTTP parsers', pydantic's validation
errors) is replaced by its class and status wherever it would appear.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from types import TracebackType
from typing import Any, TextIO

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import ExcInfo, Processor

from router.tracing import add_trace_ids
from router.upstream_errors import BadResponse

# The events this module logs on behalf of code that does not use structlog.
HTTP_BAD_REQUEST = "server.bad_request"
PYTHON_LOG = "python.log"
PYTHON_WARNING = "python.warning"
PYTHON_UNCAUGHT = "python.uncaught"

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


_NOTHING_TO_HIDE = frozenset({int, float, bool, type(None)})


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask values under secret-looking keys and key-shaped substrings anywhere.

    `_scrub` of every value, with its common cases inline: a number, bool or None is left as
    it is, a string is searched in place and a list of strings without a secret is left as it
    is (`_scrub` would copy it), so a request's log line (about twenty fields) costs 2.9 µs
    here instead of 4.5 (`tests/test_log_hygiene.py` holds it to the plain version by a
    property)."""
    for key, value in event_dict.items():  # (values replaced in place: the keys stay)
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = REDACTED
        elif value.__class__ is str:
            if "sk-" in value or "AIza" in value or "Bearer" in value:
                event_dict[key] = _SECRET_VALUE.sub(REDACTED, value)
        elif value.__class__ not in _NOTHING_TO_HIDE and not (
            value.__class__ is list
            and all(
                item.__class__ is str and not ("sk-" in item or "AIza" in item or "Bearer" in item)
                for item in value
            )
        ):
            event_dict[key] = _scrub(value)
    return event_dict


def _json(value: Any, **options: Any) -> str:
    """structlog's serializer: orjson (several times the standard library), as text."""
    return orjson.dumps(
        value, default=options.get("default"), option=orjson.OPT_NON_STR_KEYS
    ).decode()


def utc_timestamper(clock: Callable[[], int] = time.time_ns) -> Processor:
    """A processor stamping `timestamp`: ISO 8601 in UTC with microseconds
    (`2026-12-06T05:31:39.301268Z`), as structlog's `TimeStamper(fmt="iso", utc=True)` writes
    it but always with the six digits, for half its cost: the date and time of day are
    formatted once a second (`clock` gives nanoseconds since the epoch)."""
    formatted: tuple[int, str] = (-1, "")  # (second, its text), replaced whole: thread-safe

    def stamp(
        _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        nonlocal formatted
        second, nanoseconds = divmod(clock(), 1_000_000_000)
        cached = formatted  # (read once: another thread may replace it meanwhile)
        if cached[0] != second:
            cached = formatted = (
                second,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
            )
        event_dict["timestamp"] = f"{cached[1]}.{nanoseconds // 1000:06d}Z"
        return event_dict

    return stamp


class LineWriter:
    """structlog's logger: each rendered line written to `stream` (None: whatever
    `sys.stdout` is at the time) with its newline in one `write` and flushed, under one lock
    per process (structlog's `PrintLogger` makes two writes of a `print`, for about twice the
    cost)."""

    _lock = threading.Lock()  # (one stream per process: stdout, or stderr for a CLI command)

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(message + "\n")
            stream.flush()

    log = debug = info = warn = warning = error = err = fatal = critical = exception = msg


# --- exceptions: frames, never locals, never quoted traffic ------------------------------------

_MIN_WITHHELD = 8  # shorter texts cannot quote anything worth hiding, and would match too much


def _quotes_traffic(exc: BaseException) -> bool:
    """Whether an exception's text may quote the bytes of a request or a response.

    aiohttp's parser errors (`BadHttpMessage`, `BadStatusLine`, `LineTooLong`, …) put a snippet
    of the offending bytes in their message and `args`; httptools' (the upstream client's
    parser, also in `BadResponse`) may; pydantic's validation errors carry `input_value=…`.
    """
    if isinstance(exc, HttpProcessingError | BadResponse):
        return True
    return type(exc).__module__.startswith(("httptools", "pydantic"))


def _summary(exc: BaseException) -> str:
    """What stands for the text of an exception that may quote traffic."""
    status = getattr(exc, "code", None)
    status_text = f" {status}" if isinstance(status, int) and status else ""
    withheld = "message withheld: it may quote request or response bytes"
    return f"{type(exc).__name__}{status_text} ({withheld})"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, its causes and contexts, and the members of exception groups, each once."""
    pending: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while pending and len(seen) < 100:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__]
        if isinstance(current, BaseExceptionGroup):
            pending += current.exceptions


def _safe_text(function: Any, value: Any) -> str:
    try:
        return str(function(value))
    except Exception:  # noqa: BLE001  # a broken __str__ or __repr__ hides nothing
        return ""


def _withheld(*exceptions: BaseException | None) -> list[tuple[str, str]]:
    """(text, replacement) for every text of an exception in the chains of `exceptions` that
    may quote traffic: its str and repr, its string arguments and message, and each of their
    lines; longest first, so that a whole text is replaced before any of its parts."""
    found: dict[str, str] = {}
    for current in (e for exc in exceptions if exc is not None for e in _chain(exc)):
        if not _quotes_traffic(current):
            continue
        summary = _summary(current)
        texts = [_safe_text(str, current), _safe_text(repr, current)]
        for part in [*current.args, getattr(current, "message", None)]:
            if isinstance(part, str | bytes):
                texts += [_safe_text(str, part), _safe_text(repr, part)]
        for text in texts:
            for piece in [text, *(line.strip() for line in text.splitlines())]:
                if len(piece) >= _MIN_WITHHELD and piece != summary:
                    found.setdefault(piece, summary)
    return sorted(found.items(), key=lambda item: len(item[0]), reverse=True)


def _mask(value: Any, withheld: list[tuple[str, str]]) -> Any:
    """`value` (a string, or lists and dicts of them) with every withheld text replaced."""
    if isinstance(value, str):
        for text, replacement in withheld:
            if text in value:
                value = value.replace(text, replacement)
        return value
    if isinstance(value, dict):
        return {k: _mask(v, withheld) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, withheld) for v in value]
    return value


_FRAMES_ONLY = ExceptionDictTransformer(show_locals=False, use_rich=False)


def _exception_dicts(exc_info: ExcInfo) -> Any:
    """structlog's dict tracebacks without locals, and without quoted traffic."""
    withheld = _withheld(exc_info[1])
    return _mask(_FRAMES_ONLY(exc_info), withheld)


def _exception_text(exc_info: ExcInfo) -> str:
    """The standard library's traceback text (which shows no locals), without quoted traffic."""
    text = "".join(traceback.format_exception(*exc_info)).rstrip("\n")
    return str(_mask(text, _withheld(exc_info[1])))


# --- everything that does not log through structlog --------------------------------------------


def _level(levelno: int) -> int:
    """The standard level at or below `levelno` (structlog knows only the five)."""
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return level
    return logging.DEBUG


def _exc_info(
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> ExcInfo | None:
    if exc_type is None or exc is None:
        return None
    return (exc_type, exc, tb)


def _forward(record: logging.LogRecord) -> None:
    """Log a standard-library record as an event of the structlog chain."""
    log = structlog.get_logger("router")
    level = _level(record.levelno)
    exc_info = _exc_info(*record.exc_info) if record.exc_info else None
    exc = exc_info[1] if exc_info else None
    if isinstance(exc, HttpProcessingError) and record.name == "aiohttp.server":
        # aiohttp's parser refused a request: its message and `args` quote the bytes it got
        # (request line, headers, the start of the body), so only the class and status remain.
        fields: dict[str, Any] = {"error": type(exc).__name__, "status": exc.code}
        if isinstance(record.args, tuple) and len(record.args) == 1:
            fields["remote"] = str(record.args[0])  # "Error handling request from %s"
        log.log(min(level, logging.WARNING), HTTP_BAD_REQUEST, **fields)
        return
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001  # arguments that do not fit the format
        message = str(record.msg)
    args = record.args.values() if isinstance(record.args, Mapping) else record.args or ()
    quoted = [a for a in args if isinstance(a, BaseException)]  # "… %r", exc
    fields = {"logger": record.name, "message": _mask(message, _withheld(exc, *quoted))}
    if exc_info is not None:
        fields["exc_info"] = exc_info
    log.log(level, PYTHON_LOG, **fields)


_forwarding = threading.local()


class _Bridge(logging.Handler):
    """The root logger's one handler: every record becomes a structlog event."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(_forwarding, "active", False):
            return  # a record logged while rendering one: never recurse
        _forwarding.active = True
        try:
            _forward(record)
        except Exception:  # noqa: BLE001  # a record must never fail the code that logged it
            with contextlib.suppress(Exception):
                structlog.get_logger("router").log(
                    _level(record.levelno),
                    PYTHON_LOG,
                    logger=record.name,
                    message="(a record that could not be rendered)",
                )
        finally:
            _forwarding.active = False

    def handleError(self, record: logging.LogRecord) -> None:
        """Never print the standard library's plain-text report of a failed record."""


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    structlog.get_logger("router").warning(
        PYTHON_WARNING,
        category=category.__name__,
        message=str(message),
        filename=filename,
        lineno=lineno,
    )


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    structlog.get_logger("router").critical(
        PYTHON_UNCAUGHT, where="main", exc_info=_exc_info(exc_type, exc, tb)
    )


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # as the default hook: a thread that exits is no error
    structlog.get_logger("router").error(
        PYTHON_UNCAUGHT,
        where="thread",
        thread=args.thread.name if args.thread is not None else None,
        exc_info=_exc_info(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _unraisablehook(unraisable: sys.UnraisableHookArgs) -> None:
    structlog.get_logger("router").error(
        PYTHON_UNCAUGHT,
        where="unraisable",
        message=unraisable.err_msg or "Exception ignored in",
        object=type(unraisable.object).__qualname__ if unraisable.object is not None else None,
        exc_info=_exc_info(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback),
    )


_bridge: _Bridge | None = None


def _route_everything_else(level: int) -> None:
    """Send the standard library's logging, warnings and uncaught exceptions through structlog."""
    global _bridge  # noqa: PLW0603 - one bridge per process, replaced on reconfiguration
    root = logging.getLogger()
    if _bridge is not None:
        root.removeHandler(_bridge)
    _bridge = _Bridge()
    root.addHandler(_bridge)
    root.setLevel(level)
    warnings.showwarning = _show_warning
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    sys.unraisablehook = _unraisablehook


def configure(
    level: str = "info", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog once for the process (the CLI calls this; tests capture instead),
    and route the standard library's logging, warnings and uncaught exceptions through it."""
    out = stream or sys.stdout
    use_json = json if json is not None else not out.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json)
        if use_json
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            add_trace_ids,
            utc_timestamper(),
            structlog.processors.ExceptionRenderer(
                _exception_dicts if use_json else _exception_text
            ),
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_args: LineWriter(stream),
        cache_logger_on_first_use=True,
    )
    _route_everything_else(numeric)


def get_logger() -> structlog.typing.FilteringBoundLogger:
    """The router's logger."""
    return structlog.get_logger("router")  # type: ignore[no-any-return]
