"""Shared fixtures: a clean environment for every test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ROUTER_*, OTEL_* or proxy variable leaks into a test from the machine (the fakes are
    on 127.0.0.1, which a machine's HTTPS_PROXY without NO_PROXY would otherwise capture)."""
    import os

    proxies = {"https_proxy", "http_proxy", "no_proxy", "all_proxy"}
    for name in list(os.environ):
        if name.startswith(("ROUTER_", "OTEL_")) or name.lower() in proxies:
            monkeypatch.delenv(name)
