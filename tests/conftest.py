"""Shared fixtures: a clean environment for every test."""

from __future__ import annotations

from pathlib import Path

import pytest

from router import native


def pytest_report_header() -> str:
    """Say which span modules this run tests: mypyc's build or the source (router/native.py)."""
    status = native.current_status()
    return f"span modules: {status.reason} ({Path(native.__file__).parent})"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ROUTER_*, OTEL_* or proxy variable leaks into a test from the machine (the fakes are
    on 127.0.0.1, which a machine's HTTPS_PROXY without NO_PROXY would otherwise capture)."""
    import os

    proxies = {"https_proxy", "http_proxy", "no_proxy", "all_proxy"}
    for name in list(os.environ):
        if name.startswith(("ROUTER_", "OTEL_")) or name.lower() in proxies:
            monkeypatch.delenv(name)
