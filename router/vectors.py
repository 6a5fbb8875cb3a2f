"""Embedding vectors on the wire: OpenAI's base64 encoding (little-endian float32), and the
checks every adapter makes of the vectors an upstream answered with. Pure."""

from __future__ import annotations

import base64
import binascii
import math
import struct
from array import array
from collections.abc import Sequence
from typing import Any

from router.errors import ProviderMalformed


def pack_float32(vector: Sequence[float]) -> str:
    """`vector` as OpenAI's `encoding_format: base64` writes it: little-endian float32 bytes,
    base64-encoded (what the `openai` SDK decodes with `np.frombuffer(..., dtype="float32")`)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def unpack_float32(text: str) -> tuple[float, ...]:
    """The floats of a base64 vector (`pack_float32`'s inverse); ValueError if it is none."""
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    if not raw or len(raw) % 4:
        raise ValueError("not a whole number of float32 values")
    values = struct.unpack(f"<{len(raw) // 4}f", raw)
    if not all(map(math.isfinite, values)):
        raise ValueError("not finite")
    return values


def float32(vector: Sequence[float]) -> tuple[float, ...]:
    """`vector` rounded to float32, the precision upstreams embed in (so that its float and
    base64 encodings carry the same values)."""
    return struct.unpack(f"<{len(vector)}f", struct.pack(f"<{len(vector)}f", *vector))


def read_vector(value: Any) -> tuple[float, ...]:
    """One vector as an upstream sent it: a JSON array of numbers, or a base64 string.
    TypeError or ValueError if it is neither."""
    if isinstance(value, str):
        return unpack_float32(value)
    if not isinstance(value, list):
        raise TypeError("not a vector")
    return tuple(array("d", value))  # (C-fast: TypeError for anything but numbers)


def checked_vectors(
    vectors: Sequence[Any], inputs: int, dimensions: int | None, provider: str
) -> tuple[tuple[float, ...], ...]:
    """The upstream's vectors, read and checked: one per input, none empty, all of one size,
    and the size asked for when the request asked for one. Else `ProviderMalformed`: an
    answer the caller cannot use is the provider's fault, and another target may serve."""
    if len(vectors) != inputs:
        raise ProviderMalformed(
            f"{provider}: answered {len(vectors)} vectors for {inputs} inputs", provider=provider
        )
    try:
        read = tuple(read_vector(v) for v in vectors)
    except (TypeError, ValueError, OverflowError):
        raise ProviderMalformed(
            f"{provider}: an embedding is not a vector of numbers", provider=provider
        ) from None
    sizes = {len(v) for v in read}
    if 0 in sizes or len(sizes) > 1:
        raise ProviderMalformed(
            f"{provider}: embeddings of different or no size", provider=provider
        )
    if dimensions is not None and sizes != {dimensions}:
        raise ProviderMalformed(
            f"{provider}: answered {sizes.pop()}-dimensional vectors, not the {dimensions} "
            "asked for",
            provider=provider,
        )
    return read
