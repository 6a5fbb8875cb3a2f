"""The sidecar end to end: the official `openai` client and raw HTTP against a live server."""

from __future__ import annotations

import asyncio
import gzip
import io
import json

import aiohttp
import openai
import pytest

from tests.fakes.script import Answer, InBandError, Status
from tests.helpers import KEYS, Sidecar, sidecar


def client(s: Sidecar) -> openai.AsyncOpenAI:
    return s.openai()


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]


async def test_openai_client_gets_a_completion() -> None:
    """A plain request comes back as a chat.completion the SDK parses, with usage and headers."""
    async with sidecar() as s:
        s.wall.script("up-model-a", Answer("Hi there.", input_tokens=12, output_tokens=3))
        raw = await client(s).chat.completions.with_raw_response.create(
            model="m-a", messages=MESSAGES
        )  # type: ignore[arg-type]
        completion = raw.parse()
        assert completion.choices[0].message.content == "Hi there."
        assert completion.model == "m-a"
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 3)
        assert raw.headers["x-router-model"] == "m-a"
        assert raw.headers["x-router-provider"] == "up-a"
        assert raw.headers["x-request-id"]
        assert len(s.wall.calls) == 1
        assert s.wall.calls[0].body["model"] == "up-model-a"


async def test_openai_client_streams_with_usage() -> None:
    """A stream arrives as chunks the SDK parses, ending with a usage chunk."""
    async with sidecar() as s:
        s.wall.script("up-model-a", Answer("one two three", input_tokens=5, output_tokens=3))
        stream = await client(s).chat.completions.create(
            model="m-a",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
        text, usage, finish = "", None, None
        roles: list[str | None] = []
        async for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
                roles.append(choice.delta.role)
            usage = chunk.usage or usage
        assert text == "one two three"
        assert finish == "stop"
        assert roles[0] == "assistant"  # in the first token's chunk, which carries text
        assert roles.count("assistant") == 1
        assert usage is not None
        assert usage.total_tokens == 8


async def test_route_fails_over_to_the_next_model() -> None:
    """A provider fault on the first target moves to the second; headers show both attempts."""
    async with sidecar() as s:
        s.wall.script("up-model-a", Status(503))
        s.wall.script("up-model-b", Answer("from b"))
        raw = await client(s).chat.completions.with_raw_response.create(
            model="both", messages=MESSAGES
        )  # type: ignore[arg-type]
        assert raw.parse().choices[0].message.content == "from b"
        assert raw.headers["x-router-model"] == "m-b"
        assert raw.headers["x-router-attempts"] == "2"
        assert raw.headers["x-router-attempted"] == "up-a,up-b"
        assert [c.model for c in s.wall.calls] == ["up-model-a", "up-model-b"]


async def test_stream_fails_over_before_the_first_byte() -> None:
    """A stream whose first target fails before sending anything is served by the next."""
    async with sidecar() as s:
        s.wall.script("up-model-a", Status(500))
        s.wall.script("up-model-b", Answer("b streams"))
        stream = await client(s).chat.completions.create(
            model="both", messages=MESSAGES, stream=True
        )  # type: ignore[arg-type]
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "b streams"


async def test_caller_fault_is_not_failed_over() -> None:
    """An upstream 400 goes back to the caller as our error; the next target is never called."""
    async with sidecar() as s:
        s.wall.script("up-model-a", Status(400, "bad parameter"))
        with pytest.raises(openai.BadRequestError) as info:
            await client(s).chat.completions.create(model="both", messages=MESSAGES)  # type: ignore[arg-type]
        assert info.value.code == "upstream_rejected"
        assert [c.model for c in s.wall.calls] == ["up-model-a"]


async def test_all_failed_is_a_502_listing_attempts() -> None:
    """When every target fails the SDK sees all_providers_failed with each attempt."""
    async with sidecar() as s:
        s.wall.script("up-model-a", Status(500))
        s.wall.script("up-model-b", Status(502))
        with pytest.raises(openai.APIStatusError) as info:
            await client(s).chat.completions.create(model="both", messages=MESSAGES)  # type: ignore[arg-type]
        assert info.value.status_code == 502
        assert info.value.code == "all_providers_failed"
        body = info.value.body
        assert isinstance(body, dict)
        # fail over at once, then one retry on the last target: 3 attempts, the cap
        assert [a["provider"] for a in body["attempts"]] == ["up-a", "up-b", "up-b"]


async def test_failure_after_first_byte_is_an_error_not_a_success() -> None:
    """A stream that breaks after text was sent ends with an in-band error the SDK raises."""
    async with sidecar() as s:
        s.wall.script("up-model-a", InBandError(after=2))
        stream = await client(s).chat.completions.create(
            model="m-a", messages=MESSAGES, stream=True
        )  # type: ignore[arg-type]
        received: list[str] = []

        async def drain() -> None:
            async for chunk in stream:
                received.extend(choice.delta.content or "" for choice in chunk.choices)

        with pytest.raises(openai.APIError):
            await drain()
        assert "".join(received).startswith("one")


async def test_unknown_model_is_a_404_with_our_code() -> None:
    """The SDK raises NotFoundError carrying `unknown_model`."""
    async with sidecar() as s:
        with pytest.raises(openai.NotFoundError) as info:
            await client(s).chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
        assert info.value.code == "unknown_model"
        assert s.wall.calls == []


async def test_models_lists_models_routes_and_panels() -> None:
    """`/v1/models` parses in the SDK and names every catalog model and route."""
    async with sidecar() as s:
        models = await client(s).models.list()
        ids = {m.id for m in models.data}
        assert {"m-a", "m-b", "both"} <= ids


LONG = "x" * (1024 * 1024 + 10)


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"not json", None, 400, "invalid_json"),
        (b"", None, 400, "invalid_json"),
        (b'{"model": "m-a"}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (
            json.dumps({"model": "m-a", "messages": [{"role": "user", "content": LONG}]}).encode(),
            None,
            413,
            "payload_too_large",
        ),
        (b"[" * 100_000 + b"]" * 100_000, None, 400, "invalid_json"),
        (
            b'{"model": "m-a", "model": "m-b", "messages": [{"role": "user", "content": "x"}]}',
            None,
            400,
            "duplicate_key",
        ),
        (
            b'{"model": "m-a", "temperature": NaN, "messages": [{"role": "user", "content": "x"}]}',
            None,
            400,
            "invalid_json",
        ),
        (
            b'{"model": "m-a", "seed": '
            + b"9" * 5000
            + b', "messages": [{"role": "user", "content": "x"}]}',
            None,
            400,
            "invalid_json",
        ),
        (
            b'{"model": "m-a", "messages": [{"role": "user", "content": "\\ud800"}]}',
            None,
            400,
            "invalid_json",
        ),
        (b'\xff\xfe{"model": 1}', None, 400, "invalid_json"),
        (
            b'{"model": ["m-a"], "messages": [{"role": "user", "content": "x"}]}',
            None,
            400,
            "invalid_request",
        ),
        (
            b'{"model": null, "messages": [{"role": "user", "content": "x"}]}',
            None,
            400,
            "invalid_request",
        ),
        (b'{"model": "m-a", "messages": []}', None, 400, "invalid_request"),
        (
            b'{"model": "m-a", "messages": [{"role": "wizard", "content": "x"}]}',
            None,
            400,
            "invalid_request",
        ),
        (
            b'{"model": "m-a", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}',
            None,
            400,
            "invalid_request",
        ),
        (
            b'{"model": "m-a", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}',
            None,
            400,
            "invalid_request",
        ),
        (
            b'{"model": "m-a", "max_tokens": 5000, "messages": [{"role": "user", "content": "x"}]}',
            None,
            400,
            "invalid_request",
        ),
        (
            b'{"model": "m-a", "api_base": "http://169.254.169.254", "messages": [{"role": "user", "content": "x"}]}',
            None,
            400,
            "forbidden_field",
        ),
        (
            b'{"model": "m-a", "metadata": {"nested": {"base_url": "http://x"}}, "messages": [{"role": "user", "content": "x"}]}',
            None,
            400,
            "forbidden_field",
        ),
        (  # function tools are carried; other kinds of tool are not
            b'{"model": "m-a", "tools": [{"type": "code_interpreter"}], "messages": [{"role": "user", "content": "x"}]}',
            None,
            400,
            "unsupported_parameter",
        ),
        (  # an empty list is no list of tools (OpenAI refuses it too)
            b'{"model": "m-a", "tools": [], "messages": [{"role": "user", "content": "x"}]}',
            None,
            400,
            "invalid_request",
        ),
        (
            b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}',
            None,
            404,
            "unknown_model",
        ),
        (
            b'{"model": "m-a", "messages": [{"role": "user", "content": "x"}]}',
            {"X-Router-Deadline-Ms": "soon"},
            400,
            "invalid_request",
        ),
    ],
)
async def test_bad_input_is_a_clear_4xx_and_nothing_goes_upstream(
    body: bytes, headers: dict[str, str] | None, status: int, code: str
) -> None:
    """Each bad request gets its status and stable code; no upstream call; the process keeps serving."""
    async with sidecar() as s, aiohttp.ClientSession() as http:
        sent_headers = {"Content-Type": "application/json", **(headers or {})}
        data = io.BytesIO(body) if len(body) > 65536 else body
        async with http.post(
            f"{s.base_url}/chat/completions", data=data, headers=sent_headers
        ) as response:
            assert response.status == status
            payload = await response.json()
        assert payload["error"]["code"] == code
        assert payload["error"]["message"]
        assert s.wall.calls == []
        async with http.get(f"{s.url}/healthz") as response:
            assert response.status == 200


async def test_chunked_body_over_the_limit_is_413() -> None:
    """A body without Content-Length is cut at the limit, not read whole."""

    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"model": "m-a", "messages": [{"role": "user", "content": "'
        for _ in range(300):
            yield b"y" * 8192
        yield b'"}]}'

    async with sidecar() as s, aiohttp.ClientSession() as http:
        async with http.post(
            f"{s.base_url}/chat/completions",
            data=chunks(),
            headers={"Content-Type": "application/json"},
        ) as response:
            assert response.status == 413
            assert (await response.json())["error"]["code"] == "payload_too_large"
        assert s.wall.calls == []


async def test_a_compressed_body_is_capped_after_decompression() -> None:
    """A small gzip body that inflates past `max_body_bytes` is 413, never read whole."""
    inflated = json.dumps(
        {"model": "m-a", "messages": [{"role": "user", "content": "y" * 300_000}]}
    ).encode()
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with (
        sidecar("server: {max_body_bytes: 65536}") as s,
        aiohttp.ClientSession(auto_decompress=False) as http,
    ):
        async with http.post(
            f"{s.base_url}/chat/completions", data=gzip.compress(inflated), headers=headers
        ) as response:
            assert response.status == 413
            assert (await response.json())["error"]["code"] == "payload_too_large"
        assert s.wall.calls == []


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_that_arrives_after_its_head_is_read_whole(chunked: bool) -> None:
    """The body comes in pieces, well after the head (Content-Length or chunked)."""
    body = json.dumps({"model": "m-a", "messages": [{"role": "user", "content": "x" * 3000}]})

    async def pieces():  # type: ignore[no-untyped-def]
        for i in range(0, len(body), 1000):
            await asyncio.sleep(0.05)
            yield body[i : i + 1000].encode()

    headers = {"Content-Type": "application/json"}
    if not chunked:
        headers["Content-Length"] = str(len(body))
    async with sidecar() as s, aiohttp.ClientSession() as http:
        s.wall.script("up-model-a", Answer("whole"))
        async with http.post(
            f"{s.base_url}/chat/completions", data=pieces(), headers=headers
        ) as response:
            assert response.status == 200
            assert (await response.json())["choices"][0]["message"]["content"] == "whole"
        sent = s.wall.calls[0].body
        assert sent["messages"][0]["content"] == "x" * 3000


@pytest.mark.parametrize(
    ("method", "path", "status", "code", "allow"),
    [
        ("GET", "/v1/chat/completions", 405, "method_not_allowed", "POST"),
        ("POST", "/v1/nothing", 404, "not_found", None),
        ("GET", "/", 404, "not_found", None),
        ("DELETE", "/v1/models", 405, "method_not_allowed", "GET, HEAD"),
        ("POST", "/healthz", 405, "method_not_allowed", "GET, HEAD"),
        ("POST", "/v1/chat%2Fcompletions", 404, "not_found", None),  # matched as sent
        ("GET", "/v1%2Fmodels", 404, "not_found", None),
    ],
)
async def test_wrong_method_or_path_is_json(
    method: str, path: str, status: int, code: str, allow: str | None
) -> None:
    """Routing errors are OpenAI-shaped JSON too, with a request id; a 405 names the methods
    the path takes."""
    async with (
        sidecar() as s,
        aiohttp.ClientSession() as http,
        http.request(method, f"{s.url}{path}") as response,
    ):
        assert response.status == status
        assert (await response.json())["error"]["code"] == code
        assert response.headers.get("Allow") == allow
        assert response.headers["X-Request-Id"]


async def test_head_is_served_where_get_is() -> None:
    """A GET route answers HEAD (load balancers probe with it)."""
    async with (
        sidecar() as s,
        aiohttp.ClientSession() as http,
        http.head(f"{s.url}/healthz") as response,
    ):
        assert response.status == 200


async def test_bearer_token_is_required_when_configured() -> None:
    """With a token configured: none, wrong or query-string tokens get 401; the right one passes."""
    extra = "server:\n  auth_token_env: SIDECAR_TOKEN\n"
    async with (
        sidecar(extra, environ={"SIDECAR_TOKEN": "t0ken-abc"}) as s,
        aiohttp.ClientSession() as http,
    ):
        body = {"model": "m-a", "messages": MESSAGES}
        url = f"{s.base_url}/chat/completions"
        for headers, query in (
            ({}, ""),
            ({"Authorization": "Bearer wrong"}, ""),
            ({}, "?token=t0ken-abc"),
        ):
            async with http.post(url + query, json=body, headers=headers) as response:
                assert response.status == 401
                assert (await response.json())["error"]["code"] == "unauthorized"
        async with http.post(
            url, json=body, headers={"Authorization": "Bearer t0ken-abc"}
        ) as response:
            assert response.status == 200
        async with http.get(f"{s.url}/healthz") as response:
            assert response.status == 200
        async with http.post(f"{s.url}/healthz") as response:  # an open path stays open
            assert response.status == 405
            assert response.headers["Allow"] == "GET, HEAD"
        async with http.delete(f"{s.base_url}/models") as response:  # a guarded one does not
            assert response.status == 401
        assert len(s.wall.calls) == 1
        ok = s.openai(api_key="t0ken-abc")
        assert (await ok.chat.completions.create(model="m-a", messages=MESSAGES)).choices  # type: ignore[arg-type]


async def test_foreign_host_header_is_refused() -> None:
    """A request naming another Host (DNS rebinding) gets 421."""
    async with sidecar() as s, aiohttp.ClientSession() as http:
        async with http.post(
            f"{s.base_url}/chat/completions",
            json={"model": "m-a", "messages": MESSAGES},
            headers={"Host": "evil.example"},
        ) as response:
            assert response.status == 421
        assert s.wall.calls == []


async def test_keys_never_reach_the_caller_or_the_logs() -> None:
    """Canary keys appear only in the upstream's auth header: not in bodies, headers or log lines."""
    from structlog.testing import capture_logs

    async with sidecar() as s, aiohttp.ClientSession() as http:
        s.wall.script("up-model-a", Status(401, "bad key " + KEYS["TEST_KEY_A"]))
        s.wall.script("up-model-b", Status(500, "oops " + KEYS["TEST_KEY_B"]))
        with capture_logs() as logs:
            async with http.post(
                f"{s.base_url}/chat/completions", json={"model": "both", "messages": MESSAGES}
            ) as response:
                text = await response.text()
                header_text = repr(dict(response.headers))
        assert response.status == 502
        for key in KEYS.values():
            assert key not in text
            assert key not in header_text
            assert key not in repr(logs)
        assert s.wall.calls[0].headers["Authorization"] == f"Bearer {KEYS['TEST_KEY_A']}"
