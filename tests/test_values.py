"""`router.values.value`: records equal and hashed by value, as frozen dataclasses are."""

from __future__ import annotations

import dataclasses

from router.types import ChatRequest, Message, Usage


def test_value_records_compare_and_hash_by_value() -> None:
    a = ChatRequest(model="m", messages=(Message("user", "hi"),))
    b = ChatRequest(model="m", messages=(Message("user", "hi"),))
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != dataclasses.replace(a, model="n")
    assert {Usage(1, 2): "x"}[Usage(1, 2)] == "x"


def test_value_records_have_slots_and_no_instance_dict() -> None:
    usage = Usage(1, 2)
    assert not hasattr(usage, "__dict__")
    assert dataclasses.fields(usage)[0].name == "input_tokens"
