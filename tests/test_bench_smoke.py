"""A quick run of the benchmark so it cannot rot; speed is reported there, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_quick_run_reports_every_phase() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "ops" / "bench" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((ROOT / "ops" / "bench" / "results" / "latest.json").read_text())
    phases = " | ".join(row["phase"] for row in data["rows"])
    for fragment in (
        "1 in flight",
        "32 in flight",
        "128 in flight",
        "first token",
        "idle RSS",
        "fusion/budget",
        "dead provider",
    ):
        assert fragment in phases
    assert all(isinstance(row["sidecar"], int | float) for row in data["rows"])
    assert "| phase |" in result.stdout
