"""The config file: strict schema, cross-reference checks, every problem reported at once.

Two phases, as in TensorZero: the YAML (read by `yaml12`) is validated against
pydantic models with ``extra="forbid"`` and strict types, then `cross_check`
verifies references (a model's provider exists, routes and panels name catalog
models). Problems from both phases are collected into one `ConfigError`, each
with file, line and dotted path.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from router import yaml12
from router.errors import ConfigError, Problem
from router.protocol_support import CAPABILITIES
from router.upstream_dial import tls_context
from router.upstream_http import MAX_CONNECTIONS_PER_ORIGIN
from router.upstream_proxy import Proxy

Protocol = Literal["openai", "anthropic", "gemini", "sim"]
Tier = Literal["frontier", "strong", "standard", "budget"]
StructuredOutput = Literal["native", "tool"]
Thinking = Literal["budget", "adaptive"]
ModelKind = Literal["chat", "embedding"]
# The protocols with an embeddings API (Anthropic has none)
EMBEDDING_PROTOCOLS = frozenset({"openai", "gemini", "sim"})
# Model keys that mean nothing for an embedding model (it answers no chat)
_CHAT_ONLY_KEYS = ("max_output_tokens", "structured_output", "thinking")
TIER_RANK: Mapping[str, int] = {"frontier": 3, "strong": 2, "standard": 1, "budget": 0}

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
Name = Annotated[str, Field(pattern=_NAME)]
PositiveSeconds = Annotated[float, Field(gt=0, le=3600)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TimeoutsConfig(_Strict):
    """The four clocks of an attempt, in seconds."""

    connect_s: PositiveSeconds = 5.0
    first_byte_s: PositiveSeconds = 30.0
    idle_s: PositiveSeconds = 30.0
    total_s: PositiveSeconds = 300.0


class BreakerConfig(_Strict):
    """Circuit breaker settings for one provider."""

    scope: Literal["provider", "model"] = "model"
    fail_max: Annotated[int, Field(ge=1, le=1000)] = 5
    failure_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    rate_window_s: PositiveSeconds = 30.0
    rate_min_calls: Annotated[int, Field(ge=1, le=100_000)] = 20
    reset_timeout_s: PositiveSeconds = 30.0
    max_reset_timeout_s: PositiveSeconds = 300.0
    success_threshold: Annotated[int, Field(ge=1, le=100)] = 2
    demote_rate: Annotated[float, Field(ge=0, le=1)] = 0.2
    demote_min_calls: Annotated[int, Field(ge=1, le=100_000)] = 10
    demote_for_s: PositiveSeconds = 10.0


class SimProfile(_Strict):
    """Fault profile of a built-in simulated provider."""

    latency_ms: Annotated[float, Field(ge=0, le=600_000)] = 40.0
    chunk_ms: Annotated[float, Field(ge=0, le=60_000)] = 5.0
    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    down: bool = False
    hang: bool = False
    rate_limited_retry_after_s: Annotated[float, Field(ge=0, le=86_400)] | None = None
    malformed: bool = False
    cut_stream_after: Annotated[int, Field(ge=0)] | None = None
    seed: int = 0


class TlsConfig(_Strict):
    """A provider's own TLS: the CA bundle its certificate is verified against (instead of the
    system's store) and a client certificate to present. Absolute paths, checked at load."""

    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @field_validator("ca_bundle", "client_cert", "client_key")
    @classmethod
    def _check_file(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path = Path(value)
        if not path.is_absolute():
            raise ValueError(f"must be an absolute path, not {value!r}")
        if not path.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _check_loads(self) -> TlsConfig:
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key is set without client_cert")
        try:
            tls_context(self.ca_bundle, self.client_cert, self.client_key)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ValueError(f"cannot be loaded: {_tls_reason(exc)}") from None
        return self

    @property
    def is_set(self) -> bool:
        """Whether it changes anything from the default context."""
        return any((self.ca_bundle, self.client_cert, self.client_key))


def _tls_reason(exc: Exception) -> str:
    """What went wrong loading certificates, in words (OpenSSL's reason when it has one)."""
    if isinstance(exc, ssl.SSLError):
        return f"not valid PEM, or the key does not match the certificate ({exc.reason})"
    return str(exc) if isinstance(exc, ValueError) else type(exc).__name__


class ProviderConfig(_Strict):
    """One upstream API."""

    protocol: Protocol
    base_url: str | None = None
    api_key_env: Annotated[str, Field(pattern=_ENV_NAME)] | None = None
    region: Annotated[str, Field(min_length=1, max_length=64)]
    allow_http: bool = False
    forward_trace_context: bool = False
    max_inflight: Annotated[int, Field(ge=1, le=10_000)] = 64
    skip_malformed_events: Annotated[int, Field(ge=0, le=100)] = 1
    timeouts: TimeoutsConfig = TimeoutsConfig()
    breaker: BreakerConfig = BreakerConfig()
    sim: SimProfile | None = None
    # An http:// proxy URL, "none" (connect directly), or unset: HTTPS_PROXY / HTTP_PROXY /
    # NO_PROXY from the environment. Given here, NO_PROXY does not apply to it.
    proxy: str | None = None
    tls: TlsConfig | None = None
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = MAX_CONNECTIONS_PER_ORIGIN

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http"):
            raise ValueError("must be an http(s) URL")
        if not parts.hostname:
            raise ValueError("has no host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials (user:pass@)")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query string or fragment (keys go in headers)")
        return value.rstrip("/")

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, value: str | None) -> str | None:
        if value is None or value == "none":
            return value
        Proxy.parse(value)  # its errors never repeat the URL, which may carry credentials
        return value


def _known_capability(name: str) -> str:
    """`name`, if it is in the capability vocabulary (`protocol_support.CAPABILITIES`)."""
    if name not in CAPABILITIES:
        raise ValueError(f"unknown capability {name!r} (known: {', '.join(CAPABILITIES)})")
    return name


Capability = Annotated[str, AfterValidator(_known_capability)]


class PriceConfig(_Strict):
    """USD per million tokens (the default catalog's prices are examples: edit them). A chat
    model needs both; an embedding model bills input tokens only (`cross_check`)."""

    input_per_mtok: Annotated[float, Field(ge=0, le=100_000)]
    output_per_mtok: Annotated[float, Field(ge=0, le=100_000)] | None = None
    per_web_search: Annotated[float, Field(ge=0, le=100)] = 0.0  # USD per provider web search


class ModelConfig(_Strict):
    """One catalog entry."""

    # What it serves: chat (`/v1/chat/completions`, fusion) or embeddings (`/v1/embeddings`)
    kind: ModelKind = "chat"
    provider: Name
    upstream_id: Annotated[str, Field(min_length=1, max_length=256)]
    vendor: Annotated[str, Field(min_length=1, max_length=64)]
    origin: Annotated[str, Field(min_length=2, max_length=8)]
    tier: Tier
    tags: list[Annotated[str, Field(pattern=r"^[a-z0-9_.-]{1,64}$")]] = []
    context_window: Annotated[int, Field(ge=1, le=100_000_000)]
    max_output_tokens: Annotated[int, Field(ge=1, le=10_000_000)] = 8192
    price: PriceConfig
    # What the model can do beyond text; unset: everything (routing skips only a declared lack)
    capabilities: list[Capability] | None = None
    # How an Anthropic model is asked for a json_schema answer: its native structured output,
    # or a forced tool whose input is the answer
    structured_output: StructuredOutput = "tool"
    # How an Anthropic model is asked to reason: a thinking token budget, or adaptive thinking
    # with an effort level (Claude Opus 4.7 and later take only the latter)
    thinking: Thinking = "budget"
    # An embedding model's vector size: what it answers when a request names no `dimensions`,
    # and the most it can answer (a larger request skips it); unset: not known here
    dimensions: Annotated[int, Field(ge=1, le=65_536)] | None = None

    @field_validator("capabilities")
    @classmethod
    def _check_capabilities(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            twice = sorted({c for c in value if value.count(c) > 1})
            if twice:
                raise ValueError(f"lists {', '.join(map(repr, twice))} twice")
        return value


Domain = Annotated[
    str,
    Field(
        min_length=3,
        max_length=253,
        pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
    ),
]


class PanelConfig(_Strict):
    """A fusion panel."""

    panelists: Annotated[list[Name], Field(min_length=1, max_length=5)]
    judges: list[Name] = []
    synthesizers: Annotated[list[Name], Field(min_length=1)]
    quorum: Annotated[int, Field(ge=1, le=5)] | None = None
    substitutes: list[Name] = []
    deadline_s: PositiveSeconds = 120.0
    degrade: Literal["error", "best_single"] = "error"
    hedge_after_s: PositiveSeconds | None = None
    judge_prompt: str | None = None
    synthesizer_prompt: str | None = None
    # a substitute is never the judge's or synthesizer's model unless nothing else can sit
    independent_judging: bool = True
    # a substitute's tier is at most this; None: at most the tier of the seat it replaces
    max_substitute_tier: Tier | None = None
    # USD a request may spend at most: its estimate is checked before any call, its spend as
    # the stages run (router.fusion.cost)
    max_cost_usd: Annotated[float, Field(gt=0, le=10_000)] | None = None
    # the solo model the `fusion` object prices the same question at (None: the best-ranked
    # model policy allows)
    compare_with: Name | None = None
    # the providers' own tools panelists may use: web_search (OpenAI web search, Anthropic's
    # web_search server tool, Gemini's google_search grounding)
    panelist_tools: Annotated[list[Literal["web_search"]], Field(max_length=1)] = []
    # domains a panelist's search must not use (applied where the protocol can: explain says)
    blocked_domains: Annotated[list[Domain], Field(max_length=200)] = []
    max_searches: Annotated[int, Field(ge=1, le=20)] = 5  # per panelist call


class RetryConfig(_Strict):
    """How hard one request tries, and the process-wide retry budget."""

    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    transient_base_s: Annotated[float, Field(ge=0, le=60)] = 0.2
    transient_cap_s: Annotated[float, Field(ge=0, le=600)] = 2.0
    throttle_base_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    throttle_cap_s: Annotated[float, Field(ge=0, le=600)] = 10.0
    max_retry_after_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    quota_cooldown_s: Annotated[float, Field(ge=0, le=86_400)] = 300.0
    max_cooldown_s: Annotated[float, Field(ge=0, le=86_400)] = 300.0
    budget_ratio: Annotated[float, Field(ge=0, le=10)] = 0.2
    budget_floor_per_s: Annotated[float, Field(ge=0, le=100_000)] = 10.0
    budget_window_s: Annotated[float, Field(ge=1, le=3600)] = 10.0


class TelemetryConfig(_Strict):
    """Operator opt-ins for telemetry."""

    # Prompts and completions go into spans and the request log line only when this is true AND
    # OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT is SPAN_ONLY or SPAN_AND_EVENT.
    capture_content: bool = False


class ServerConfig(_Strict):
    """The sidecar's own listener and limits."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    auth_token_env: Annotated[str, Field(pattern=_ENV_NAME)] | None = None
    max_body_bytes: Annotated[int, Field(ge=1024, le=10 * 1024 * 1024)] = 1024 * 1024
    max_inflight: Annotated[int, Field(ge=1, le=100_000)] = 256
    max_messages: Annotated[int, Field(ge=1, le=100_000)] = 2000
    shutdown_grace_s: PositiveSeconds = 20.0
    deadline_s: PositiveSeconds = 300.0
    head_timeout_s: PositiveSeconds = 10.0  # a request's head must arrive whole within this
    body_timeout_s: PositiveSeconds = 30.0  # and its body within this, before it is admitted
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 1024  # open inbound connections
    trusted_network: bool = False  # serve beyond loopback without a token (you say it is safe)


class RouterConfig(_Strict):
    """The whole file."""

    jurisdiction: Annotated[str, Field(min_length=1, max_length=16)]
    policies: str = "policies"
    server: ServerConfig = ServerConfig()
    retry: RetryConfig = RetryConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    providers: Annotated[dict[Name, ProviderConfig], Field(min_length=1)]
    models: Annotated[dict[Name, ModelConfig], Field(min_length=1)]
    routes: dict[Name, Annotated[list[Name], Field(min_length=1)]] = {}
    panels: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")], PanelConfig
    ] = {}
    # requested model names (agents hard-code them) -> a model, route or `fusion/<panel>` that
    # serves them when the name is not in the catalog, denied here, or has no target up
    model_map: dict[Annotated[str, Field(min_length=1, max_length=256)], Name] = {}

    def trace_forwarding(self) -> frozenset[str]:
        """The providers sent W3C trace context on every call (`forward_trace_context`)."""
        return frozenset(name for name, p in self.providers.items() if p.forward_trace_context)


class LoadedConfig(BaseModel):
    """A validated config and where it came from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: RouterConfig
    source: str
    base_dir: Path
    embedded: bool
    warnings: tuple[Problem, ...] = ()

    @property
    def policies_dir(self) -> Path:
        """The folder of policy files, relative to the config file's folder."""
        if self.embedded:
            return shipped_policies_dir()
        path = Path(self.config.policies)
        return path if path.is_absolute() else self.base_dir / path


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def schema_problems(
    exc: ValidationError,
    file: str,
    doc: yaml12.LoadedYaml,
    messages: Mapping[tuple[str, str], str] | None = None,
) -> list[Problem]:
    """Pydantic errors as Problems with dotted paths and lines (config and policy files alike).

    `messages` maps (error type, path suffix) to a clearer message for that case.
    """
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = _dotted(loc)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        for (kind, suffix), text in (messages or {}).items():
            if err["type"] == kind and path.endswith(suffix):
                message = text
        problems.append(Problem(file, path, message, doc.line_of(path)))
    return problems


def cross_check(data: Mapping[str, Any], file: str, doc: yaml12.LoadedYaml) -> list[Problem]:
    """Dangling references, on the raw data so they are found even beside schema errors."""
    problems: list[Problem] = []

    def add(path: str, message: str) -> None:
        problems.append(Problem(file, path, message, doc.line_of(path)))

    providers = data.get("providers") if isinstance(data.get("providers"), dict) else {}
    models = data.get("models") if isinstance(data.get("models"), dict) else {}
    assert isinstance(providers, dict)  # noqa: S101  # narrowed above, for mypy
    assert isinstance(models, dict)  # noqa: S101
    for name, provider in providers.items():
        if not isinstance(provider, dict):
            continue
        protocol = provider.get("protocol")
        if protocol == "sim":
            if provider.get("base_url") is not None:
                add(f"providers.{name}.base_url", "a sim provider takes no base_url")
        elif protocol in ("openai", "anthropic", "gemini"):
            if provider.get("sim") is not None:
                add(f"providers.{name}.sim", "only a sim provider takes a fault profile")
            url = provider.get("base_url")
            if url is None:
                add(f"providers.{name}.base_url", "required for this protocol")
            elif (
                isinstance(url, str)
                and url.startswith("http://")
                and not provider.get("allow_http")
            ):
                add(
                    f"providers.{name}.base_url",
                    "plain http needs allow_http: true (only for self-hosted models on a trusted network)",
                )
    for name, model in models.items():
        if (
            isinstance(model, dict)
            and isinstance(model.get("provider"), str)
            and model["provider"] not in providers
        ):
            add(f"models.{name}.provider", f"unknown provider {model['provider']!r}")
    kinds = {n: _kind_of(m) for n, m in models.items()}
    for name, model in models.items():
        if isinstance(model, dict):
            for path, message in _kind_problems(model, providers):
                add(f"models.{name}.{path}", message)
    routes = data.get("routes") if isinstance(data.get("routes"), dict) else {}
    assert isinstance(routes, dict)  # noqa: S101
    for alias, chain in routes.items():
        if alias in models:
            add(f"routes.{alias}", "a route alias must not shadow a catalog model")
        if isinstance(chain, list):
            for i, target in enumerate(chain):
                if isinstance(target, str) and target not in models:
                    add(f"routes.{alias}[{i}]", f"unknown model {target!r}")
            if len(set(map(str, chain))) != len(chain):
                add(f"routes.{alias}", "lists a model twice")
            chain_kinds = {kinds[t] for t in chain if isinstance(t, str) and t in kinds}
            if len(chain_kinds) > 1:
                add(f"routes.{alias}", "mixes chat and embedding models")
    panels = data.get("panels") if isinstance(data.get("panels"), dict) else {}
    assert isinstance(panels, dict)  # noqa: S101
    model_map = data.get("model_map") if isinstance(data.get("model_map"), dict) else {}
    assert isinstance(model_map, dict)  # noqa: S101
    for name, target in model_map.items():
        if not isinstance(target, str):
            continue
        panel = target.removeprefix("fusion/")
        known = target in models or target in routes or (target != panel and panel in panels)
        if not known:
            add(f"model_map.{name}", f"maps to {target!r}: no model, route or fusion/<panel>")
        elif target == name:
            add(f"model_map.{name}", "maps a name to itself")
        elif kinds.get(target, "chat") == "embedding" or any(
            kinds.get(t) == "embedding" for t in routes.get(target) or ()
        ):
            add(f"model_map.{name}", "maps to embedding models (the map serves chat requests)")
    for pname, panel in panels.items():
        if not isinstance(panel, dict):
            continue
        for key in ("panelists", "judges", "synthesizers", "substitutes"):
            members = panel.get(key)
            if not isinstance(members, list):
                continue
            for i, target in enumerate(members):
                if isinstance(target, str) and target not in models:
                    add(f"panels.{pname}.{key}[{i}]", f"unknown model {target!r}")
                elif isinstance(target, str) and kinds[target] == "embedding":
                    add(
                        f"panels.{pname}.{key}[{i}]",
                        f"{target!r} is an embedding model: a fusion panel is for chat models",
                    )
            if len(set(map(str, members))) != len(members):
                add(f"panels.{pname}.{key}", "lists a model twice")
        solo = panel.get("compare_with")
        if isinstance(solo, str) and kinds.get(solo) != "chat":
            add(f"panels.{pname}.compare_with", f"{solo!r} is not a chat model of the catalog")
        panelists = panel.get("panelists")
        quorum = panel.get("quorum")
        if isinstance(panelists, list) and isinstance(quorum, int) and quorum > len(panelists):
            add(
                f"panels.{pname}.quorum",
                f"quorum {quorum} is larger than the panel ({len(panelists)})",
            )
    return problems


def _kind_of(model: Any) -> str:
    """A raw model entry's `kind` (chat unless it says embedding)."""
    return "embedding" if isinstance(model, dict) and model.get("kind") == "embedding" else "chat"


def _kind_problems(model: Mapping[str, Any], providers: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What a raw model entry asks that its kind cannot have, as (path under the model,
    message): an embedding model on a protocol without embeddings, with chat keys or an
    output price; a chat model with `dimensions` or without an output price."""
    price = model.get("price")
    price = price if isinstance(price, dict) else None
    if _kind_of(model) == "chat":
        problems = []
        if model.get("dimensions") is not None:
            problems.append(("dimensions", "only an embedding model (kind: embedding) takes it"))
        if price is not None and "output_per_mtok" not in price:
            problems.append(("price.output_per_mtok", "required key is missing"))
        return problems
    problems = []
    named = model.get("provider")
    provider = providers.get(named) if isinstance(named, str) else None
    protocol = provider.get("protocol") if isinstance(provider, dict) else None
    if isinstance(protocol, str) and protocol not in EMBEDDING_PROTOCOLS:
        problems.append(
            ("kind", f"the {protocol} protocol has no embeddings API (provider {named!r})")
        )
    for key in _CHAT_ONLY_KEYS:
        if key in model:
            problems.append((key, "an embedding model answers no chat: remove it"))
    if model.get("capabilities"):
        problems.append(("capabilities", "an embedding model has none: remove them"))
    if price is not None and price.get("output_per_mtok") not in (None, 0):
        problems.append(("price.output_per_mtok", "an embedding model bills input tokens only"))
    return problems


def parse_config(doc: yaml12.LoadedYaml, file: str) -> RouterConfig:
    """Validate loaded YAML into a `RouterConfig`, or raise `ConfigError` with every problem."""
    if not isinstance(doc.data, dict):
        raise ConfigError([Problem(file, "", "the config must be a mapping", 1)])
    problems: list[Problem] = []
    config: RouterConfig | None = None
    try:
        config = RouterConfig.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(schema_problems(exc, file, doc))
    problems.extend(cross_check(doc.data, file, doc))
    if problems or config is None:
        problems.sort(key=lambda p: (p.line or 0, p.path))
        raise ConfigError(problems)
    return config


def key_warnings(config: RouterConfig, file: str, environ: Mapping[str, str]) -> list[Problem]:
    """Providers whose key variable is unset (an error for `serve`, a warning for `check`)."""
    return [
        Problem(
            file,
            f"providers.{name}.api_key_env",
            f"environment variable {p.api_key_env} is not set",
            severity="warning",
        )
        for name, p in config.providers.items()
        if p.api_key_env and not environ.get(p.api_key_env)
    ]


_EMBEDDED = "default.yaml"


def shipped_policies_dir() -> Path:
    """The shipped `policies/` folder: in the wheel's package data, or the checkout's top level."""
    packaged = Path(str(resources.files("router"))) / "data" / "policies"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "policies"


def load_config(path: str | os.PathLike[str] | None) -> LoadedConfig:
    """Load `path`, or the embedded default when `path` is None."""
    if path is None:
        text = resources.files("router").joinpath(f"data/{_EMBEDDED}").read_text("utf-8")
        source = f"<embedded {_EMBEDDED}>"
        try:
            doc = yaml12.loads(text)
        except yaml12.YamlLoadError as exc:  # pragma: no cover - the embedded file is tested
            raise ConfigError([Problem(source, "", exc.message, exc.line)]) from None
        return LoadedConfig(
            config=parse_config(doc, source), source=source, base_dir=Path.cwd(), embedded=True
        )
    file = Path(path)
    try:
        doc = yaml12.load_file(file)
    except yaml12.YamlLoadError as exc:
        raise ConfigError([Problem(str(file), "", exc.message, exc.line)]) from None
    config = parse_config(doc, str(file))
    return LoadedConfig(
        config=config,
        source=str(file),
        base_dir=file.resolve().parent,
        embedded=False,
        warnings=tuple(key_warnings(config, str(file), os.environ)),
    )


JURISDICTION_RE = re.compile(r"^[a-z]{2,8}(?:-[a-z0-9]{1,8})?$")
