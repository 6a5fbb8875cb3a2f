"""The embedded default and the shipped policies travel inside the wheel, not only the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_the_embedded_default_and_policies(tmp_path: Path) -> None:
    """A built wheel holds router/data/default.yaml and every shipped policy file."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    wheel = next(tmp_path.glob("fusion_router-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "router/data/default.yaml" in names
    shipped = {p.name for p in (ROOT / "policies").glob("*.yaml")}
    assert shipped
    assert {f"router/data/policies/{name}" for name in shipped} <= names
    assert any(n.endswith("entry_points.txt") for n in names)
