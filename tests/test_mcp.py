"""`fusion-router mcp`: the MCP SDK's own stdio client drives the server against a real sidecar."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent

from router.app import create_app
from router.config import load_config
from tests.helpers import serve


@asynccontextmanager
async def mcp_session(url: str, env: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    """`python -m router mcp --url <url>` as a subprocess, through the SDK's stdio client."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "router", "mcp", "--url", url],
        env={"PYTHONPATH": os.getcwd(), **(env or {})},
        cwd=os.getcwd(),
    )
    with open(os.devnull, "w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


def text_of(result: CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


async def test_mcp_tools_against_the_embedded_default() -> None:
    """Both tools are listed with schemas; list_panels and fusion_research answer; a sidecar
    error becomes a tool error naming the sidecar's code."""
    async with serve(create_app(load_config(None), host="127.0.0.1")) as sidecar:
        url = str(sidecar.make_url("")).rstrip("/")
        async with mcp_session(url) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert set(tools) == {"fusion_research", "list_panels"}
            research = tools["fusion_research"]
            assert research.input_schema["required"] == ["question"]
            assert {"question", "panel", "context"} <= set(research.input_schema["properties"])
            assert research.output_schema is not None
            assert {"answer", "seats", "cost_usd", "degraded", "sources"} <= set(
                research.output_schema["properties"]
            )

            listed = await session.call_tool("list_panels", {})
            assert not listed.is_error, text_of(listed)
            assert listed.structured_content is not None
            names = [p["name"] for p in listed.structured_content["panels"]]
            assert {"budget", "frontier"} <= set(names)
            assert listed.structured_content["default"] == names[0]

            result = await session.call_tool(
                "fusion_research",
                {"question": "Why is the sky blue?", "panel": "budget", "context": "for a child"},
            )
            assert not result.is_error, text_of(result)
            data: dict[str, Any] | None = result.structured_content
            assert data is not None
            assert data["answer"].strip()
            assert text_of(result) == data["answer"]
            assert data["panel"] == "budget"
            assert data["seats"]
            assert all(seat["model"] and seat["status"] for seat in data["seats"])
            assert data["cost_usd"] > 0
            assert isinstance(data["degraded"], list)
            assert isinstance(data["agreements"], list)
            assert isinstance(data["contradictions"], list)
            assert data["sources"] == []  # the budget panel does not research

            # the research panel's panelists search: their pages come back, each once, with
            # the model that found it
            found = await session.call_tool(
                "fusion_research", {"question": "Which river is longer?", "panel": "research"}
            )
            assert not found.is_error, text_of(found)
            assert found.structured_content is not None
            sources = found.structured_content["sources"]
            assert sources
            assert len({s["url"] for s in sources}) == len(sources)
            seated = {seat["model"] for seat in found.structured_content["seats"]}
            for source in sources:
                assert source["url"].startswith("https://")
                assert source["title"].startswith("SIMULATED")
                assert source["model"] in seated

            failed = await session.call_tool(
                "fusion_research", {"question": "anything", "panel": "no-such-panel"}
            )
            assert failed.is_error
            assert "unknown_model" in text_of(failed)
            assert "no-such-panel" in text_of(failed)  # the sidecar's message, too

            # the server is still up after the error
            again = await session.call_tool("list_panels", {})
            assert not again.is_error


async def test_mcp_sends_the_token_and_reports_an_unreachable_sidecar() -> None:
    """ROUTER_TOKEN goes out as a bearer token; the sidecar's 401 and a closed port are tool
    errors, never a crash."""
    seen: list[str | None] = []

    async def models(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response(
            {"error": {"message": "bad token", "type": "auth", "code": "unauthorized"}},
            status=401,
        )

    app = web.Application()
    app.router.add_get("/v1/models", models)
    async with serve(app) as fake:
        url = str(fake.make_url("")).rstrip("/")
        async with mcp_session(url, env={"ROUTER_TOKEN": "s3cret"}) as session:
            denied = await session.call_tool("fusion_research", {"question": "q"})
            assert denied.is_error
            assert "unauthorized" in text_of(denied)
            assert "HTTP 401" in text_of(denied)
        assert seen == ["Bearer s3cret"]
    async with mcp_session(url) as session:  # the fake is closed now: nothing listens there
        gone = await session.call_tool("list_panels", {})
        assert gone.is_error
        assert "sidecar_unreachable" in text_of(gone)
