"""Routed embeddings as OpenAI's `CreateEmbeddingResponse` JSON, with our `router` extension
object. Pure rendering."""

from __future__ import annotations

from typing import Any

from router.types import EncodingFormat, Usage
from router.vectors import pack_float32


def embeddings_body(
    model: str,
    vectors: tuple[tuple[float, ...], ...],
    usage: Usage,
    encoding: EncodingFormat,
    extensions: dict[str, Any],
) -> dict[str, Any]:
    """A `list` of `embedding` objects in input order: each vector as numbers (`float`) or as
    base64 little-endian float32 (`base64`, OpenAI's encoding); `usage` counts input tokens."""
    if encoding == "base64":
        data = [
            {"object": "embedding", "index": i, "embedding": pack_float32(vector)}
            for i, vector in enumerate(vectors)
        ]
    else:
        data = [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(vectors)
        ]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens},
        **extensions,
    }
