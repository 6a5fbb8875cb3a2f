"""The request body parser refuses what an upstream might read differently, and keeps numbers exact."""

from __future__ import annotations

import pytest

from router.errors import InvalidRequest
from router.inbound import parse_json


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
