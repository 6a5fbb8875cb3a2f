"""Test helpers: configs from YAML text, sidecars on port 0 with fake upstreams."""

from __future__ import annotations

import json
import logging
import shutil
import sysconfig
from collections.abc import AsyncIterator, Iterator, Mapping, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from router import yaml12
from router.app import create_app
from router.config import LoadedConfig, parse_config
from router.tracing import add_trace_ids
from tests.fakes import openai_server
from tests.fakes.script import Wall


def config_from_yaml(text: str, base_dir: Path | None = None) -> LoadedConfig:
    """A validated config from YAML text, as if read from a file."""
    doc = yaml12.loads(text)
    return LoadedConfig(
        config=parse_config(doc, "test.yaml"),
        source="test.yaml",
        base_dir=base_dir or Path.cwd(),
        embedded=False,
    )


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestServer]:
    """Run `app` on 127.0.0.1 port 0 with handler cancellation, as `serve` does."""
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()  # TestServer sets handler_cancellation=True, as `serve` does
    try:
        yield server
    finally:
        await server.close()


@dataclass
class Sidecar:
    """A running sidecar, the fake upstream it talks to, and that upstream's call log."""

    url: str
    wall: Wall
    app: web.Application
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)

    def openai(self, api_key: str = "unused") -> openai.AsyncOpenAI:
        """An official SDK client for this sidecar (no SDK retries), closed with the sidecar."""
        c = openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key, max_retries=0)
        self.clients.append(c)
        return c

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


TEST_POLICIES = Path(__file__).resolve().parent / "data" / "policies"


def two_provider_yaml(upstream: str, extra: str = "", policies: Path = TEST_POLICIES) -> str:
    """Two OpenAI-protocol providers on one fake, three models, a route."""
    return f"""
jurisdiction: us
policies: {policies}
retry: {{transient_base_s: 0.01, transient_cap_s: 0.05, throttle_base_s: 0.02, throttle_cap_s: 0.1}}
providers:
  up-a:
    protocol: openai
    base_url: {upstream}/v1
    allow_http: true
    api_key_env: TEST_KEY_A
    region: us
    timeouts: {{connect_s: 1, first_byte_s: 1, idle_s: 1, total_s: 5}}
  up-b:
    protocol: openai
    base_url: {upstream}/v1
    allow_http: true
    api_key_env: TEST_KEY_B
    region: us
    timeouts: {{connect_s: 1, first_byte_s: 1, idle_s: 1, total_s: 5}}
models:
  m-a:
    provider: up-a
    upstream_id: up-model-a
    vendor: VendorA
    origin: us
    tier: strong
    context_window: 8000
    max_output_tokens: 1000
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
  m-b:
    provider: up-b
    upstream_id: up-model-b
    vendor: VendorB
    origin: us
    tier: strong
    context_window: 8000
    max_output_tokens: 1000
    price: {{input_per_mtok: 3.0, output_per_mtok: 4.0}}
routes:
  both: [m-a, m-b]
{extra}
"""


KEYS: Mapping[str, str] = {
    "TEST_KEY_A": "sk-CANARY-aaaaaaaaaaaa",
    "TEST_KEY_B": "sk-CANARY-bbbbbbbbbbbb",
}


@asynccontextmanager
async def sidecar(
    extra_yaml: str = "", environ: Mapping[str, str] | None = None, span_exporter: Any = None
) -> AsyncIterator[Sidecar]:
    """A sidecar in front of one fake OpenAI server hosting two providers."""
    wall = Wall()
    async with serve(openai_server.make_app(wall)) as upstream:
        loaded = config_from_yaml(
            two_provider_yaml(str(upstream.make_url("")).rstrip("/"), extra_yaml)
        )
        app = create_app(loaded, environ={**KEYS, **(environ or {})}, span_exporter=span_exporter)
        async with serve(app) as server:
            s = Sidecar(str(server.make_url("")).rstrip("/"), wall, app)
            try:
                yield s
            finally:
                for c in s.clients:
                    await c.close()


async def ask_openai(sidecar: Sidecar, body: Mapping[str, Any]) -> tuple[int, Any]:
    """`body` (a chat completions request) sent with the `openai` SDK, as an application
    would: the fields the SDK has a parameter for as parameters, the rest (`fusion`...) in
    `extra_body`. Returns (200, the completion as JSON, our objects included) or (the HTTP
    status, `{"error": ...}` as the sidecar answered)."""
    known = {"model", "messages", "max_tokens"}
    extra = {k: v for k, v in body.items() if k not in known}
    try:
        completion = await sidecar.openai().chat.completions.create(
            model=body["model"],
            messages=body["messages"],
            max_tokens=body.get("max_tokens", openai.NOT_GIVEN),
            extra_body=extra or None,
        )
    except openai.APIStatusError as error:
        return error.status_code, {"error": error.body}
    return 200, completion.model_dump()


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """A local OTLP/HTTP trace receiver: its base URL (for `OTEL_EXPORTER_OTLP_ENDPOINT`) and
    every export request it decoded, in order (`spans_of` flattens them)."""
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received.append(message)
        return web.Response(status=200)

    collector = web.Application()
    collector.router.add_post("/v1/traces", traces)
    async with serve(collector) as server:
        yield str(server.make_url("")).rstrip("/"), received


def spans_of(requests: list[ExportTraceServiceRequest]) -> list[Any]:
    """Every span of these export requests, in order."""
    return [
        span
        for message in requests
        for resource_spans in message.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


@contextmanager
def log_lines() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event while inside, with its request and trace ids, as a list of dicts
    (structlog's defaults again afterwards)."""
    lines: list[dict[str, Any]] = []

    def keep(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> str:
        lines.append(dict(event_dict))
        return json.dumps(event_dict, default=str)

    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, add_trace_ids, keep],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    try:
        yield lines
    finally:
        structlog.reset_defaults()


_CC = (sysconfig.get_config_var("CC") or "cc").split()[0]
# The span modules' mypyc build needs a C compiler (`.ci/run` installs gcc): without one, the
# tests that build it are skipped, saying so.
needs_a_compiler = pytest.mark.skipif(
    shutil.which(_CC) is None, reason=f"no C compiler ({_CC}): the span modules cannot be built"
)
