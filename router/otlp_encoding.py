"""OTLP/protobuf encoding of flattened spans, byte for byte what the SDK's encoder writes. Pure.

The SDK's `encode_spans` builds a protobuf object per span, attribute and value through
Python calls: about half of what exporting costs. Here the `ExportTraceServiceRequest` is
written directly from `span_shipping.Compact` tuples, in field-number order with the SDK's
conventions (an empty `AnyValue` for None, the status always present, span flags from the
parent's `is_remote`), the fixed fields from precomputed tags, and attributes' `KeyValue`
bytes are remembered per key and value: a sidecar's attributes repeat (methods, routes,
models, providers, statuses), so most cost two dict lookups.
`tests/test_otlp_encoding.py` compares the bytes with the SDK's for real requests' spans.

Field numbers: opentelemetry-proto `trace/v1/trace.proto`, `common/v1/common.proto`,
`collector/trace/v1/trace_service.proto`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from router.span_shipping import Compact

# what encoding a span can raise on a value OTLP has no type for (or one out of its range)
UNENCODABLE: tuple[type[Exception], ...] = (TypeError, ValueError, OverflowError, struct.error)

_HAS_IS_REMOTE = 0x100  # SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = 0x200  # SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


_SMALL = [bytes((n,)) for n in range(128)]  # a varint below 128 is its own byte


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL[value]
    if value < 0:
        value += 1 << 64  # int64: two's complement, ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_TAGS = {(field, wire): bytes((field << 3 | wire,)) for field in range(1, 16) for wire in range(6)}


def _tag(field: int, wire: int) -> bytes:
    tag = _TAGS.get((field, wire))
    return tag if tag is not None else _varint((field << 3) | wire)


_LENGTH_DELIMITED = [b"", *(_TAGS[(field, 2)] for field in range(1, 16))]


def _bytes_field(field: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, message), always written."""
    size = len(payload)
    head = _LENGTH_DELIMITED[field] if field < 16 else _tag(field, 2)
    return head + (_SMALL[size] if size < 128 else _varint(size)) + payload


def _string(field: int, text: str | None) -> bytes:
    """A string field; empty (proto3's default) is left out."""
    return _bytes_field(field, text.encode()) if text else b""


def _fixed64(field: int, value: int | None) -> bytes:
    return _tag(field, 1) + struct.pack("<Q", value) if value else b""


def _fixed32(field: int, value: int) -> bytes:
    return _tag(field, 5) + struct.pack("<I", value) if value else b""


def _uint(field: int, value: int) -> bytes:
    return _tag(field, 0) + _varint(value) if value else b""


def any_value(value: Any) -> bytes:
    """An `AnyValue` message's bytes, as the SDK's `_encode_value` builds it (a oneof: its
    field is written even when it holds the default)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return _tag(2, 0) + _varint(int(value))
    if isinstance(value, str):
        return _bytes_field(1, value.encode())
    if isinstance(value, int):
        return _tag(3, 0) + _varint(value)
    if isinstance(value, float):
        return _tag(4, 1) + struct.pack("<d", value)
    if isinstance(value, bytes):
        return _bytes_field(7, value)
    if isinstance(value, Mapping):
        pairs = b"".join(_bytes_field(1, key_value(str(k), v)) for k, v in value.items())
        return _bytes_field(6, pairs)
    if isinstance(value, Sequence):
        values = b"".join(_bytes_field(1, any_value(v)) for v in value)
        return _bytes_field(5, values)
    raise TypeError(f"an attribute value of type {type(value).__name__}")


def key_value(key: str, value: Any) -> bytes:
    """A `KeyValue` message's bytes (its value always present, as the SDK sets it)."""
    return _string(1, key) + _bytes_field(2, any_value(value))


_TRACE_ID = _TAGS[(1, 2)] + _SMALL[16]  # Span.trace_id: field 1, 16 bytes
_SPAN_ID = _TAGS[(2, 2)] + _SMALL[8]  # Span.span_id: field 2, 8 bytes
_PARENT_ID = _TAGS[(4, 2)] + _SMALL[8]  # Span.parent_span_id: field 4, 8 bytes
_TIMES = struct.Struct("<BQBQ")  # start_time_unix_nano (7) and end_time_unix_nano (8), fixed64
_KINDS = tuple(_uint(6, kind + 1) for kind in range(5))  # the API's SpanKind value + 1
_LOCAL_FLAGS = _fixed32(16, _HAS_IS_REMOTE)
_REMOTE_FLAGS = _fixed32(16, _HAS_IS_REMOTE | _IS_REMOTE)
_VALUES_PER_KEY = 64  # distinct values remembered per attribute key; beyond, encoded each time
_NAMES_REMEMBERED = 1024  # span names remembered (routes and models: a bounded set)
_EVENT_TIME = struct.Struct("<BQ")  # Event.time_unix_nano (1), fixed64
_STATUSES = tuple(_bytes_field(15, _uint(3, code)) for code in range(3))  # no description


class Encoder:
    """Encodes export requests for one resource and instrumentation scope, remembering the
    `KeyValue` bytes of attribute values that repeat."""

    def __init__(
        self,
        resource: Mapping[str, Any],
        scope: str,
        version: str | None,
        scope_attributes: Mapping[str, Any] | None = None,
    ) -> None:
        # per field, per key: {value: (its type, the field's KeyValue bytes)}
        self._remembered: dict[int, dict[str, dict[Any, tuple[type, bytes]]]] = {}
        self._statuses: dict[tuple[int, str | None], bytes] = {}
        self._names: dict[str, bytes] = {}  # span names' field bytes (they repeat)
        self._resource = _bytes_field(1, self._attributes(1, resource.items()))
        self._scope = _bytes_field(
            1,
            _string(1, scope)
            + _string(2, version)
            + self._attributes(3, (scope_attributes or {}).items()),
        )

    def _attributes(self, field: int, items: Iterable[tuple[str, Any]]) -> bytes:
        """Each `KeyValue` as field `field` of its message. A key's first `_VALUES_PER_KEY`
        strings, integers, booleans, Nones and tuples of strings are remembered with their
        type (so `True` and `1` are told apart); floats (0.0 equals -0.0) and other tuples
        (`(0,)` equals `(False,)`) are encoded each time, as are a key's values beyond those
        (request ids, durations)."""
        by_key = self._remembered.setdefault(field, {})
        out = []
        for key, value in items:
            kind = value.__class__
            if not (
                kind is str
                or kind is int
                or kind is bool
                or value is None
                or (kind is tuple and all(v.__class__ is str for v in value))
            ):
                out.append(_bytes_field(field, key_value(key, value)))
                continue
            values = by_key.get(key)
            if values is None:
                values = by_key[key] = {}
            known = values.get(value)
            if known is not None and known[0] is kind:
                out.append(known[1])
                continue
            encoded = _bytes_field(field, key_value(key, value))
            if len(values) < _VALUES_PER_KEY:
                values[value] = (kind, encoded)
            out.append(encoded)
        return b"".join(out)

    def _status(self, code: int, description: str | None) -> bytes:
        status = self._statuses.get((code, description))
        if status is None:
            status = _bytes_field(15, _string(2, description) + _uint(3, code))
            if len(self._statuses) < _VALUES_PER_KEY:
                self._statuses[(code, description)] = status
        return status

    def span(self, item: Compact) -> bytes:
        """One `Span` message's bytes."""
        (
            name,
            trace_id,
            span_id,
            _flags,
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
        out = [_TRACE_ID, trace_id.to_bytes(16, "big"), _SPAN_ID, span_id.to_bytes(8, "big")]
        if state:
            out.append(_string(3, state))
        if parent is not None:
            out += (_PARENT_ID, parent[0].to_bytes(8, "big"))
        encoded_name = self._names.get(name)
        if encoded_name is None:
            encoded_name = _string(5, name)
            if len(self._names) < _NAMES_REMEMBERED:
                self._names[name] = encoded_name
        out.append(encoded_name)
        out.append(_KINDS[kind])
        if start and end:
            out.append(_TIMES.pack(0x39, start, 0x41, end))  # tags: 7 << 3 | 1, 8 << 3 | 1
        else:  # (a zero time is left out, as proto3 leaves out defaults)
            out += (_fixed64(7, start), _fixed64(8, end))
        out.append(self._attributes(9, attributes))
        for event_name, timestamp, event_attributes in events:
            event = (
                _EVENT_TIME.pack(0x09, timestamp)  # tag: 1 << 3 | 1
                if timestamp
                else b""
            ) + _string(2, event_name)
            out.append(_bytes_field(11, event + self._attributes(3, event_attributes)))
        for link_trace, link_span, _link_flags, link_attributes in links:
            link = (
                _bytes_field(1, link_trace.to_bytes(16, "big"))
                + _bytes_field(2, link_span.to_bytes(8, "big"))
                + self._attributes(4, link_attributes)
                + _fixed32(6, _HAS_IS_REMOTE | _IS_REMOTE)  # a link's context is remote
            )
            out.append(_bytes_field(13, link))
        out.append(
            _STATUSES[status_code]
            if status_description is None
            else self._status(status_code, status_description)
        )
        out.append(_REMOTE_FLAGS if parent is not None and parent[1] else _LOCAL_FLAGS)
        return b"".join(out)

    def entry(self, item: Compact) -> bytes:
        """One span as an entry of `ScopeSpans.spans`: what `wrap` puts together."""
        return _bytes_field(2, self.span(item))

    def wrap(self, entries: bytes) -> bytes:
        """An `ExportTraceServiceRequest` of these joined `entry` bytes, under the resource and
        scope."""
        return _bytes_field(1, self._resource + _bytes_field(2, self._scope + entries))

    def request(self, spans: Sequence[Compact]) -> bytes:
        """An `ExportTraceServiceRequest`: these spans under the resource and scope."""
        return self.wrap(b"".join([self.entry(s) for s in spans]))
