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


def test_streamed_thinking_blocks_are_numbered_so_the_sdk_keeps_each() -> None:
    """The SDK's stream helper merges list entries by `index`: two blocks stay two blocks."""
    from openai.lib.streaming.chat._completions import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    from router.types import ReasoningDelta

    chunks = TextChunks("r1", "m", 0)
    redacted = {"type": "redacted_thinking", "data": "opaque"}
    signed = {"type": "thinking", "thinking": "Plan.", "signature": "sig"}
    state = ChatCompletionStreamState()
    events = [
        chunks.reasoning(ReasoningDelta("", block=redacted), role=True),
        chunks.reasoning(ReasoningDelta("Plan.")),
        chunks.reasoning(ReasoningDelta("", block=signed)),
        chunks.finish("stop"),
    ]
    for event in events:
        state.handle_chunk(ChatCompletionChunk.model_validate_json(event[len(b"data: ") : -2]))
    message = state.get_final_completion().choices[0].message
    extra = message.model_extra or {}
    assert extra["reasoning_content"] == "Plan."
    assert extra["thinking_blocks"] == [{"index": 0, **redacted}, {"index": 1, **signed}]
