"""The provider registry: one adapter instance per configured provider."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping

from router.config import ProviderConfig, RouterConfig, SimProfile, TlsConfig
from router.errors import ConfigError, Problem
from router.providers.anthropic import AnthropicProvider
from router.providers.base import MalformedEvents, Provider, Secret
from router.providers.gemini import GeminiProvider
from router.providers.openai import OpenAIProvider
from router.providers.sim import SimProvider
from router.upstream_dial import tls_context
from router.upstream_http import UpstreamClient
from router.upstream_proxy import BadProxySetting, Proxy, ProxyRules

__all__ = [
    "AnthropicProvider",
    "GeminiProvider",
    "OpenAIProvider",
    "Provider",
    "Secret",
    "SimProvider",
    "build_providers",
    "client_for",
    "client_from_environ",
    "resolve_keys",
]


def client_from_environ(environ: Mapping[str, str]) -> UpstreamClient:
    """The app's pooled upstream client, with HTTPS_PROXY / HTTP_PROXY / NO_PROXY read from
    `environ` once; a proxy variable it cannot use is a `ConfigError` naming it."""
    try:
        proxies = ProxyRules.from_environ(environ)
    except BadProxySetting as exc:
        raise ConfigError([Problem("<environment>", exc.where, exc.reason)]) from None
    return UpstreamClient(proxies=proxies)


def resolve_keys(config: RouterConfig, environ: Mapping[str, str]) -> dict[str, Secret | None]:
    """Each provider's key, read once from the environment variable its config names."""
    return {
        name: Secret(environ[p.api_key_env])
        if p.api_key_env and environ.get(p.api_key_env)
        else None
        for name, p in config.providers.items()
    }


def build_providers(
    config: RouterConfig,
    session: UpstreamClient,
    keys: Mapping[str, Secret | None],
    *,
    on_malformed_event: Callable[[str], None] | None = None,
) -> dict[str, Provider]:
    """Adapters for every provider in `config`, sharing the app's pooled upstream client (or
    a variant of it, for providers with their own TLS, proxy or connection cap)."""
    providers: dict[str, Provider] = {}
    variants: dict[tuple[object, ...], UpstreamClient] = {}
    for name, p in config.providers.items():
        key = keys.get(name)
        malformed = MalformedEvents(p.skip_malformed_events, on_malformed_event)
        client = client_for(name, p, session, variants)
        if p.protocol == "sim":
            providers[name] = SimProvider(name, p.sim or SimProfile())
        elif p.protocol == "openai":
            assert p.base_url is not None  # noqa: S101  # guaranteed by config.cross_check
            providers[name] = OpenAIProvider(name, client, p.base_url, key, malformed=malformed)
        elif p.protocol == "anthropic":
            assert p.base_url is not None  # noqa: S101
            providers[name] = AnthropicProvider(name, client, p.base_url, key, malformed=malformed)
        else:
            assert p.base_url is not None  # noqa: S101
            providers[name] = GeminiProvider(name, client, p.base_url, key, malformed=malformed)
    return providers


def client_for(
    name: str,
    p: ProviderConfig,
    base: UpstreamClient,
    variants: dict[tuple[object, ...], UpstreamClient],
) -> UpstreamClient:
    """The client provider `name` sends through: `base`, or for its own TLS, proxy or
    connection cap a variant of it, made once per distinct setting (and kept in `variants`)."""
    tls = p.tls if p.tls is not None and p.tls.is_set else None
    if tls is None and p.proxy is None and p.max_connections == base.max_connections:
        return base
    setting = (tls, p.proxy, p.max_connections)
    if setting not in variants:
        variants[setting] = base.variant(
            ssl_context=None if tls is None else _context(name, tls),
            proxies=None if p.proxy is None else _proxy_rules(p.proxy),
            max_connections=p.max_connections,
        )
    return variants[setting]


def _context(name: str, tls: TlsConfig) -> ssl.SSLContext:
    """The provider's own TLS context, built once; files that stopped loading since the
    config was checked are a `ConfigError` on its `tls` path."""
    try:
        return tls_context(tls.ca_bundle, tls.client_cert, tls.client_key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        message = f"cannot be loaded: {type(exc).__name__}"
        raise ConfigError([Problem("<config>", f"providers.{name}.tls", message)]) from None


def _proxy_rules(setting: str) -> ProxyRules:
    """A provider's own `proxy:`: "none", or a URL (validated with the config)."""
    return ProxyRules.only(None if setting == "none" else Proxy.parse(setting))
