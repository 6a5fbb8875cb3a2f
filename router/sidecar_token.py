"""The bearer token a tool that calls a running sidecar sends (`fusion-router mcp`, `eval --url`)."""

from __future__ import annotations

import os

TOKEN_ENV = "ROUTER_TOKEN"  # noqa: S105 - the variable's name, not a secret


def token_from_env() -> str | None:
    """`$ROUTER_TOKEN`, or None when it is unset or empty."""
    return os.environ.get(TOKEN_ENV) or None
