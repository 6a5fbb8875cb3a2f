"""The sidecar an eval talks to: started in this process, or a running one at `--url`; and
which of its providers are simulated (`protocol: sim`), read from its config."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from router.config import LoadedConfig, load_config
from router.demo import start_sidecar
from router.errors import ConfigError
from router.sidecar_token import token_from_env

SIM_PROTOCOL = "sim"


@dataclass(frozen=True, slots=True)
class Simulation:
    """The config's simulated providers, and each model's provider."""

    sim_providers: frozenset[str]
    model_provider: Mapping[str, str]

    @classmethod
    def from_config(cls, loaded: LoadedConfig) -> Simulation:
        config = loaded.config
        return cls(
            frozenset(n for n, p in config.providers.items() if p.protocol == SIM_PROTOCOL),
            {m: model.provider for m, model in config.models.items()},
        )

    def any_simulated(self, models: Iterable[str], provider: str | None = None) -> bool:
        """Whether `provider`, or the provider of any of `models`, is simulated."""
        if provider is not None and provider in self.sim_providers:
            return True
        return any(self.model_provider.get(m) in self.sim_providers for m in models)


@dataclass(frozen=True, slots=True)
class Connection:
    """Where to send chat calls (`base_url` ends in `/v1`), with which bearer token, what the
    sidecar is (`source`), and its simulated providers (None: its config could not be read)."""

    base_url: str
    token: str | None
    source: str
    simulation: Simulation | None


def api_base(url: str) -> str:
    """`url` (the sidecar's root, or its `/v1`) as the `/v1` base."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


@asynccontextmanager
async def in_process(loaded: LoadedConfig) -> AsyncIterator[Connection]:
    """A sidecar for `loaded` in this process on 127.0.0.1 (a free port), as the demo starts
    one; a config file's key and token variables are read from the environment."""
    environ: Mapping[str, str] = {} if loaded.embedded else os.environ
    runner, base = await start_sidecar(loaded, environ=environ)
    token_env = loaded.config.server.auth_token_env
    try:
        yield Connection(
            base,
            environ.get(token_env) if token_env else None,
            f"in-process sidecar on {loaded.source}",
            Simulation.from_config(loaded),
        )
    finally:
        await runner.cleanup()


async def remote(
    session: aiohttp.ClientSession, url: str, config_path: str | None = None
) -> Connection:
    """The running sidecar at `url`, token from `$ROUTER_TOKEN`. Its simulated providers come
    from `config_path` if given, else from what its `/readyz` says it loaded (the embedded
    default, or a config file readable from here); else they are unknown."""
    base = api_base(url)
    token = token_from_env()
    simulation: Simulation | None = None
    try:
        if config_path is not None:
            simulation = Simulation.from_config(load_config(config_path))
        else:
            async with session.get(base.removesuffix("/v1") + "/readyz") as response:
                ready = await response.json(content_type=None)
            if ready.get("embedded_default"):
                simulation = Simulation.from_config(load_config(None))
            elif isinstance(ready.get("config"), str):
                simulation = Simulation.from_config(load_config(ready["config"]))
    except (ConfigError, OSError, ValueError, AttributeError, aiohttp.ClientError):
        simulation = None
    return Connection(base, token, f"sidecar at {url}", simulation)
