"""Finished spans shipped to an exporter process, so OTLP encoding and sending never hold our GIL.

The SDK's `BatchSpanProcessor` encodes protobuf and sends HTTP on a thread of this process:
pure-Python work that holds the GIL the event loop needs (about a tenth of the process's CPU
with every span exported, in bursts that stretch the tail). Here an ended span is a flat
tuple of plain values (`compact` for an SDK span; `span_recorder.RecordedSpan.compact`),
buffered (`SpanShipper.ship`); a flusher thread marshals the
buffer in small chunks (each a fraction of a millisecond) down a pipe to a child process that
rebuilds each span exactly (`rebuild`) and exports it with the SDK's own OTLP/HTTP exporter,
configured by the same `OTEL_*` variables. What is exported is what the SDK would have
exported: `tests/test_span_shipping.py` encodes both and compares the bytes.

Bounded like the SDK's processor: past `MAX_QUEUE` buffered spans, new ones are dropped and
counted. A dead or slow collector only fills the child's side; a dead child drops spans, never
a request. `force_flush` and `shutdown` wait for the child to have exported what was sent.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import select
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

MAX_QUEUE = 2048  # spans buffered before new ones are dropped (the SDK's default)
CHUNK = 64  # spans per message: one marshal holds the GIL for a fraction of a millisecond
FLUSH_EVERY_S = 0.2  # how often the flusher sends what has ended
EXPORT_AT_MOST = 512  # spans in one export request
FLUSH = b"flush"  # parent -> child: export what you have, then answer DONE
DONE = b"done"

Compact = tuple[Any, ...]


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


def _sender(exporter: Any, encoder: Any, resource: Resource, scope: InstrumentationScope) -> Any:
    """How the exporter process sends a batch: our encoding (`otlp_encoding`, the SDK's bytes)
    through the SDK exporter's own HTTP client (its headers, compression, retries); or, should
    a later SDK not have that client, the SDK's exporter on rebuilt spans."""
    client = getattr(exporter, "_client", None)
    if client is None or not hasattr(client, "export"):
        return lambda items: exporter.export([rebuild(i, resource, scope) for i in items])
    return lambda items: client.export(encoder.request(items))


def child_main() -> None:
    """The exporter process: its settings in the first frame on stdin, then chunks of spans
    and flush requests; what queued up is sent as one export, and a flush is answered on the
    acknowledgement pipe (the fd in `ROUTER_SPAN_ACK_FD`) once everything before it is sent;
    it ends when stdin closes (the sidecar shut down or died)."""
    frames = FrameReader(sys.stdin.fileno())
    first = frames.batch()
    if not first:
        return
    settings = marshal.loads(first[0])  # noqa: S302  # our parent's, on a pipe of our own
    environ: dict[str, str] = settings["environ"]
    os.environ.update(environ)  # the exporter reads its other OTEL_* settings itself
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from router import logs
    from router.otlp_encoding import Encoder

    logs.configure(environ.get("ROUTER_LOG_LEVEL", "warning"), json=True)
    ack = os.fdopen(int(os.environ["ROUTER_SPAN_ACK_FD"]), "wb", buffering=0)
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").rstrip("/") + "/v1/traces"
    )
    timeout = float(environ.get("OTEL_EXPORTER_OTLP_TIMEOUT", "10") or 10)
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=timeout)
    encoder = Encoder(settings["resource"], settings["scope"], settings["version"])
    resource = Resource(settings["resource"])
    send = _sender(
        exporter, encoder, resource, InstrumentationScope(settings["scope"], settings["version"])
    )
    pending: list[Compact] = []
    batch: list[bytes] | None = first[1:]  # what came with the settings
    while batch is not None:
        for message in batch:
            if message == FLUSH:
                if pending:
                    send(pending)
                    pending = []
                ack.write(DONE)
                continue
            pending += marshal.loads(message)  # noqa: S302  # our parent's, on our own pipe
            if len(pending) >= EXPORT_AT_MOST:
                send(pending)
                pending = []
        if pending:
            send(pending)
            pending = []
        batch = frames.batch()
    exporter.shutdown()  # type: ignore[no-untyped-call]


class SpanShipper:
    """Ended spans (`compact` tuples) to the exporter process (see the module docstring)."""

    def __init__(
        self,
        environ: Mapping[str, str],
        resource: Resource,
        scope: tuple[str, str | None],
    ) -> None:
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
        self._buffer: list[Compact] = []
        self._lock = threading.Lock()  # the flusher's against flush/shutdown callers
        self._wake = threading.Event()
        self._stopped = False
        self.dropped = 0
        self._flusher = threading.Thread(
            target=self._run, name="fusion-router-span-shipper", daemon=True
        )
        self._flusher.start()

    def ship(self, span: Compact) -> None:
        """Buffer one ended span (dropped, and counted, when the buffer is full)."""
        if len(self._buffer) >= MAX_QUEUE:
            self.dropped += 1
            return
        self._buffer.append(span)
        if len(self._buffer) >= MAX_QUEUE // 2:
            self._wake.set()

    def _send(self) -> bool:
        """Send what is buffered, a chunk at a time; False when the child is gone."""
        with self._lock:
            taken, self._buffer = self._buffer, []
            try:
                for start in range(0, len(taken), CHUNK):
                    self._pipe.write(frame(marshal.dumps(taken[start : start + CHUNK])))
                self._pipe.flush()
            except (OSError, ValueError):
                self.dropped += len(taken)
                return False
            return True

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(FLUSH_EVERY_S)
            self._wake.clear()
            if self._buffer and not self._send():
                return

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send everything ended so far and wait until the child has exported it."""
        if not self._send():
            return False
        with self._lock:
            try:
                self._pipe.write(frame(FLUSH))
                self._pipe.flush()
                ready, _, _ = select.select([self._ack], [], [], timeout_millis / 1000)
                return bool(ready) and self._ack.read(len(DONE)) == DONE
            except (OSError, ValueError):
                return False

    def shutdown(self) -> None:
        """Flush, close the pipe (the child exports what it has and exits), wait for it."""
        if self._stopped:
            return
        self.force_flush(10_000)
        self._stopped = True
        self._wake.set()
        self._flusher.join(timeout=2)
        with contextlib.suppress(OSError, ValueError):
            self._pipe.close()
        try:
            self._child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        self._ack.close()


__all__: Sequence[str] = ("SpanShipper", "child_main", "compact", "rebuild")
