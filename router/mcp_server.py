"""`fusion-router mcp`: Fusion as a tool, a stdio MCP server that forwards to a running sidecar.

A main model (Claude Code, an IDE agent, any MCP client) calls `fusion_research` when it wants
a research deep-dive: the question goes to `POST /v1/chat/completions` with
`model: "fusion/<panel>"`, and the synthesized answer comes back as text, with the `fusion`
object's essentials (seats, the judge's findings, sources, cost, degradation) as structured
content. `list_panels` reads `GET /v1/models`: the panels this sidecar's jurisdiction allows.

This process speaks MCP on stdout, so it writes nothing else there: logs go to stderr. An error
from the sidecar (or a sidecar that cannot be reached) becomes an MCP tool error naming the
sidecar's code and message; it never ends the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import aiohttp
import orjson
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from router import __version__

DEFAULT_URL = "http://127.0.0.1:8080"
PANEL_PREFIX = "fusion/"
# A fusion runs panel, judge and synthesis in turn, each under the sidecar's own deadlines:
# this bound only keeps a wedged connection from holding the tool call forever.
REQUEST_TIMEOUT_S = 600.0

INSTRUCTIONS = (
    "fusion_research asks a panel of models the same question in parallel, has a judge compare "
    "their answers (agreements, contradictions) and a synthesizer write one answer. Use it for a "
    "research deep-dive where one model's answer is not enough; list_panels names the panels."
)


class Seat(BaseModel):
    """One panel seat as it was served."""

    model: str = Field(description="the model that answered in this seat")
    status: str = Field(description="how the seat ended (ok, failed, ...)")
    substituted_for: str | None = Field(
        default=None, description="the planned model this one replaced, if any"
    )


class FusionResearch(BaseModel):
    """The structured result of `fusion_research`."""

    answer: str = Field(description="the synthesized answer")
    panel: str = Field(description="the panel that answered")
    seats: list[Seat]
    agreements: list[str] = Field(description="what the panel's answers agree on")
    contradictions: list[str] = Field(description="where the panel's answers disagree")
    sources: list[dict[str, Any]] = Field(
        description="pages the panelists' web searches found and cited (url, title, the model "
        "that found it); empty unless the panel researches"
    )
    cost_usd: float = Field(description="what the whole fusion cost, in US dollars")
    degraded: list[str] = Field(description="stages that fell short (empty when all went well)")


class Panel(BaseModel):
    """A panel this sidecar serves."""

    name: str = Field(description="pass as fusion_research's `panel`")
    model: str = Field(description="the model id on the sidecar (fusion/<name>)")
    panelists: list[str]
    denied_panelists: list[str] = Field(
        description="panelists this jurisdiction's policy denies (they are substituted)"
    )


class PanelList(BaseModel):
    """The result of `list_panels`."""

    panels: list[Panel]
    default: str | None = Field(description="the panel fusion_research uses when none is named")


@dataclass(frozen=True, slots=True)
class SidecarError(Exception):
    """The sidecar answered with an error (or could not be reached)."""

    code: str
    message: str
    status: int | None = None

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status is not None else ""
        return f"sidecar error {self.code}{where}: {self.message}"


class Sidecar:
    """The few calls this server makes to the sidecar's OpenAI-compatible API."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        data = orjson.dumps(body) if body is not None else None
        headers = {**self._headers, **({"Content-Type": "application/json"} if data else {})}
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(method, self.url + path, data=data, headers=headers) as response,
            ):
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SidecarError(
                "sidecar_unreachable", f"{method} {self.url}{path}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        if status >= 400 or not isinstance(payload, dict):
            error = payload.get("error") if isinstance(payload, dict) else None
            if isinstance(error, dict):
                code = str(error.get("code") or error.get("type") or f"http_{status}")
                raise SidecarError(code, str(error.get("message") or ""), status)
            raise SidecarError(f"http_{status}", raw[:200].decode(errors="replace"), status)
        return payload

    async def panels(self) -> list[Panel]:
        """The panels `GET /v1/models` lists, in its order."""
        listed = await self._call("GET", "/v1/models")
        panels = []
        for entry in listed.get("data") or []:
            router = entry.get("router") or {}
            model = str(entry.get("id", ""))
            if router.get("kind") != "panel" or not model.startswith(PANEL_PREFIX):
                continue
            panels.append(
                Panel(
                    name=model.removeprefix(PANEL_PREFIX),
                    model=model,
                    panelists=[str(p) for p in router.get("panelists") or []],
                    denied_panelists=[str(p) for p in router.get("denied_panelists") or []],
                )
            )
        return panels

    async def fuse(self, panel: str, question: str, context: str | None) -> dict[str, Any]:
        """One fusion request; the whole completion body."""
        content = f"Context:\n{context}\n\nQuestion:\n{question}" if context else question
        body = {
            "model": PANEL_PREFIX + panel.removeprefix(PANEL_PREFIX),
            "messages": [{"role": "user", "content": content}],
        }
        completion: dict[str, Any] = await self._call("POST", "/v1/chat/completions", body)
        return completion


def research_result(completion: Mapping[str, Any]) -> FusionResearch:
    """The tool's structured result from a fusion completion body."""
    fusion = completion.get("fusion") or {}
    choices = completion.get("choices") or [{}]
    answer = str((choices[0].get("message") or {}).get("content") or "")
    seats = []
    sources: dict[str, dict[str, Any]] = {}  # by URL: each page once, with who found it first
    for seat in fusion.get("seats") or []:
        served = seat.get("served") or seat.get("seated") or seat.get("planned")
        planned = seat.get("planned")
        seats.append(
            Seat(
                model=str(served or ""),
                status=str(seat.get("status", "")),
                substituted_for=str(planned) if planned and planned != served else None,
            )
        )
        for source in seat.get("sources") or []:
            if isinstance(source, dict) and isinstance(source.get("url"), str):
                sources.setdefault(source["url"], {**source, "model": served})
    findings = (fusion.get("judge") or {}).get("findings") or {}
    return FusionResearch(
        answer=answer,
        panel=str(fusion.get("panel") or ""),
        seats=seats,
        agreements=[str(a) for a in findings.get("agreements") or []],
        contradictions=[str(c) for c in findings.get("contradictions") or []],
        sources=list(sources.values()),
        cost_usd=float(fusion.get("cost_usd") or 0.0),
        degraded=[str(d) for d in fusion.get("degraded") or []],
    )


def _tool_error(error: SidecarError) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=str(error))], is_error=True)


def build_server(url: str = DEFAULT_URL, token: str | None = None) -> MCPServer[Any]:
    """The MCP server with its two tools, forwarding to the sidecar at `url`."""
    sidecar = Sidecar(url, token)
    server: MCPServer[Any] = MCPServer(
        "fusion-router", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )

    @server.tool(
        title="Fusion research",
        description="Ask a panel of models a question; a judge compares their answers and a "
        "synthesizer writes one. Returns the answer, the judge's agreements and "
        "contradictions, the seats, sources, the cost and any degradation.",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True),
    )
    async def fusion_research(
        question: Annotated[str, Field(description="the question to research")],
        panel: Annotated[
            str | None,
            Field(description="a panel from list_panels (default: the sidecar's first panel)"),
        ] = None,
        context: Annotated[
            str | None, Field(description="background the panel should know (optional)")
        ] = None,
    ) -> Annotated[CallToolResult, FusionResearch]:
        try:
            if not panel:
                panels = await sidecar.panels()
                if not panels:
                    raise SidecarError("no_panels", f"{sidecar.url} serves no fusion panels")
                panel = panels[0].name
            result = research_result(await sidecar.fuse(panel, question, context))
        except SidecarError as error:
            return _tool_error(error)
        return CallToolResult(
            content=[TextContent(type="text", text=result.answer)],
            structured_content=result.model_dump(mode="json"),
        )

    @server.tool(
        title="List fusion panels",
        description="The fusion panels this sidecar's jurisdiction allows, with their panelists.",
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True),
    )
    async def list_panels() -> Annotated[CallToolResult, PanelList]:
        try:
            panels = await sidecar.panels()
        except SidecarError as error:
            return _tool_error(error)
        result = PanelList(panels=panels, default=panels[0].name if panels else None)
        text = "\n".join(f"{p.name}: {', '.join(p.panelists)}" for p in panels) or "no panels"
        return CallToolResult(
            content=[TextContent(type="text", text=text)],
            structured_content=result.model_dump(mode="json"),
        )

    return server


async def serve_stdio(url: str, token: str | None = None) -> None:
    """Serve MCP on stdin/stdout until the client closes them."""
    await build_server(url, token).run_stdio_async()
