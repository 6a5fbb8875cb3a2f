"""Stream chunk rendering: the per-stream encoder writes exactly what the dict renderer does."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from router.wire_out import TextChunks, sse, stream_chunk

IDS = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)


@given(IDS, st.text(min_size=1, max_size=40), st.integers(0, 2**40), st.text(), st.booleans())
def test_text_chunks_match_the_dict_renderer(
    request_id: str, model: str, created: int, text: str, role: bool
) -> None:
    encoded = TextChunks(request_id, model, created).event(text, role=role)
    assert encoded == sse(stream_chunk(request_id, model, created, text=text, role=role))
    delta = json.loads(encoded.removeprefix(b"data: "))["choices"][0]["delta"]
    assert delta == ({"role": "assistant", "content": text} if role else {"content": text})
