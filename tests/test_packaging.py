"""The wheel: the embedded default, the shipped policies, and the span modules compiled or not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from router import native
from tests.helpers import needs_a_compiler

ROOT = Path(__file__).resolve().parent.parent


def _wheel(
    destination: Path, source: Path = ROOT, **env: str
) -> tuple[str, set[str], dict[str, Any] | None]:
    """Build the wheel: its name, its files, and its span modules' manifest (None without)."""
    environ = {k: v for k, v in os.environ.items() if k != native.DISABLE_ENV} | env
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "-q",
            "-w",
            str(destination),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=environ,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    wheel = next(destination.glob("fusion_router-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        manifest = "router/_native/manifest.json"
        built = json.loads(archive.read(manifest)) if manifest in names else None
    return wheel.name, names, built


def _carries_the_embedded_default_and_policies(names: set[str]) -> None:
    assert "router/data/default.yaml" in names
    shipped = {p.name for p in (ROOT / "policies").glob("*.yaml")}
    assert shipped
    assert {f"router/data/policies/{name}" for name in shipped} <= names
    assert any(n.endswith("entry_points.txt") for n in names)


@needs_a_compiler
def test_wheel_carries_the_embedded_default_policies_and_compiled_span_modules(
    tmp_path: Path,
) -> None:
    """A built wheel holds router/data/default.yaml, every shipped policy file, and mypyc's build
    of the span modules with a manifest matching the sources it carries."""
    name, names, manifest = _wheel(tmp_path)
    _carries_the_embedded_default_and_policies(names)

    assert manifest is not None
    assert manifest["digest"] == native.source_digest(ROOT / "router")
    compiled = {f"router/_native/{file}" for file in manifest["modules"].values()}
    assert compiled | {f"router/_native/{manifest['library']}"} <= names
    assert not name.endswith("-py3-none-any.whl")  # compiled code: a CPython, platform wheel


def test_without_a_c_compiler_the_wheel_is_plain_and_still_builds(tmp_path: Path) -> None:
    """A failed compile is a warning: the wheel carries the source only, for any platform."""
    name, names, _ = _wheel(tmp_path, CC="false")
    assert name.endswith("-py3-none-any.whl")
    assert not any(n.startswith("router/_native/") for n in names)
    assert "router/span_recorder.py" in names
    _carries_the_embedded_default_and_policies(names)


def test_with_the_switch_the_wheel_is_plain_and_a_checkouts_build_stays(tmp_path: Path) -> None:
    """FUSION_ROUTER_NO_EXTENSIONS at build time: no compile (and no mypy in the build
    environment), a plain wheel, and the checkout's own build, which the wheel never takes, is
    left as it is (only an editable install retires it)."""
    checkout = tmp_path / "checkout"
    for part in ("router", "policies"):
        shutil.copytree(ROOT / part, checkout / part, ignore=shutil.ignore_patterns("_native"))
    for file in ("pyproject.toml", "README.md", "hatch_build.py"):
        shutil.copyfile(ROOT / file, checkout / file)
    built = checkout / "router" / native.NATIVE_DIR_NAME
    built.mkdir()
    (built / native.MANIFEST_NAME).write_text("{}")
    name, names, _ = _wheel(tmp_path / "out", checkout, **{native.DISABLE_ENV: "1"})
    assert name.endswith("-py3-none-any.whl")
    assert not any(n.startswith("router/_native/") for n in names)
    assert (built / native.MANIFEST_NAME).read_text() == "{}"
