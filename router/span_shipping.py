"""Ended spans to the OTLP collector: encoded cheaply between requests, or in a process of their own.

The SDK's `BatchSpanProcessor` encodes protobuf through a Python object per span, attribute
and value, then sends HTTP, on a thread of this process: work that holds the GIL the event
loop needs (about a tenth of the process's CPU with every span exported, in bursts that
stretch the tail). Here an ended span is a flat tuple of plain values (`compact` for an SDK
span; `span_recorder.RecordedSpan.compact`), queued (`ship`, bounded like the SDK's processor
and by its variables: past `OTEL_BSP_MAX_QUEUE_SIZE` waiting spans new ones are dropped), and a
flusher thread hands the queue on every `OTEL_BSP_SCHEDULE_DELAY` (200 ms here). Every span
that never reaches the collector is counted by reason (`router_spans_dropped_total`). The
queue is handed on one of two ways:

- `SpanSender` (the default, `ROUTER_SPAN_EXPORT=thread`): a span is encoded as it ends with
  `otlp_encoding` (the SDK encoder's bytes, several times faster: a few microseconds), only
  bytes wait (nothing for the garbage collector to traverse), and the flusher thread sends
  them as one request through the SDK exporter's own HTTP client, which is I/O.
- `SpanShipper` (`ROUTER_SPAN_EXPORT=process`) marshals the spans in chunks down a pipe to an
  exporter process (`child_main`) that encodes and sends them there, so nothing of the export
  runs in this process, for a second interpreter's memory (about 40 MiB).

Measured on a 2-core VM (`ops/bench/README.md`): encoding on the loop beats encoding on a
thread (which competes for the GIL) and matches the process on one core for 38 MiB less;
encoding each span as it ends beats queueing the tuples and encoding them in chunks, whose
objects the collector kept traversing.
The spans are what the SDK would have exported: `tests/test_span_shipping.py` and
`tests/test_otlp_encoding.py` compare the bytes. A dead or slow collector only delays the
flusher; `force_flush` and `shutdown` hand on what is queued and wait for it to be sent.
"""

from __future__ import annotations

import contextlib
import marshal
import math
import os
import select
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

if TYPE_CHECKING:
    from router.otlp_encoding import Encoder

MAX_QUEUE = 2048  # spans waiting before new ones are dropped (OTEL_BSP_MAX_QUEUE_SIZE's default)
CHUNK = 64  # spans per pipe message: one marshal holds the GIL a fraction of a millisecond
FLUSH_EVERY_S = 0.2  # how often the flusher sends what has ended (OTEL_BSP_SCHEDULE_DELAY)
EXPORT_AT_MOST = 512  # spans in one export request
FLUSH = b"flush"  # parent -> child, with a 4-byte number: export what you have, then say DONE
DONE = 0x80000000  # child -> parent, 4 bytes each: DONE | the flush's number, or spans lost

Compact = tuple[Any, ...]
Dropped = Callable[[str, int], None]  # (reason: queue_full or export_failed, how many spans)


@dataclass(frozen=True)
class QueueSettings:
    """How many ended spans may wait, how often they are sent, and how many in one request."""

    max_queue: int = MAX_QUEUE
    flush_every_s: float = FLUSH_EVERY_S
    batch: int = EXPORT_AT_MOST


def queue_settings(environ: Mapping[str, str]) -> QueueSettings:
    """`OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_SCHEDULE_DELAY` (milliseconds) and
    `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, the SDK batch processor's variables; a missing or invalid
    one keeps its default here (2048 spans; 200 ms, where the SDK waits 5 s and sends 25 times
    the spans at once; 512 spans a request)."""

    def positive(name: str) -> float | None:
        try:
            value = float(environ.get(name, ""))
        except ValueError:
            return None
        return value if value > 0 and math.isfinite(value) else None

    size, delay_ms = positive("OTEL_BSP_MAX_QUEUE_SIZE"), positive("OTEL_BSP_SCHEDULE_DELAY")
    batch = positive("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
    return QueueSettings(
        max_queue=int(size) if size is not None and size >= 1 else MAX_QUEUE,
        flush_every_s=delay_ms / 1000 if delay_ms is not None else FLUSH_EVERY_S,
        batch=int(batch) if batch is not None and batch >= 1 else EXPORT_AT_MOST,
    )


def _context(trace_id: int, span_id: int, remote: bool, flags: int, state: str) -> SpanContext:
    return SpanContext(
        trace_id,
        span_id,
        remote,
        TraceFlags(flags),
        TraceState.from_header([state]) if state else TraceState(),
    )


def _items(attributes: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    return tuple(attributes.items()) if attributes else ()


def compact(span: ReadableSpan) -> Compact:
    """`span` as plain values that `marshal` can write: everything the OTLP encoder reads."""
    context = span.context
    parent = span.parent
    assert context is not None  # noqa: S101  # an ended SDK span has its context
    return (
        span.name,
        context.trace_id,
        context.span_id,
        int(context.trace_flags),
        context.trace_state.to_header(),
        (parent.span_id, parent.is_remote, int(parent.trace_flags)) if parent else None,
        span.kind.value,
        span.start_time,
        span.end_time,
        span.status.status_code.value,
        span.status.description,
        _items(span.attributes),
        tuple((e.name, e.timestamp, _items(e.attributes)) for e in span.events),
        tuple(
            (
                link.context.trace_id,
                link.context.span_id,
                int(link.context.trace_flags),
                _items(link.attributes),
            )
            for link in span.links
        ),
    )


def rebuild(item: Compact, resource: Resource, scope: InstrumentationScope) -> ReadableSpan:
    """The `ReadableSpan` `compact` flattened, for the SDK's exporter."""
    (
        name,
        trace_id,
        span_id,
        flags,
        state,
        parent,
        kind,
        start,
        end,
        status_code,
        status_description,
        attributes,
        events,
        links,
    ) = item
    return ReadableSpan(
        name=name,
        context=_context(trace_id, span_id, False, flags, state),
        parent=_context(trace_id, parent[0], parent[1], parent[2], state) if parent else None,
        resource=resource,
        attributes=dict(attributes),
        events=[Event(n, dict(a), timestamp=t) for n, t, a in events],
        links=[Link(_context(t, s, True, f, ""), dict(a)) for t, s, f, a in links],
        kind=SpanKind(kind),
        status=Status(StatusCode(status_code), status_description),
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )


def frame(payload: bytes) -> bytes:
    """`payload` with its length in front (four bytes, big-endian)."""
    return len(payload).to_bytes(4, "big") + payload


class FrameReader:
    """Length-prefixed frames from a file descriptor: blocking for the first, then whatever
    else has already arrived (so the exporter sends what queued up as one request)."""

    def __init__(self, fd: int) -> None:
        self._fd, self._buffer, self.closed = fd, bytearray(), False

    def _fill(self, wait: bool) -> bool:
        if self.closed or (not wait and not select.select([self._fd], [], [], 0)[0]):
            return False
        data = os.read(self._fd, 1 << 20)
        if not data:
            self.closed = True
            return False
        self._buffer += data
        return True

    def _complete(self) -> list[bytes]:
        frames, at = [], 0
        while len(self._buffer) - at >= 4:
            size = int.from_bytes(self._buffer[at : at + 4], "big")
            if len(self._buffer) - at - 4 < size:
                break
            frames.append(bytes(self._buffer[at + 4 : at + 4 + size]))
            at += 4 + size
        del self._buffer[:at]
        return frames

    def batch(self) -> list[bytes] | None:
        """The next frames (at least one), or None once the writer closed and all is read."""
        frames = self._complete()
        while not frames:
            if not self._fill(wait=True):
                return None
            frames = self._complete()
        while self._fill(wait=False):
            frames += self._complete()
        return frames


def otlp_exporter(environ: Mapping[str, str]) -> Any:
    """The SDK's OTLP/HTTP span exporter for these settings (the endpoint and timeout from
    `environ`; headers, compression and certificates from the process's `OTEL_*` variables)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").rstrip("/") + "/v1/traces"
    )
    timeout = float(environ.get("OTEL_EXPORTER_OTLP_TIMEOUT", "10") or 10)
    return OTLPSpanExporter(endpoint=endpoint, timeout=timeout)


def http_post(exporter: Any) -> Callable[[bytes], Any] | None:
    """The SDK exporter's own HTTP client's send of encoded bytes (its headers, compression,
    retries), or None on an SDK whose exporter has no such client."""
    client = getattr(exporter, "_client", None)
    return client.export if client is not None and hasattr(client, "export") else None


def sent(result: Any) -> bool:
    """Whether an export succeeded: the SDK client's result (`success`) or the SDK exporter's
    (`SpanExportResult.SUCCESS`)."""
    return result is SpanExportResult.SUCCESS or getattr(result, "success", False) is True


def posted(post: Callable[[bytes], Any], encoder: Encoder, entries: Sequence[bytes]) -> int:
    """Encoded spans (`Encoder.entry`) sent as one request with `post`: how many did not
    reach the collector."""
    return 0 if sent(post(encoder.wrap(b"".join(entries)))) else len(entries)


def sender(
    exporter: Any, resource: Mapping[str, Any], scope: tuple[str, str | None]
) -> Callable[[Sequence[Compact]], int]:
    """How a batch of spans is sent; it returns how many did not reach the collector. Encoded
    by `otlp_encoding` (the SDK's bytes; a span it cannot write is left out and counted) and
    sent with `http_post`; or, should a later SDK not have that client, the SDK's exporter on
    rebuilt spans."""
    post = http_post(exporter)
    if post is None:
        sdk_resource, sdk_scope = Resource(dict(resource)), InstrumentationScope(*scope)

        def export(items: Sequence[Compact]) -> int:
            spans = [rebuild(i, sdk_resource, sdk_scope) for i in items]
            return 0 if sent(exporter.export(spans)) else len(items)

        return lambda items: _counted(export, items)
    from router.otlp_encoding import UNENCODABLE, Encoder

    encoder = Encoder(resource, scope[0], scope[1])

    def send(items: Sequence[Compact]) -> int:
        entries = []
        for item in items:
            with contextlib.suppress(*UNENCODABLE):
                entries.append(encoder.entry(item))
        return len(items) - len(entries) + (posted(post, encoder, entries) if entries else 0)

    return lambda items: _counted(send, items)


def _counted(send: Callable[[Sequence[Any]], int], items: Sequence[Any]) -> int:
    """`send(items)`: how many did not reach the collector (all of them, if it raised)."""
    try:
        return send(items)
    except Exception:  # noqa: BLE001  # the SDK's client logs its own failures
        return len(items)


def child_main() -> None:
    """The exporter process: its settings in the first frame on stdin, then chunks of spans
    and flush requests; what queued up is sent as one export. On the acknowledgement pipe (the
    fd in `ROUTER_SPAN_ACK_FD`) it writes how many spans an export lost, and DONE for a flush
    once everything before it is sent; it ends when stdin closes (the sidecar shut down or
    died)."""
    frames = FrameReader(sys.stdin.fileno())
    first = frames.batch()
    if not first:
        return
    settings = marshal.loads(first[0])  # noqa: S302  # our parent's, on a pipe of our own
    environ: dict[str, str] = settings["environ"]
    os.environ.update(environ)  # the exporter reads its other OTEL_* settings itself
    from router import logs

    logs.configure(environ.get("ROUTER_LOG_LEVEL", "warning"), json=True)
    ack = os.fdopen(int(os.environ["ROUTER_SPAN_ACK_FD"]), "wb", buffering=0)
    exporter = otlp_exporter(environ)
    export = sender(exporter, settings["resource"], (settings["scope"], settings["version"]))
    at_most = queue_settings(environ).batch

    def send(spans: list[Compact]) -> None:
        lost = export(spans) if spans else 0
        if lost:
            ack.write(lost.to_bytes(4, "big"))

    pending: list[Compact] = []
    batch: list[bytes] | None = first[1:]  # what came with the settings
    while batch is not None:
        for message in batch:
            if message.startswith(FLUSH) and len(message) == len(FLUSH) + 4:
                send(pending)
                pending = []
                number = int.from_bytes(message[len(FLUSH) :], "big")
                ack.write((DONE | number).to_bytes(4, "big"))
                continue
            pending += marshal.loads(message)  # noqa: S302  # our parent's, on our own pipe
            if len(pending) >= at_most:
                send(pending)
                pending = []
        send(pending)
        pending = []
        batch = frames.batch()
    exporter.shutdown()


class _Buffered:
    """Ended spans queued and handed on by a flusher thread every `flush_every_s`, or when
    half the queue waits (`_deliver`). At most `max_queue` spans wait besides the batch being
    sent (as in the SDK's processor); past that new ones are dropped. Every span that never
    reaches the collector is counted by reason (`dropped`) and reported to `on_dropped` (the
    `router_spans_dropped_total` metric). The queue is a deque (appends and pops are atomic),
    so `ship` takes no lock; `_taking` orders the takers, `_delivering` the deliveries."""

    def __init__(self, queue: QueueSettings, on_dropped: Dropped | None) -> None:
        self._queue = queue
        self._buffer: deque[Any] = deque()
        self._taking = threading.Lock()
        self._delivering = threading.Lock()  # the flusher's against flush/shutdown callers
        self._wake = threading.Event()
        self._stopped = False
        self._on_dropped = on_dropped
        self.dropped: Counter[str] = Counter()
        self._flusher = threading.Thread(
            target=self._run, name="fusion-router-span-export", daemon=True
        )

    def _queue_up(self, item: Any) -> None:
        """Queue one ended span (dropped, and counted, when the queue is full, or once the
        exporter has shut down)."""
        if self._stopped:
            self._drop("export_failed", 1)
            return
        waiting = len(self._buffer)
        if waiting >= self._queue.max_queue:
            self._drop("queue_full", 1)
            return
        self._buffer.append(item)
        if waiting + 1 >= self._queue.max_queue // 2:
            self._wake.set()

    def _drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] += count
            if self._on_dropped is not None:
                with contextlib.suppress(Exception):  # a metric must never stop the export
                    self._on_dropped(reason, count)

    def _take(self) -> list[Any]:
        """Everything queued, oldest first."""
        with self._taking:
            pop = self._buffer.popleft
            return [pop() for _ in range(len(self._buffer))]

    def _deliver(self, items: list[Any]) -> None:
        """Send `items`; whatever does not reach the collector is counted (`_drop`)."""
        raise NotImplementedError

    def _hand_on(self) -> None:
        """Deliver what is queued."""
        with self._delivering:
            self._deliver(self._take())

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self._queue.flush_every_s)
            self._wake.clear()
            self._hand_on()


class SpanSender(_Buffered):
    """Spans encoded as they end and sent by a thread of this process
    (`ROUTER_SPAN_EXPORT=thread`, the default): an ended span is written to its OTLP bytes at
    once (a few microseconds, on whichever task ended it) and only bytes wait, so nothing of it
    stays for the garbage collector to traverse; the flusher thread joins them into one
    request and sends it, which is I/O. No second process, and no thread competing with the
    loop for the GIL while it encodes."""

    def __init__(
        self,
        environ: Mapping[str, str],
        resource: Resource,
        scope: tuple[str, str | None],
        on_dropped: Dropped | None = None,
    ) -> None:
        super().__init__(queue_settings(environ), on_dropped)
        from router.otlp_encoding import UNENCODABLE, Encoder

        self._unencodable = UNENCODABLE
        self._exporter = otlp_exporter(environ)
        self._encoder = Encoder(dict(resource.attributes), scope[0], scope[1])
        self._post = http_post(self._exporter)
        # an SDK without the exporter's client: the spans go to its exporter as they are
        self._fallback = (
            sender(self._exporter, dict(resource.attributes), scope) if self._post is None else None
        )
        self._flusher.start()

    def ship(self, span: Compact) -> None:
        """Queue one ended span, encoded (or, for the SDK's exporter, as it is). A span the
        encoder cannot write (an attribute value OTLP has no type for) is dropped and counted:
        it never fails the request that ended it."""
        if self._post is None:
            self._queue_up(span)
            return
        try:
            encoded = self._encoder.entry(span)
        except self._unencodable:
            self._drop("export_failed", 1)
            return
        self._queue_up(encoded)

    def _deliver(self, items: list[Any]) -> None:
        """Send the queued spans as one request; those the collector did not take are counted
        as dropped (the SDK's client logs why), and never stop the next."""
        post, fallback, at_most = self._post, self._fallback, self._queue.batch
        for start in range(0, len(items), at_most):
            batch = items[start : start + at_most]
            if post is not None:
                self._drop("export_failed", _counted(partial(posted, post, self._encoder), batch))
            elif fallback is not None:
                self._drop("export_failed", fallback(batch))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._hand_on()
        return True

    def shutdown(self) -> None:
        """Stop taking spans (later ones are counted), send what is queued, stop."""
        if self._stopped:
            return
        self._stopped = True
        self._wake.set()
        self._flusher.join(timeout=2)
        self._hand_on()
        self._exporter.shutdown()


class SpanShipper(_Buffered):
    """Spans marshalled down a pipe to an exporter process (`ROUTER_SPAN_EXPORT=process`):
    encoding and sending never hold this process's GIL, for a second process's memory. The
    child reports spans it could not export on the acknowledgement pipe, read here at every
    flush."""

    def __init__(
        self,
        environ: Mapping[str, str],
        resource: Resource,
        scope: tuple[str, str | None],
        on_dropped: Dropped | None = None,
    ) -> None:
        super().__init__(queue_settings(environ), on_dropped)
        ack_read, ack_write = os.pipe()
        package_root = str(Path(__file__).resolve().parent.parent)
        python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        self._child = subprocess.Popen(  # our own interpreter and module
            [sys.executable, "-c", "from router.span_shipping import child_main; child_main()"],
            stdin=subprocess.PIPE,
            pass_fds=(ack_write,),
            env={
                **os.environ,
                "PYTHONPATH": python_path,
                "ROUTER_SPAN_ACK_FD": str(ack_write),
            },
        )
        os.close(ack_write)
        self._ack = os.fdopen(ack_read, "rb", buffering=0)
        self._flushes = 0  # the number of the last flush asked for
        assert self._child.stdin is not None  # noqa: S101  # asked for above
        self._pipe = self._child.stdin
        settings = {
            "environ": dict(environ),
            "resource": dict(resource.attributes),
            "scope": scope[0],
            "version": scope[1],
        }
        self._pipe.write(frame(marshal.dumps(settings)))
        self._pipe.flush()
        self._flusher.start()

    def ship(self, span: Compact) -> None:
        """Queue one ended span, as it is (the exporter process encodes it)."""
        self._queue_up(span)

    def _deliver(self, spans: list[Compact]) -> None:
        self._acknowledged(wait_s=None)
        chunks = [self._marshalled(spans[at : at + CHUNK]) for at in range(0, len(spans), CHUNK)]
        try:
            for chunk, _count in chunks:
                self._pipe.write(frame(chunk))
            self._pipe.flush()
        except (OSError, ValueError):  # the child is gone, or the pipe closed: all counted
            self._drop("export_failed", sum(count for _, count in chunks))

    def _marshalled(self, spans: list[Compact]) -> tuple[bytes, int]:
        """`spans` for the pipe, and how many: a span marshal cannot write (a value of a type
        it does not know) is dropped and counted, the others go."""
        try:
            return marshal.dumps(spans), len(spans)
        except ValueError:
            kept = []
            for span in spans:
                try:
                    marshal.dumps(span)
                except ValueError:
                    self._drop("export_failed", 1)
                else:
                    kept.append(span)
            return marshal.dumps(kept), len(kept)

    def _acknowledged(self, wait_s: float | None, flush: int | None = None) -> bool:
        """Read the child's reports: spans it lost are counted; True once the DONE of flush
        number `flush` is read (waiting until `wait_s` has passed; None: only what has
        arrived). An earlier flush's late DONE is passed over."""
        deadline = time.monotonic() + (wait_s or 0)
        while True:
            ready, _, _ = select.select([self._ack], [], [], max(0, deadline - time.monotonic()))
            if not ready:
                return False
            record = self._ack.read(4)
            if len(record) < 4:  # the child is gone
                return False
            value = int.from_bytes(record, "big")
            if value & DONE:
                if flush is not None and value == DONE | flush:
                    return True
                continue
            self._drop("export_failed", value)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send everything ended so far and wait until the child has exported it."""
        self._hand_on()
        with self._delivering:
            self._flushes = number = (self._flushes + 1) % DONE
            try:
                self._pipe.write(frame(FLUSH + number.to_bytes(4, "big")))
                self._pipe.flush()
                return self._acknowledged(timeout_millis / 1000, number)
            except (OSError, ValueError):
                return False

    def shutdown(self) -> None:
        """Stop taking spans (later ones are counted), flush, close the pipe (the child
        exports what it has and exits), wait for it."""
        if self._stopped:
            return
        self._stopped = True
        self._wake.set()
        self._flusher.join(timeout=2)
        self.force_flush(10_000)
        with contextlib.suppress(OSError, ValueError):
            self._pipe.close()
        try:
            self._child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        self._ack.close()


__all__: Sequence[str] = ("SpanSender", "SpanShipper", "child_main", "compact", "rebuild")
