"""The request body parser refuses what an upstream might read differently, and keeps numbers exact."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.errors import InvalidRequest
from router.inbound import Limits, parse_json, read_chat, validate_chat


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


def _outcome(call: Callable[[], object]) -> object:
    """A call's value, or its error as (code, param, message)."""
    try:
        return call()
    except InvalidRequest as exc:
        return ("error", exc.code, exc.param, exc.message)


_KEYS = st.sampled_from(
    ["model", "messages", "role", "content", "stream", "API_Key", "base_url", "x", "fusion"]
)
_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(["m", "user", "hi", "{[", "\\u"])
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.lists(st.tuples(_KEYS, inner), max_size=4)
    ),
    max_leaves=40,
)


def _render(value: object) -> str:
    """JSON text for `value`, where a list of (key, value) pairs is an object that may repeat
    a key."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        return "{" + ",".join(f"{json.dumps(k)}:{_render(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_render(v) for v in value) + "]"
    return json.dumps(value)


@settings(max_examples=400, deadline=None)
@given(
    body=st.one_of(
        _VALUES.map(_render),
        st.builds(
            lambda extra, depth: (
                '{"model":"m","messages":[{"role":"user","content":"hi"}]'
                + "".join(f',"k{i}":' + "[" * depth + "1" + "]" * depth for i in range(extra))
                + "}"
            ),
            st.integers(0, 3),
            st.integers(0, 40),
        ),
        st.builds(
            lambda key, where: (
                '{"model":"m","messages":[{"role":"user","content":"hi"}],"metadata":'
                + "{" * where
                + f'"{key}":1'
                + "}" * where
                + "}"
            ),
            st.sampled_from(["api_key", "Base_URL", "proxy", "harmless"]),
            st.integers(1, 40),
        ),
    ),
    cut=st.integers(0, 3),
)
def test_read_chat_is_parse_then_validate(body: str, cut: int) -> None:
    """The one-pass reader gives exactly what parsing then validating gives: the same
    request, or the same error (code, parameter path and message), for any body: forbidden
    fields at any depth, repeated keys, deep nesting, a non-object, a truncated text."""
    raw = body.encode()[: len(body.encode()) - cut] if cut else body.encode()
    limits = Limits()
    assert _outcome(lambda: read_chat(raw, limits)) == _outcome(
        lambda: validate_chat(parse_json(raw), limits)
    )
