"""Strict parsing and validation of an inbound `POST /v1/embeddings` request into an
`EmbeddingRequest`.

Pure: bytes in, a frozen `EmbeddingRequest` (or an `InvalidRequest` with a stable code and the
offending `param`) out. The JSON is read as strictly as a chat request's (`inbound.parse_json`:
no duplicate keys, NaN or lone surrogates). The fields are OpenAI's: `model`, `input` (a
string or a list of up to `MAX_INPUTS` non-empty strings; token arrays are refused: the
sidecar carries text), `dimensions`, `encoding_format` (float or base64) and `user`; any other
field is a 400 naming it, and an egress field (`base_url`, `api_key`, ...) is refused as such.
"""

from __future__ import annotations

from typing import Any

from router.errors import (
    InvalidJson,
    InvalidRequest,
    UnsupportedContent,
    UnsupportedParameter,
)
from router.inbound import FORBIDDEN_FIELDS, parse_json
from router.inbound import forbidden as refused_field
from router.types import EmbeddingRequest, EncodingFormat

MAX_INPUTS = 2048  # OpenAI's own limit on the items of `input`
MAX_DIMENSIONS = 65_536
MAX_MODEL_CHARS = 256
FIELDS = frozenset({"model", "input", "dimensions", "encoding_format", "user"})
_FORMATS: dict[str, EncodingFormat] = {"float": "float", "base64": "base64"}


def read_embeddings(raw: bytes) -> EmbeddingRequest:
    """An `EmbeddingRequest` from the request's bytes."""
    return validate_embeddings(parse_json(raw))


def validate_embeddings(data: Any) -> EmbeddingRequest:
    """An `EmbeddingRequest` from decoded JSON."""
    if not isinstance(data, dict):
        raise InvalidJson("the request body must be a JSON object")
    forbidden = sorted(k for k in data if k.lower() in FORBIDDEN_FIELDS)
    if forbidden:
        raise refused_field(forbidden[0])
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise UnsupportedParameter(
            f"unsupported parameter(s): {', '.join(unknown)}", param=unknown[0]
        )
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' must be a non-empty string", param="model")
    if len(model) > MAX_MODEL_CHARS:
        raise InvalidRequest("'model' is too long", param="model")
    dimensions = data.get("dimensions")
    if dimensions is not None and not (
        isinstance(dimensions, int)
        and not isinstance(dimensions, bool)
        and 0 < dimensions <= MAX_DIMENSIONS
    ):
        raise InvalidRequest(
            f"'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}", param="dimensions"
        )
    encoding = data.get("encoding_format")
    if encoding is not None and encoding not in _FORMATS:
        raise InvalidRequest(
            "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
        )
    user = data.get("user")
    if user is not None and (
        not isinstance(user, str) or len(user) > 256 or not user.isprintable()
    ):
        raise InvalidRequest(
            "'user' must be a printable string of at most 256 characters", param="user"
        )
    return EmbeddingRequest(
        model=model.strip(),
        inputs=_inputs(data.get("input")),
        dimensions=dimensions,
        encoding_format=_FORMATS[encoding] if encoding is not None else "float",
        user=user,
    )


def _inputs(value: Any) -> tuple[str, ...]:
    """`input`: one string, or a list of 1 to `MAX_INPUTS` strings, none of them empty."""
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("'input' must not be an empty string", param="input")
        return (value,)
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            "'input' must be a string or a non-empty list of strings", param="input"
        )
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(f"'input' holds more than {MAX_INPUTS} items", param="input")
    for i, item in enumerate(value):
        if isinstance(item, int | list) and not isinstance(item, bool):
            raise UnsupportedContent(
                "'input' as token arrays is not accepted: send the text (the sidecar routes "
                "to upstreams whose tokenizers differ)",
                param="input",
            )
        if not isinstance(item, str):
            raise InvalidRequest(f"'input[{i}]' must be a string", param=f"input[{i}]")
        if not item:
            raise InvalidRequest(f"'input[{i}]' must not be empty", param=f"input[{i}]")
    return tuple(value)
