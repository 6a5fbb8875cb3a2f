"""Shared fixtures: a clean environment for every test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ROUTER_* or OTEL_* variable leaks into a test from the machine."""
    import os

    for name in list(os.environ):
        if name.startswith(("ROUTER_", "OTEL_")):
            monkeypatch.delenv(name)
