"""A request's input tokens, estimated without a provider: 4 characters a token, a flat count an image."""

from __future__ import annotations

import json

from router.providers.base import estimate_tokens
from router.types import ChatRequest

# Anthropic's cost of an image at its largest size before it is scaled down (about 1.15
# megapixels, `width * height / 750`); the sidecar does not decode images to measure them.
IMAGE_TOKENS = 1600
ESTIMATE = "estimate: 4 characters a token, 1600 tokens an image"


def estimate_input_tokens(chat: ChatRequest) -> int:
    """The input tokens of `chat`, estimated: each text on its own (`estimate_tokens`), and
    `IMAGE_TOKENS` per image."""
    texts: list[str] = []
    for message in chat.messages:
        texts.extend(message.texts)
        texts.extend(call["function"]["name"] for call in message.tool_calls)
        texts.extend(call["function"]["arguments"] for call in message.tool_calls)
        texts.extend(block.get("thinking", "") for block in message.thinking_blocks)
        texts.append(message.reasoning or "")
    texts.extend(json.dumps(tool["function"], ensure_ascii=False) for tool in chat.tools)
    if chat.json_schema is not None:
        texts.append(json.dumps(chat.json_schema["schema"], ensure_ascii=False))
    images = sum(len(message.images) for message in chat.messages)
    return sum(map(estimate_tokens, texts)) + IMAGE_TOKENS * images
