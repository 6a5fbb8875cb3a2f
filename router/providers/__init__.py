"""The provider registry: one adapter instance per configured provider."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from router.config import RouterConfig, SimProfile
from router.providers.anthropic import AnthropicProvider
from router.providers.base import MalformedEvents, Provider, Secret
from router.providers.gemini import GeminiProvider
from router.providers.openai import OpenAIProvider
from router.providers.sim import SimProvider
from router.upstream_http import UpstreamClient

__all__ = [
    "AnthropicProvider",
    "GeminiProvider",
    "OpenAIProvider",
    "Provider",
    "Secret",
    "SimProvider",
    "build_providers",
    "resolve_keys",
]


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
    """Adapters for every provider in `config`, sharing the app's pooled upstream client."""
    providers: dict[str, Provider] = {}
    for name, p in config.providers.items():
        key = keys.get(name)
        malformed = MalformedEvents(p.skip_malformed_events, on_malformed_event)
        if p.protocol == "sim":
            providers[name] = SimProvider(name, p.sim or SimProfile())
        elif p.protocol == "openai":
            assert p.base_url is not None  # noqa: S101  # guaranteed by config.cross_check
            providers[name] = OpenAIProvider(name, session, p.base_url, key, malformed=malformed)
        elif p.protocol == "anthropic":
            assert p.base_url is not None  # noqa: S101
            providers[name] = AnthropicProvider(name, session, p.base_url, key, malformed=malformed)
        else:
            assert p.base_url is not None  # noqa: S101
            providers[name] = GeminiProvider(name, session, p.base_url, key, malformed=malformed)
    return providers
