"""Shared fixtures: a clean environment for every test."""

from __future__ import annotations

from pathlib import Path

import pytest

from router import native


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which span modules this run tested: mypyc's build or the source (router/native.py).
    The summary shows even under `-q`, so CI's log says it."""
    status = native.current_status()
    terminalreporter.write_line(f"span modules: {status.reason} ({Path(native.__file__).parent})")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ROUTER_*, OTEL_* or proxy variable leaks into a test from the machine (the fakes are
    on 127.0.0.1, which a machine's HTTPS_PROXY without NO_PROXY would otherwise capture)."""
    import os

    proxies = {"https_proxy", "http_proxy", "no_proxy", "all_proxy"}
    for name in list(os.environ):
        if name.startswith(("ROUTER_", "OTEL_")) or name.lower() in proxies:
            monkeypatch.delenv(name)
