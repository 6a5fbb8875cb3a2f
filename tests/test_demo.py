"""The README's first command: `demo` tells the seed's story and exits 0."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_the_whole_story() -> None:
    """The demo substitutes a down panelist, a policy-denied one, and shows findings and the trace."""
    result = subprocess.run(
        [sys.executable, "-m", "router", "demo"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # the down provider's seat fails mid-flight and is substituted within its tier (issue 18:
    # substitutes never climb above the seat's tier): the budget spare takes it
    assert "kimi-k2.6 failed (provider_unavailable), substituted by gpt-5.5-mini" in out
    assert "error.type=provider_unavailable" in out.split("chat kimi-k2.6", 1)[1].split("\n")[0]
    assert (
        "claude-fable-5 unavailable (policy eu" in out
    )  # denied by policy, substituted in the plan
    assert "us-export-directive-2026-06" in out
    assert "judge: " in out
    assert "ranking:" in out
    assert "HTTP 403: policy_denied" in out
    # the Anthropic-shaped request for a withdrawn model, served by its model_map entry
    assert "HTTP 200: message from gpt-5.5; mapped from claude-fable-5 (policy_denied)" in out
    assert "chat kimi-k2.6" in out  # the trace tree shows each attempt
    assert 'tool call: get_weather({"city": "Oslo"})' in out  # the simulator's agent turns
    assert 'json_schema answer: {"city": "Oslo", "celsius": ' in out
    assert "image: I see 1 image (image/png" in out
    # cost: the saving against the best solo model, and the per-token price of long answers
    assert "the same question to claude-fable-5 alone: $" in out
    assert "as answers grow long, each answer token costs the panel at most $37.50/M" in out
    # the research panel: refused over its cap with the max_tokens that fits, then sources
    assert "HTTP 400 cost_limit_exceeded" in out
    assert "https://sim.example/" in out
    assert "rubrics.example" in out
    assert "Traceback" not in out + result.stderr
