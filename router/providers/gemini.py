"""Adapter for the Google Gemini API (`generateContent` / `streamGenerateContent`).

`to_wire()` and `from_wire()` are pure translations between a `ChatRequest` and
the Gemini JSON; `GeminiProvider` only builds the per-model URL and drives
`send()`, `read_json()` and `iter_sse()` from `router.providers.base`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from router.errors import ProviderError, ProviderMalformed, ProviderRejected, StreamTruncated
from router.providers.base import (
    SKIP_ONE_MALFORMED,
    EventReader,
    HttpTarget,
    MalformedEvents,
    Secret,
    error_for_status,
    estimate_tokens,
    iter_sse,
    read_json,
    send,
)
from router.types import (
    ChatRequest,
    Completion,
    FinishReason,
    ProviderCall,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
)
from router.upstream_http import UpstreamClient

_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
}

_ROLES = {"user": "user", "assistant": "model"}


def to_wire(request: ChatRequest) -> dict[str, Any]:
    """The JSON body of a `generateContent` call (the model and streaming live in the URL)."""
    contents: list[dict[str, Any]] = []
    for message in request.dialogue:
        role = _ROLES[message.role]
        parts = [{"text": text} for text in message.texts]
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    body: dict[str, Any] = {"contents": contents}
    if request.system_text:
        body["systemInstruction"] = {"parts": [{"text": request.system_text}]}
    config = _generation_config(request)
    if config:
        body["generationConfig"] = config
    return body


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if request.seed is not None:
        config["seed"] = request.seed
    if request.json_output:
        config["responseMimeType"] = "application/json"
    for key, value in request.passthrough:  # (store, metadata: no-ops here)
        if key == "frequency_penalty":
            config["frequencyPenalty"] = value
        elif key == "presence_penalty":
            config["presencePenalty"] = value
    return config


def model_path(base_url: str, upstream_model: str, method: str) -> str:
    """`{base_url}/models/{model}:{method}`, the model id quoted as one path segment."""
    model = quote(upstream_model.removeprefix("models/"), safe="")
    return f"{base_url}/models/{model}:{method}"


def _prompt_estimate(request: ChatRequest) -> int:
    return sum(estimate_tokens(m.content) for m in request.messages)


def _count(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _usage(data: Any, fallback_in: int, fallback_out: int) -> Usage:
    """Usage from `usageMetadata`; thinking tokens are billed as output, so they count."""
    if not isinstance(data, dict):
        return Usage(fallback_in, fallback_out)
    prompt = _count(data, "promptTokenCount")
    answer, thoughts = _count(data, "candidatesTokenCount"), _count(data, "thoughtsTokenCount")
    if answer is None and thoughts is None:
        output = fallback_out
    else:
        output = (answer or 0) + (thoughts or 0)
    return Usage(fallback_in if prompt is None else prompt, output)


@dataclass(frozen=True, slots=True)
class _Chunk:
    """What one response (or one stream chunk) says, already checked for shape."""

    has_candidate: bool
    text: str
    finish: FinishReason | None
    usage: Any
    model: str
    response_id: str | None


def _in_band_error(data: Mapping[str, Any], provider: str) -> ProviderError:
    """An `{"error": {...}}` body delivered with a 2xx status, classified by its own code."""
    err = data["error"] if isinstance(data["error"], dict) else {}
    code = err.get("code")
    status = code if isinstance(code, int) and not isinstance(code, bool) and code >= 400 else 502
    return error_for_status(provider, status, {}, _error_bytes(err))


def _error_bytes(err: Mapping[str, Any]) -> bytes:
    """The in-band error as a JSON body, for `error_for_status()` to read its identifiers."""
    return json.dumps({"error": err}, ensure_ascii=False).encode("utf-8")


def _malformed(provider: str) -> ProviderMalformed:
    return ProviderMalformed(f"{provider}: response is not a Gemini response", provider=provider)


def _parse(data: Any, provider: str) -> _Chunk:
    """Read one `GenerateContentResponse`; raises for errors, refusals and off-shape bodies."""
    if not isinstance(data, dict):
        raise _malformed(provider)
    if "error" in data and "candidates" not in data:
        raise _in_band_error(data, provider)
    candidates = data.get("candidates") or []
    if not isinstance(candidates, list):
        raise _malformed(provider)
    if not candidates:
        _check_prompt_feedback(data.get("promptFeedback"), provider)
    try:
        text, finish = _candidate(candidates[0]) if candidates else ("", None)
    except (KeyError, IndexError, TypeError, AttributeError):
        raise _malformed(provider) from None
    model, response_id = data.get("modelVersion"), data.get("responseId")
    return _Chunk(
        has_candidate=bool(candidates),
        text=text,
        finish=finish,
        usage=data.get("usageMetadata"),
        model=model if isinstance(model, str) else "",
        response_id=response_id if isinstance(response_id, str) else None,
    )


def _check_prompt_feedback(feedback: Any, provider: str) -> None:
    """A prompt blocked before any candidate is a content-policy refusal of the caller's payload."""
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        raise ProviderRejected(
            f"{provider}: prompt blocked by the provider's safety filter",
            provider=provider,
            upstream_status=400,
            reason="content_policy",
        )


def _candidate(candidate: Any) -> tuple[str, FinishReason | None]:
    """The answer text (thoughts skipped) and the mapped finish reason of one candidate."""
    content = candidate.get("content") or {}
    parts = content.get("parts") or []
    if not isinstance(parts, list):
        raise TypeError
    texts: list[str] = []
    for part in parts:
        if part.get("thought") is True:
            continue
        text = part.get("text")
        if text is None:
            continue
        if not isinstance(text, str):
            raise TypeError
        texts.append(text)
    reason = candidate.get("finishReason")
    if reason is not None and not isinstance(reason, str):
        raise TypeError
    finish = _FINISH.get(reason, "stop") if reason else None
    return "".join(texts), finish


def from_wire(data: Any, request: ChatRequest, provider: str) -> Completion:
    """A `Completion` from a `generateContent` JSON body; anything off-shape is malformed."""
    chunk = _parse(data, provider)
    if not chunk.has_candidate:
        raise ProviderMalformed(f"{provider}: response has no candidates", provider=provider)
    return Completion(
        text=chunk.text,
        finish_reason=chunk.finish or "stop",
        usage=_usage(chunk.usage, _prompt_estimate(request), estimate_tokens(chunk.text)),
        response_model=chunk.model,
        response_id=chunk.response_id,
    )


class GeminiProvider:
    """Speaks `POST {base_url}/models/{model}:generateContent` with an `x-goog-api-key`."""

    protocol = "gemini"

    def __init__(
        self,
        name: str,
        session: UpstreamClient,
        base_url: str,
        api_key: Secret | None,
        *,
        malformed: MalformedEvents = SKIP_ONE_MALFORMED,
    ) -> None:
        self.name = name
        self._session = session
        self._malformed = malformed
        self._base_url = base_url.rstrip("/")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            headers["x-goog-api-key"] = api_key.reveal()
        self._headers: Mapping[str, str] = headers
        self._stream_headers: Mapping[str, str] = dict(headers, Accept="text/event-stream")
        self._targets: dict[tuple[str, bool], HttpTarget] = {}  # per model: heads rendered once

    def _target(self, model: str, stream: bool) -> HttpTarget:
        target = self._targets.get((model, stream))
        if target is None:
            if stream:
                url = model_path(self._base_url, model, "streamGenerateContent") + "?alt=sse"
                target = HttpTarget(url, self._stream_headers)
            else:
                url = model_path(self._base_url, model, "generateContent")
                target = HttpTarget(url, self._headers)
            self._targets[(model, stream)] = target
        return target

    def __repr__(self) -> str:
        return f"GeminiProvider(name={self.name!r})"

    async def complete(self, call: ProviderCall, /) -> Completion:
        target = self._target(call.upstream_model, stream=False)
        async with send(self._session, self.name, target, to_wire(call.request), call) as response:
            data = await read_json(response, self.name, call)
        return from_wire(data, call.request, self.name)

    async def stream(self, call: ProviderCall, /) -> AsyncIterator[StreamEvent]:
        target = self._target(call.upstream_model, stream=True)
        async with send(self._session, self.name, target, to_wire(call.request), call) as response:
            finish: FinishReason | None = None
            usage_data: Any = None
            model, response_id = "", None
            out_chars = 0
            reader = EventReader(self.name, self._malformed)
            async for event in iter_sse(response, self.name, call):
                data = reader.object(event)
                if data is None:
                    continue
                chunk = _parse(data, self.name)
                model = chunk.model or model
                response_id = chunk.response_id or response_id
                if chunk.usage is not None:
                    usage_data = chunk.usage
                if chunk.text:
                    out_chars += len(chunk.text)
                    yield TextDelta(chunk.text)
                if chunk.finish is not None:
                    finish = chunk.finish
            if finish is None:
                raise StreamTruncated(
                    f"{self.name}: stream ended without a finishReason", provider=self.name
                )
            out_estimate = max(1, out_chars // 4) if out_chars else 0
            yield StreamEnd(
                finish_reason=finish,
                usage=_usage(usage_data, _prompt_estimate(call.request), out_estimate),
                response_model=model,
                response_id=response_id,
            )
