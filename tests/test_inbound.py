"""The request body parser: its orjson fast path accepts and refuses exactly what the exact parser does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.errors import InvalidRequest
from router.inbound import parse_json, parse_json_exactly

KEYS = st.sampled_from(["model", "role", "content", "a", "é", "stream", "x y"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["model", "role", "hi", 'quote " inside', "back\\slash", "é"]),
    st.text(max_size=8),
)


def render(value: Any) -> str:
    """JSON text for a value whose objects are lists of pairs, so keys may repeat."""
    if isinstance(value, tuple):  # an object, as pairs
        return "{" + ",".join(f"{json.dumps(k)}:{render(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return json.dumps(value)


DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(st.tuples(KEYS, inner), max_size=4).map(tuple),
    ),
    max_leaves=12,
)
TWEAKS = st.sampled_from(["", " ", "\\u0061", "\\ud800", "NaN", "1e400", "x", "01"])


def outcome(parse: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return "value", parse(raw)
    except InvalidRequest as exc:
        return "error", exc.code


@settings(max_examples=300, deadline=None)
@given(DOCUMENTS, TWEAKS, st.integers(min_value=0, max_value=40))
def test_fast_and_exact_parsers_agree(document: Any, tweak: str, at: int) -> None:
    text = render(document)
    text = text[:at] + tweak + text[at:] if tweak else text
    raw = text.encode()
    fast, exact = outcome(parse_json, raw), outcome(parse_json_exactly, raw)
    assert fast == exact
    if fast[0] == "value":  # same numbers of the same types, too
        assert repr(fast[1]) == repr(exact[1])


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"model":"m","model":"n"}', "duplicate_key"),
        (b'{"a":{"b":1,"b":2}}', "duplicate_key"),
        (b'{"a":1,"\\u0061":2}', "duplicate_key"),  # the same key spelled two ways
        (b'{"seed":NaN}', "invalid_json"),
        (b'{"t":1e400}', "invalid_json"),
        (b'{"s":"\\ud800"}', "invalid_json"),
    ],
)
def test_what_the_fast_path_must_not_let_through(raw: bytes, code: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_json(raw)
    assert caught.value.code == code


def test_big_integers_stay_integers() -> None:
    assert parse_json(b'{"seed":123456789012345678901234}') == {"seed": 123456789012345678901234}
    assert parse_json(b'{"model":"model"}') == {"model": "model"}  # a value equal to a key
